//! `kiln build -`: the context arrives on standard input, as with `docker
//! build -`. A tar archive (plain, or gzip-compressed as ZenML and the Docker
//! CLI may send it) is the context; anything else is a Dockerfile with an
//! empty context. The archive is unpacked into a private temporary folder
//! that the ordinary context code then reads, `.dockerignore` and all.
//!
//! The archive is untrusted: only regular files, folders and symlinks are
//! taken (a symlink is kept as a link, never followed while unpacking); an
//! absolute path, a `..` component, a hard link, a device or a FIFO is
//! refused with the entry's name.

use std::{
    fs,
    io::{self, BufReader, Read},
    path::{Component, Path, PathBuf},
};

use crate::error::{Error, Result};

/// Where the context from standard input was put.
#[derive(Debug)]
pub struct Received {
    /// The private folder (removed when this is dropped).
    pub dir: tempfile::TempDir,
    /// Whether standard input held a Dockerfile rather than an archive.
    pub dockerfile_only: bool,
}

const WHAT: &str = "the context on standard input";

/// Read `input` (standard input) into a new temporary folder.
pub fn receive(input: impl Read) -> Result<Received> {
    let dir = tempfile::Builder::new()
        .prefix("kiln-stdin-context-")
        .tempdir()
        .map_err(|e| Error::io("creating", std::env::temp_dir(), e))?;
    crate::build::interrupt::remove_on_interrupt(dir.path());
    let mut input = input;
    let mut head = Vec::with_capacity(512);
    input
        .by_ref()
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("reading", WHAT, e))?;
    let reader = BufReader::with_capacity(1 << 16, (&head[..]).chain(input));
    let dockerfile_only = if head.starts_with(&[0x1f, 0x8b]) {
        unpack(flate2::bufread::MultiGzDecoder::new(reader), dir.path())?;
        false
    } else if is_tar(&head) {
        unpack(reader, dir.path())?;
        false
    } else {
        let path = dir.path().join("Dockerfile");
        let mut file = fs::File::create(&path).map_err(|e| Error::io("writing", &path, e))?;
        let mut reader = reader;
        io::copy(&mut reader, &mut file).map_err(|e| Error::io("reading", WHAT, e))?;
        true
    };
    Ok(Received {
        dir,
        dockerfile_only,
    })
}

/// A tar header block carries "ustar" at offset 257 (POSIX and GNU), or a
/// valid checksum (old v7 archives).
fn is_tar(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    if &block[257..262] == b"ustar" {
        return true;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    stored == Some(sum)
}

fn unreadable(e: io::Error) -> Error {
    Error::BadArgument(format!("{WHAT} is not a readable tar archive: {e}"))
}

/// An entry refused or failed, named as the archive names it.
fn bad_entry(raw: &Path, why: impl std::fmt::Display) -> Error {
    Error::BadArgument(format!("{WHAT}: entry {}: {why}", raw.display()))
}

fn unpack(input: impl Read, root: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(unreadable)?;
    for entry in entries {
        let mut entry = entry.map_err(unreadable)?;
        let raw = entry
            .path()
            .map_err(|e| Error::BadArgument(format!("{WHAT}: an entry has a bad name: {e}")))?
            .into_owned();
        let Some(rel) = relative(&raw) else {
            continue; // "./": the root itself
        };
        let rel = rel.map_err(|why| bad_entry(&raw, why))?;
        let target = root.join(&rel);
        if let Some(parent) = target.parent() {
            make_dirs(root, parent).map_err(|why| bad_entry(&raw, why))?;
        }
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        match kind {
            tar::EntryType::Directory => {
                make_dirs(root, &target).map_err(|why| bad_entry(&raw, why))?;
                set_mode(&target, mode | 0o700)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(&target)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| Error::io("writing", &target, e))?;
                io::copy(&mut entry, &mut file).map_err(|e| bad_entry(&raw, e))?;
                set_mode(&target, mode | 0o600)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        Error::BadArgument(format!(
                            "{WHAT}: symlink {} has no target",
                            raw.display()
                        ))
                    })?
                    .into_owned();
                remove_existing(&target)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| Error::io("writing", &target, e))?;
            }
            other => {
                return Err(Error::BadArgument(format!(
                    "{WHAT}: entry {} is a {other:?}; a context holds only files, folders \
                     and symlinks",
                    raw.display()
                )))
            }
        }
    }
    Ok(())
}

/// The entry's path inside the context: `None` for the root itself, an
/// error for an absolute path or one that climbs out.
fn relative(raw: &Path) -> Option<std::result::Result<PathBuf, &'static str>> {
    let mut out = PathBuf::new();
    for part in raw.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Some(Err("a `..` component climbs out of the context")),
            Component::RootDir | Component::Prefix(_) => {
                return Some(Err("an absolute path"));
            }
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(Ok(out))
    }
}

/// Create `dir` and its parents below `root`, refusing to pass through a
/// symlink (an earlier entry must not redirect a later one).
fn make_dirs(root: &Path, dir: &Path) -> std::result::Result<(), String> {
    let rel = dir.strip_prefix(root).map_err(|_| "outside the context")?;
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symlink; an archive may not write through it",
                    at.strip_prefix(root).unwrap_or(&at).display()
                ))
            }
            Ok(_) => {
                fs::remove_file(&at).map_err(|e| e.to_string())?;
                fs::create_dir(&at).map_err(|e| e.to_string())?;
            }
            Err(_) => fs::create_dir(&at).map_err(|e| e.to_string())?,
        }
    }
    Ok(())
}

fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| Error::io("replacing", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| Error::io("replacing", path, e)),
        Err(_) => Ok(()),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("writing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).expect("link");
            }
            // Write the name into the header directly: `append_data` refuses
            // the hostile names these tests need.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn a_tar_is_the_context_and_text_is_a_dockerfile() {
        let t = tar_of(&[
            (
                "Dockerfile",
                tar::EntryType::Regular,
                b"FROM scratch\n",
                None,
            ),
            ("src/a.txt", tar::EntryType::Regular, b"a", None),
            ("link", tar::EntryType::Symlink, b"", Some("src/a.txt")),
        ]);
        let got = receive(&t[..]).expect("receive");
        assert!(!got.dockerfile_only);
        assert_eq!(fs::read(got.dir.path().join("src/a.txt")).expect("a"), b"a");
        assert_eq!(
            fs::read_link(got.dir.path().join("link")).expect("link"),
            Path::new("src/a.txt")
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &t).expect("gz");
        let got = receive(&gz.finish().expect("gz")[..]).expect("receive gz");
        assert_eq!(
            fs::read(got.dir.path().join("Dockerfile")).expect("df"),
            b"FROM scratch\n"
        );

        let got = receive(&b"FROM scratch\nCOPY a b\n"[..]).expect("text");
        assert!(got.dockerfile_only);
        assert_eq!(
            fs::read(got.dir.path().join("Dockerfile")).expect("df"),
            b"FROM scratch\nCOPY a b\n"
        );
    }

    #[test]
    fn hostile_entries_are_refused_by_name() {
        let outside = tempfile::tempdir().expect("tmp");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                tar_of(&[("../escape", tar::EntryType::Regular, b"x", None)]),
                "../escape",
            ),
            (
                tar_of(&[("/etc/evil", tar::EntryType::Regular, b"x", None)]),
                "/etc/evil",
            ),
            (
                tar_of(&[
                    (
                        "out",
                        tar::EntryType::Symlink,
                        b"",
                        Some(outside.path().to_str().expect("utf-8")),
                    ),
                    ("out/planted", tar::EntryType::Regular, b"x", None),
                ]),
                "out/planted",
            ),
            (tar_of(&[("dev", tar::EntryType::Char, b"", None)]), "dev"),
            (
                tar_of(&[("hard", tar::EntryType::Link, b"", Some("Dockerfile"))]),
                "hard",
            ),
        ];
        for (t, name) in cases {
            let err = receive(&t[..]).expect_err(name).to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
        assert_eq!(fs::read_dir(outside.path()).expect("dir").count(), 0);
    }
}
