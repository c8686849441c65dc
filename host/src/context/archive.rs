//! The deterministic archive: a tar stream cut into fixed-size chunks as it
//! is produced, each chunk optionally compressed on a worker thread, then
//! written and hashed in order on a writer thread (kiln-archive's
//! pipeline, which the `oci` builder's layers share). Memory stays bounded by
//! the number of chunks in flight, whatever the context size.
//!
//! Determinism: entries come sorted from the walk; every header has uid/gid
//! 0, no user or group names, mtime 0 and the file's permission bits. With
//! gzip each chunk becomes one gzip member (RFC 1952 allows concatenated
//! members; Go's, Python's and GNU gzip readers all read them), compressed
//! by libdeflate at a fixed level, so the bytes depend only on the content.

use sha1::{Digest, Sha1};
use std::{
    fs::File,
    io::{self, Read, Write},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use super::walk::{Entry, EntryKind};

/// Bytes of tar stream per chunk (and per gzip member).
pub const CHUNK: usize = 256 * 1024;

/// What a context archive is: its sha1, size and file count. For the
/// uncompressed archive a builder receives, the sha1 is the context hash
/// (a build plan shows it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContextSummary {
    /// sha1 of the bytes written, lowercase hex.
    pub sha1: String,
    /// Bytes written.
    pub bytes: u64,
    /// Non-directory entries in the archive.
    pub files: u64,
}

/// Why an archive could not be made. Each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file on disk.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file's size changed between the walk and the read.
    #[error(
        "{path} changed size while being archived (expected {expected} bytes); nothing was written"
    )]
    Changed {
        /// The file on disk.
        path: PathBuf,
        /// The size seen by the walk.
        expected: u64,
    },
    /// A file became something else between the walk and the read (a FIFO,
    /// a symbolic link, a folder, or a path leading out of the context).
    #[error("{path} {what} since the context was walked; nothing was written")]
    Swapped {
        /// The file on disk.
        path: PathBuf,
        /// What it became.
        what: String,
    },
    /// Writing the archive failed.
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
}

/// Open the regular file at `disk` (below `root`) for reading, once, and
/// check it is still what the walk saw: not a symbolic link (O_NOFOLLOW),
/// not a FIFO that would block the read (O_NONBLOCK, then its type), and
/// still below the context's root (a parent folder swapped for a link;
/// `real_root` is the root with every link resolved).
pub(super) fn open_walked(disk: &Path, real_root: &Path) -> Result<File, ArchiveError> {
    use std::os::unix::fs::OpenOptionsExt;
    let swapped = |what: &str| ArchiveError::Swapped {
        path: disk.to_path_buf(),
        what: what.to_string(),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(disk)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => swapped("became a symbolic link"),
            _ => ArchiveError::Read {
                path: disk.to_path_buf(),
                source,
            },
        })?;
    let meta = file.metadata().map_err(|source| ArchiveError::Read {
        path: disk.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(swapped("is no longer a regular file"));
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if let Ok(opened) = opened {
            if !opened.starts_with(real_root) {
                return Err(swapped("leads out of the context (a folder became a link)"));
            }
        }
    }
    Ok(file)
}

/// A source of the bytes of one entry.
pub trait Contents {
    /// The root directory entries are relative to.
    fn root(&self) -> &Path;
    /// The contents of an in-memory file.
    fn memory(&self, index: usize) -> &[u8];
}

/// Write the archive of `entries` to `sink`, hashing as it goes.
pub fn write_archive<W: Write + Send>(
    entries: impl IntoIterator<Item = Entry>,
    contents: &dyn Contents,
    gzip: bool,
    sink: W,
) -> Result<(ContextSummary, W), ArchiveError> {
    let mut hasher = Sha1::new();
    let hashed = kiln_archive::pipeline::Tee::new(sink, |d: &[u8]| hasher.update(d));
    let result = kiln_archive::pipeline::run(gzip, CHUNK, hashed, |pieces| {
        let mut tar = TarStream { pieces };
        let files = produce(entries, contents, &mut tar)?;
        tar.finish()?;
        Ok(files)
    });
    match result {
        Ok((files, hashed)) => {
            let (sink, _, bytes) = hashed.into_parts();
            Ok((
                ContextSummary {
                    sha1: hex(&hasher.finalize()),
                    bytes,
                    files,
                },
                sink,
            ))
        }
        // A write failure closes the pipeline; it is reported, not the
        // "closed" the producer saw.
        Err(kiln_archive::pipeline::Failed::Write(e)) => Err(ArchiveError::Write(e)),
        Err(kiln_archive::pipeline::Failed::Produce(e)) => Err(e),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn produce(
    entries: impl IntoIterator<Item = Entry>,
    contents: &dyn Contents,
    tar: &mut TarStream,
) -> Result<u64, ArchiveError> {
    let mut files = 0u64;
    let root = contents.root();
    let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    for entry in entries {
        let path = entry.path.as_slice();
        match &entry.kind {
            EntryKind::Dir => {
                let mut name = path.to_vec();
                name.push(b'/');
                tar.header(&name, tar::EntryType::Directory, entry.mode, 0, b"")?;
                continue;
            }
            EntryKind::File { size } => {
                let disk = root.join(std::ffi::OsStr::from_bytes(path));
                let mut file = open_walked(&disk, &real_root)?;
                tar.header(path, tar::EntryType::Regular, entry.mode, *size, b"")?;
                tar.copy_file(&mut file, *size, &disk)?;
            }
            EntryKind::Symlink { target } => {
                tar.header(path, tar::EntryType::Symlink, entry.mode, 0, target)?;
            }
            EntryKind::HardLink { target } => {
                tar.header(path, tar::EntryType::Link, entry.mode, 0, target)?;
            }
            EntryKind::Fifo => {
                tar.header(path, tar::EntryType::Fifo, entry.mode, 0, b"")?;
            }
            EntryKind::Memory { index } => {
                let data = contents.memory(*index);
                tar.header(
                    path,
                    tar::EntryType::Regular,
                    entry.mode,
                    data.len() as u64,
                    b"",
                )?;
                tar.write(data)?;
                tar.pad(data.len() as u64)?;
            }
        }
        files += 1;
    }
    Ok(files)
}

/// The tar byte stream, cut into chunks and handed to the pipeline.
struct TarStream<'p> {
    pieces: &'p mut kiln_archive::pipeline::Pieces,
}

impl TarStream<'_> {
    fn write(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        self.pieces.write_all(data).map_err(ArchiveError::Write)
    }

    fn pad(&mut self, size: u64) -> Result<(), ArchiveError> {
        self.write(kiln_archive::tar::padding(size))
    }

    /// Copy exactly `size` bytes of `file` into the stream, reading straight
    /// into the chunk buffer. A file that is shorter or longer than `size`
    /// is an error.
    fn copy_file(&mut self, file: &mut File, size: u64, path: &Path) -> Result<(), ArchiveError> {
        let mut left = size;
        let read_err = |source| ArchiveError::Read {
            path: path.to_path_buf(),
            source,
        };
        while left > 0 {
            let n = match self.pieces.read_from(file, left) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(ArchiveError::Write(e))
                }
                Err(e) => return Err(read_err(e)),
            };
            if n == 0 {
                return Err(ArchiveError::Changed {
                    path: path.to_path_buf(),
                    expected: size,
                });
            }
            left -= n as u64;
        }
        let mut probe = [0u8; 1];
        match file.read(&mut probe) {
            Ok(0) => {}
            Ok(_) => {
                return Err(ArchiveError::Changed {
                    path: path.to_path_buf(),
                    expected: size,
                })
            }
            Err(e) => return Err(read_err(e)),
        }
        self.pad(size)
    }

    /// One header, preceded by GNU long-name/long-link entries when the
    /// name or link target does not fit the 100-byte fields (kiln-archive's
    /// one header writer): root's, mtime 0, as Docker's context is.
    fn header(
        &mut self,
        name: &[u8],
        kind: tar::EntryType,
        mode: u32,
        size: u64,
        link: &[u8],
    ) -> Result<(), ArchiveError> {
        let mut blocks = Vec::with_capacity(1536);
        kiln_archive::tar::append_header(
            &kiln_archive::tar::Header {
                path: name,
                kind,
                mode,
                uid: 0,
                gid: 0,
                mtime: 0,
                size,
                link,
            },
            &mut blocks,
        );
        self.write(&blocks)
    }

    /// End of archive: two zero blocks.
    fn finish(&mut self) -> Result<(), ArchiveError> {
        self.write(&kiln_archive::tar::END)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);

    impl Contents for Dir {
        fn root(&self) -> &Path {
            &self.0
        }
        fn memory(&self, _: usize) -> &[u8] {
            b""
        }
    }

    fn file(path: &str, size: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File { size },
            mode: 0o644,
            stat: Default::default(),
        }
    }

    fn archive(dir: &Dir, entries: Vec<Entry>, gzip: bool) -> Result<ContextSummary, ArchiveError> {
        write_archive(entries, dir, gzip, io::sink()).map(|(s, _)| s)
    }

    #[test]
    fn a_file_swapped_after_the_walk_is_an_error_not_a_hang_or_a_leak() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"12345").expect("write");
        let root = tmp.path().join("ctx");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        // The walk saw regular files of 5 bytes; each was then swapped.
        let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).expect("c");
        // SAFETY: mkfifo with a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("link"))
            .expect("symlink");
        std::fs::remove_dir(root.join("sub")).expect("rmdir");
        std::os::unix::fs::symlink(outside.path(), root.join("sub")).expect("symlink");
        let dir = Dir(root.clone());
        for (name, says) in [
            ("fifo", "no longer a regular file"),
            ("link", "became a symbolic link"),
            ("sub/secret", "leads out of the context"),
        ] {
            match archive(&dir, vec![file(name, 5)], false) {
                Err(e @ ArchiveError::Swapped { .. }) => {
                    assert!(e.to_string().contains(says), "{name}: {e}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_file_that_changed_size_or_vanished_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("f"), b"12345").expect("write");
        let dir = Dir(tmp.path().to_path_buf());
        for gzip in [false, true] {
            assert!(archive(&dir, vec![file("f", 5)], gzip).is_ok());
            for claimed in [4, 6] {
                match archive(&dir, vec![file("f", claimed)], gzip) {
                    Err(ArchiveError::Changed { path, expected }) => {
                        assert!(path.ends_with("f"));
                        assert_eq!(expected, claimed);
                    }
                    other => panic!("size {claimed}: {other:?}"),
                }
            }
            match archive(&dir, vec![file("f", 5), file("gone", 1)], gzip) {
                Err(ArchiveError::Read { path, .. }) => assert!(path.ends_with("gone")),
                other => panic!("{other:?}"),
            }
        }
    }
}
