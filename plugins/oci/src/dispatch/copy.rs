//! `COPY` and `ADD`: sources from the context, an earlier stage or an
//! image (globs, `--from`), Docker's destination rules (a folder when the
//! destination ends in `/` or copies several sources; symlinked folders
//! followed), `--chown` by number or by the stage's `/etc/passwd` and
//! `/etc/group`, `--chmod`, here-documents, and `ADD`'s unpacking of local
//! tar archives.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use super::{Run, Stage};
use crate::{
    data::Data,
    dockerfile::{self, Args, Instruction},
    error::{at, BuildError},
    fs::{
        glob::{gather, matches},
        tree::{self, clean, remove_under},
    },
    image::{media, Entry, Kind, Layer},
    instructions::CopyFlags,
};

impl<'a> Run<'a, '_> {
    /// The files `--from=NAME` names (an earlier stage, an image or a
    /// named build context), or without it the build context (borrowed,
    /// not copied for every use).
    pub(super) fn source_files(
        &mut self,
        from: Option<&str>,
        current: usize,
        line: usize,
    ) -> Result<Cow<'a, BTreeMap<String, Entry>>, BuildError> {
        let context: &'a crate::context::ContextFiles = self.input.context;
        let Some(name) = from else {
            return Ok(Cow::Borrowed(&context.files));
        };
        Ok(Cow::Owned(
            match self.stage_index(name).filter(|i| *i < current) {
                Some(i) => self.stages[i].filesystem().map_err(|e| at(line, e))?,
                None if self.stage_index(name).is_some() => {
                    return Err(at(
                        line,
                        format!("--from={name}: a stage cannot use itself or a later stage"),
                    ))
                }
                None => {
                    let base = self.image(name, &self.input.platform.clone(), line)?;
                    crate::fs::overlay::filesystem(&base.layers).map_err(|e| at(line, e))?
                }
            },
        ))
    }
}

/// Follow symlinks in the directories of `path` (an absolute path without
/// the leading `/`) as the image's filesystem has them, so `COPY x /bin/`
/// over a base whose `/bin` links to `usr/bin` writes `usr/bin/x`.
/// With `last`, the final component is followed too (a folder copied into).
fn resolve_dirs(stage: &mut Stage, path: &str, last: bool) -> Result<String, String> {
    let mut done: Vec<String> = Vec::new();
    let mut rest: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    rest.reverse();
    let mut hops = 0;
    while let Some(part) = rest.pop() {
        if rest.is_empty() && !last {
            done.push(part);
            break;
        }
        let candidate = if done.is_empty() {
            part.clone()
        } else {
            format!("{}/{part}", done.join("/"))
        };
        match stage.lookup(&candidate)? {
            Some(Entry {
                kind: Kind::Symlink(target),
                ..
            }) => {
                hops += 1;
                if hops > 40 {
                    return Err(format!("too many levels of symbolic links in /{path}"));
                }
                if target.starts_with('/') {
                    done.clear();
                }
                for t in target.split('/').rev() {
                    if !t.is_empty() && t != "." {
                        rest.push(t.to_string());
                    }
                }
            }
            _ => {
                if part == ".." {
                    done.pop();
                } else {
                    done.push(part);
                }
            }
        }
    }
    Ok(clean(&done.join("/")))
}

/// How far `ADD` lets a gzip'd tar expand: at most this many times its
/// size, and never past [`UNPACK_CAP`] (the archive is unpacked in memory).
const UNPACK_RATIO: u64 = 200;
/// The most a gzip'd tar may expand to, whatever its ratio.
const UNPACK_CAP: u64 = 2 << 30;
/// Below this, any ratio is accepted (small archives of zeros are normal).
const UNPACK_FLOOR: u64 = 64 << 20;

/// The files of a tar archive `data` (plain or gzip'd), or `None` when it
/// is not one (then `ADD` copies it as it is). A gzip'd tar is decompressed
/// within bounds (a decompression bomb is refused) and must decompress
/// whole (a truncated download is an error, not a file copied as it is);
/// entries below a symbolic link of the same archive are refused, as an
/// image holding them is one Docker refuses to load.
fn unpack_archive(data: &Data, source: &str) -> Result<Option<BTreeMap<String, Entry>>, String> {
    unpack_within(data, source, UNPACK_FLOOR)
}

/// [`unpack_archive`] with `floor` as the size below which any ratio goes.
fn unpack_within(
    data: &Data,
    source: &str,
    floor: u64,
) -> Result<Option<BTreeMap<String, Entry>>, String> {
    use std::io::{Read, Write};
    fn is_tar(d: &Data) -> bool {
        let mut head = [0u8; 262];
        d.len() >= 262 && d.reader().read_exact(&mut head).is_ok() && &head[257..262] == b"ustar"
    }
    let plain = if data.starts_with(&[0x1f, 0x8b]) {
        // The first block says whether it is a tar at all; a gzip'd file
        // that is not one is copied as it is, undecompressed.
        let mut head = Vec::new();
        let opened = flate2::read::MultiGzDecoder::new(data.reader())
            .take(512)
            .read_to_end(&mut head);
        let named_tar = [".tar.gz", ".tgz", ".taz"]
            .iter()
            .any(|ext| source.to_ascii_lowercase().ends_with(ext));
        let damaged = |e| {
            format!("ADD {source}: cannot be decompressed ({e}): a damaged or truncated archive")
        };
        match opened {
            Err(e) if named_tar => return Err(damaged(e)),
            Err(_) => return Ok(None),
            Ok(_) if head.len() < 262 || &head[257..262] != b"ustar" => return Ok(None),
            Ok(_) => {}
        }
        let limit = data
            .len()
            .saturating_mul(UNPACK_RATIO)
            .clamp(floor.min(UNPACK_CAP), UNPACK_CAP);
        // Decompressed in chunks into an unnamed scratch file, counted.
        let mut out = crate::store::scratch_file()?;
        let mut gz = flate2::read::MultiGzDecoder::new(data.reader()).take(limit + 1);
        let mut buf = vec![0u8; crate::data::CHUNK];
        let mut total = 0u64;
        loop {
            let n = match gz.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(damaged(e)),
            };
            total += n as u64;
            if total > limit {
                return Err(format!(
                    "ADD {source}: decompresses to more than {limit} bytes ({} bytes compressed; \
                     at most {UNPACK_RATIO} times its size, {UNPACK_CAP} bytes in all): refused as \
                     a decompression bomb; unpack it into the context and COPY the folder",
                    data.len()
                ));
            }
            out.write_all(&buf[..n])
                .map_err(|e| format!("ADD {source}: unpacking: {e}"))?;
        }
        Data::whole(out).map_err(|e| format!("ADD {source}: unpacking: {e}"))?
    } else if data.starts_with(b"BZh")
        || data.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])
        || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
    {
        return Err(format!(
            "ADD {source}: bzip2, xz and zstd archives are not unpacked by the oci builder; \
             unpack it into the context and COPY the folder, or gzip it"
        ));
    } else {
        data.clone()
    };
    if !is_tar(&plain) {
        return Ok(None);
    }
    let layer = Layer {
        blob: plain,
        digest: String::new(),
        diff_id: String::new(),
        media_type: media::LAYER_TAR.into(),
    };
    let files = crate::fs::overlay::filesystem(std::slice::from_ref(&layer))
        .map_err(|e| format!("ADD {source}: {e}"))?;
    if let Some((path, link)) = below_a_link(&files) {
        return Err(format!(
            "ADD {source}: entry {path} lies below {link}, a symbolic link in the same archive: \
             refused (an image holding it cannot be loaded by Docker)"
        ));
    }
    Ok(Some(files))
}

/// The first entry of `files` below one of its symbolic links, with the link.
fn below_a_link(files: &BTreeMap<String, Entry>) -> Option<(String, String)> {
    files.keys().find_map(|path| {
        let mut end = 0;
        for part in path.split('/') {
            end += part.len();
            if end >= path.len() {
                break;
            }
            let prefix = &path[..end];
            end += 1;
            if let Some(Entry {
                kind: Kind::Symlink(_),
                ..
            }) = files.get(prefix)
            {
                return Some((path.clone(), prefix.to_string()));
            }
        }
        None
    })
}

/// Look a user or group up in the stage's `/etc/passwd` or `/etc/group`.
fn id_of(stage: &mut Stage, file: &str, name: &str) -> Result<Option<(u64, u64)>, String> {
    let Some(Entry {
        kind: Kind::File(data),
        ..
    }) = stage.lookup(file)?
    else {
        return Ok(None);
    };
    let data = data.bytes().map_err(|e| format!("reading /{file}: {e}"))?;
    let text = String::from_utf8_lossy(&data);
    Ok(text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name)
            .then(|| (f[2].parse().unwrap_or(0), f[3].parse().unwrap_or(0)))
    }))
}

fn chown(stage: &mut Stage, value: &str, line: usize) -> Result<(u64, u64), BuildError> {
    let (user, group) = match value.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value, None),
    };
    let e = |m: String| at(line, m);
    let (uid, primary) = match user.parse::<u64>() {
        Ok(n) => (n, n),
        Err(_) => id_of(stage, "etc/passwd", user)
            .map_err(e)?
            .ok_or_else(|| {
                at(
                    line,
                    format!("--chown={value}: no user {user:?} in the image's /etc/passwd"),
                )
            })?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => id_of(stage, "etc/group", g)
                .map_err(e)?
                .map(|(gid, _)| gid)
                .ok_or_else(|| {
                    at(
                        line,
                        format!("--chown={value}: no group {g:?} in the image's /etc/group"),
                    )
                })?,
        },
    };
    Ok((uid, gid))
}

impl Run<'_, '_> {
    pub(super) fn copy(
        &mut self,
        ins: &Instruction,
        flags: &CopyFlags,
        current: usize,
        vars: &BTreeMap<String, String>,
    ) -> Result<(), BuildError> {
        let line = ins.line;
        let escape = self.escape;
        let expand = |t: &str| dockerfile::expand(t, vars, escape).map_err(|e| at(line, e));
        let mut words: Vec<String> = match &ins.args {
            Args::Exec(list) => list.iter().map(|w| expand(w)).collect::<Result<_, _>>()?,
            Args::Shell(text) => expand(text)?
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        };
        if words.len() < 2 {
            return Err(at(
                line,
                format!(
                    "{} requires at least two arguments, but got {}",
                    ins.keyword,
                    words.len()
                ),
            ));
        }
        let dest = words.pop().unwrap_or_default();
        let owner = flags.chown.as_deref().map(expand).transpose()?;
        let chmod = flags.chmod;
        let from = flags.from.as_deref().map(expand).transpose()?;
        if ins.keyword == "ADD" {
            if let Some(w) = words
                .iter()
                .find(|w| w.contains("://") || w.starts_with("git@"))
            {
                return Err(at(line, format!("ADD {w}: the oci builder fetches nothing from the network; download it into the context and COPY it")));
            }
        }
        let source_fs = self.source_files(from.as_deref(), current, line)?;
        let stage = &mut self.stages[current];
        let (uid, gid) = match &owner {
            Some(o) => chown(stage, o, line)?,
            None => (0, 0),
        };
        let workdir = stage
            .runtime
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{}/{dest}", workdir.trim_end_matches('/'))
        };
        // The destination as the image's filesystem has it: through
        // symlinked folders (a base whose /bin links to usr/bin).
        let followed = resolve_dirs(stage, &clean(&dest_abs), true).map_err(|e| at(line, e))?;
        // `.` and `..` (alone or last) name folders, as a trailing `/` does.
        let dest_is_dir = dest.ends_with('/')
            || matches!(dest.rsplit('/').next(), Some(".") | Some(".."))
            || followed.is_empty()
            || matches!(
                stage
                    .lookup(&followed)
                    .map_err(|e| at(line, e))?
                    .map(|e| e.kind),
                Some(Kind::Dir)
            );
        let dest_clean = if dest_is_dir {
            followed
        } else {
            resolve_dirs(stage, &clean(&dest_abs), false).map_err(|e| at(line, e))?
        };
        let mut sources: Vec<String> = Vec::new();
        let mut heredocs: Vec<(String, Data)> = Vec::new();
        for source in &words {
            let heredoc_name = source.strip_prefix("<<").map(|n| {
                n.trim_start_matches('-')
                    .trim_matches(|c| c == '"' || c == '\'')
            });
            if let Some(doc) = heredoc_name.and_then(|n| ins.heredocs.iter().find(|h| h.name == n))
            {
                let body = if doc.expand {
                    dockerfile::expand(&doc.body, vars, escape).map_err(|e| at(line, e))?
                } else {
                    doc.body.clone()
                };
                heredocs.push((doc.name.clone(), Data::from(body)));
                continue;
            }
            if from.is_none() && tree::escapes(source) {
                return Err(at(
                    line,
                    format!(
                        "{} {source}: forbidden path outside the build context",
                        ins.keyword
                    ),
                ));
            }
            let found = matches(&source_fs, source);
            if found.is_empty() {
                let place = if from.is_some() {
                    "the source stage or image"
                } else {
                    "the build context (or excluded by .dockerignore)"
                };
                return Err(at(
                    line,
                    format!(
                        "{} {source}: no such file or directory in {place}",
                        ins.keyword
                    ),
                ));
            }
            sources.extend(found);
        }
        let many = sources.len() + heredocs.len() > 1;
        if many && !dest_is_dir {
            return Err(at(line, format!("When using {} with more than one source file, the destination must be a directory and end with a /", ins.keyword)));
        }
        let join = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_string()
            } else if b.is_empty() {
                a.to_string()
            } else {
                format!("{a}/{b}")
            }
        };
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for source in &sources {
            let (is_dir, items) = gather(&source_fs, source);
            // ADD unpacks a local tar archive (plain or gzip'd), found by
            // its content as Docker does, into the destination folder.
            if ins.keyword == "ADD" && !is_dir {
                if let Some((
                    _,
                    Entry {
                        kind: Kind::File(data),
                        ..
                    },
                )) = items.first()
                {
                    if let Some(unpacked) = unpack_archive(data, source).map_err(|e| at(line, e))? {
                        for (rel, mut entry) in unpacked {
                            if owner.is_some() {
                                entry.uid = uid;
                                entry.gid = gid;
                            }
                            entries.insert(join(&dest_clean, &rel), entry);
                        }
                        continue;
                    }
                }
            }
            for (rel, mut entry) in items {
                let target = if is_dir || dest_is_dir {
                    join(&dest_clean, &rel)
                } else {
                    dest_clean.clone()
                };
                entry.uid = uid;
                entry.gid = gid;
                if let Some(m) = chmod {
                    entry.mode = m;
                }
                entries.insert(target, entry);
            }
            if is_dir && !dest_clean.is_empty() {
                entries.entry(dest_clean.clone()).or_insert(Entry {
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid,
                    gid,
                });
            }
        }
        for (name, body) in heredocs {
            let target = if dest_is_dir {
                join(&dest_clean, &name)
            } else {
                dest_clean.clone()
            };
            let entry = Entry {
                kind: Kind::File(body),
                mode: chmod.unwrap_or(0o644),
                uid,
                gid,
            };
            entries.insert(target, entry);
        }
        // Directories the layer passes through keep the metadata the image has.
        let mut parents: BTreeSet<String> = BTreeSet::new();
        for path in entries.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                parents.insert(parent.to_string());
                p = parent;
            }
        }
        for parent in parents {
            if entries.contains_key(&parent) {
                continue;
            }
            if let Some(e) = stage.lookup(&parent).map_err(|e| at(line, e))? {
                if matches!(e.kind, Kind::Dir) {
                    entries.insert(parent, e);
                }
            }
        }
        let layer = self.layer(&entries, line)?;
        self.layers_made += 1;
        let stage = &mut self.stages[current];
        for (path, entry) in entries {
            if !matches!(entry.kind, Kind::Dir) {
                remove_under(&mut stage.files, &path);
            }
            stage.files.insert(path, entry);
        }
        stage.layers.push(layer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tar_of(entries: &[(&str, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data, link) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            match link {
                Some(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).expect("link");
                }
                None => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, *data).expect("append");
                }
            }
        }
        b.into_inner().expect("tar")
    }

    fn gzip(data: &[u8]) -> Data {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        Data::from(e.finish().expect("gzip"))
    }

    #[test]
    fn add_unpacks_within_bounds_and_refuses_damage_and_bombs() {
        let ok = gzip(&tar_of(&[("a.txt", b"hello", None)]));
        let files = unpack_within(&ok, "x.tar.gz", 1 << 20)
            .expect("unpacks")
            .expect("a tar");
        assert!(files.contains_key("a.txt"));

        // Truncated: an error, not a file copied as it is.
        let cut = ok.slice(0, ok.len() - 12);
        let e = unpack_within(&cut, "x.tar.gz", 1 << 20).expect_err("truncated");
        assert!(e.contains("damaged or truncated"), "{e}");

        // 4 MiB of zeros in a few KiB: over 200 times its size.
        let zeros = vec![0u8; 4 << 20];
        let bomb = gzip(&tar_of(&[("zeros", &zeros, None)]));
        let e = unpack_within(&bomb, "bomb.tar.gz", 1 << 20).expect_err("bomb");
        assert!(e.contains("decompression bomb"), "{e}");

        // A gzip'd file that is not a tar is copied as it is.
        let csv = gzip(b"a,b\n1,2\n");
        assert!(unpack_within(&csv, "data.csv.gz", 1 << 20)
            .expect("fine")
            .is_none());
    }

    #[test]
    fn add_refuses_an_entry_below_a_link_of_its_archive() {
        let hostile = tar_of(&[
            ("etc", b"", Some("/etc")),
            ("etc/passwd", b"root::0:0::/:/bin/sh\n", None),
        ]);
        let e = unpack_within(&Data::from(hostile), "x.tar", 1 << 20).expect_err("refused");
        assert!(e.contains("below etc, a symbolic link"), "{e}");
    }
}
