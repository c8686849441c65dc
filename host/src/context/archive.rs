//! The deterministic archive: a tar stream cut into fixed-size chunks as it
//! is produced, each chunk optionally compressed on a worker thread, then
//! written and hashed in order on a writer thread. Memory stays bounded by
//! the number of chunks in flight, whatever the context size.
//!
//! Determinism: entries come sorted from the walk; every header has uid/gid
//! 0, no user or group names, mtime 0 and the file's permission bits. With
//! gzip each chunk becomes one gzip member (RFC 1952 allows concatenated
//! members; Go's, Python's and GNU gzip readers all read them), compressed
//! by libdeflate at a fixed level, so the bytes depend only on the content.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, Read, Write},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    thread,
};

use crossbeam_channel::{bounded, Receiver, Sender};
use sha1::{Digest, Sha1};

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
/// still below the context's root (a parent folder swapped for a link).
fn open_walked(disk: &Path, root: &Path) -> Result<File, ArchiveError> {
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
        let real_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        if let Ok(opened) = opened {
            if !opened.starts_with(&real_root) {
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

struct Chunk {
    seq: u64,
    data: Vec<u8>,
}

/// Write the archive of `entries` to `sink`, hashing as it goes.
pub fn write_archive<W: Write + Send>(
    entries: impl IntoIterator<Item = Entry>,
    contents: &dyn Contents,
    gzip: bool,
    sink: W,
) -> Result<(ContextSummary, W), ArchiveError> {
    let workers = if gzip {
        thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        0
    };
    // Chunks in flight: at most `cap` queued per stage, plus one per worker.
    let cap = workers.max(1);
    let (raw_tx, raw_rx) = bounded::<Chunk>(cap);
    let (done_tx, done_rx) = bounded::<Chunk>(cap);
    let (pool_tx, pool_rx) = bounded::<Vec<u8>>(cap + workers);

    thread::scope(|scope| {
        let writer = {
            let pool = pool_tx.clone();
            scope.spawn(move || write_in_order(done_rx, sink, pool))
        };
        let mut compressors = Vec::new();
        for _ in 0..workers {
            let rx = raw_rx.clone();
            let tx = done_tx.clone();
            let pool = pool_tx.clone();
            compressors.push(scope.spawn(move || compress_chunks(rx, tx, pool)));
        }
        drop(raw_rx);
        let next_stage = if gzip { raw_tx } else { done_tx.clone() };
        drop(done_tx);
        let mut tar = TarStream {
            buf: Vec::with_capacity(CHUNK),
            seq: 0,
            tx: next_stage,
            pool: pool_rx,
        };
        let produced = produce(entries, contents, &mut tar);
        let finished = produced.and_then(|files| tar.finish().map(|()| files));
        // Closing the first stage lets the workers and the writer drain and stop.
        drop(tar);
        drop(pool_tx);
        for c in compressors {
            let _ = c.join();
        }
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("archive writer thread panicked")));
        match (finished, written) {
            (Ok(files), Ok((hasher, bytes, sink))) => Ok((
                ContextSummary {
                    sha1: hex(&hasher.finalize()),
                    bytes,
                    files,
                },
                sink,
            )),
            // A write failure closes the pipeline; report it, not the
            // "channel closed" the producer saw.
            (_, Err(e)) => Err(ArchiveError::Write(e)),
            (Err(e), Ok(_)) => Err(e),
        }
    })
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
                let disk = contents.root().join(std::ffi::OsStr::from_bytes(path));
                let mut file = open_walked(&disk, contents.root())?;
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

/// The tar byte stream, cut into chunks and handed to the next stage.
struct TarStream {
    buf: Vec<u8>,
    seq: u64,
    tx: Sender<Chunk>,
    pool: Receiver<Vec<u8>>,
}

fn closed() -> ArchiveError {
    ArchiveError::Write(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "archive pipeline closed",
    ))
}

impl TarStream {
    fn flush_chunk(&mut self) -> Result<(), ArchiveError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let fresh = self
            .pool
            .try_recv()
            .map(|mut v| {
                v.clear();
                v
            })
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let data = std::mem::replace(&mut self.buf, fresh);
        self.tx
            .send(Chunk {
                seq: self.seq,
                data,
            })
            .map_err(|_| closed())?;
        self.seq += 1;
        Ok(())
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), ArchiveError> {
        while !data.is_empty() {
            let room = CHUNK - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == CHUNK {
                self.flush_chunk()?;
            }
        }
        Ok(())
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
            let start = self.buf.len();
            let want = ((CHUNK - start) as u64).min(left) as usize;
            self.buf.resize(start + want, 0);
            let n = loop {
                match file.read(&mut self.buf[start..start + want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_err(e)),
                }
            };
            self.buf.truncate(start + n);
            if n == 0 {
                return Err(ArchiveError::Changed {
                    path: path.to_path_buf(),
                    expected: size,
                });
            }
            left -= n as u64;
            if self.buf.len() == CHUNK {
                self.flush_chunk()?;
            }
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

    /// End of archive: two zero blocks, then the last chunk.
    fn finish(&mut self) -> Result<(), ArchiveError> {
        self.write(&kiln_archive::tar::END)?;
        self.flush_chunk()
    }
}

fn compress_chunks(rx: Receiver<Chunk>, tx: Sender<Chunk>, pool: Sender<Vec<u8>>) {
    // kiln's one gzip rule (kiln-archive): each chunk one member, stored
    // when it looks incompressible, else deflated at level 6.
    let mut compressor = kiln_archive::gzip::PieceCompressor::default();
    for chunk in rx {
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 16);
        if compressor.compress(&chunk.data, &mut out).is_err() {
            // Cannot happen with buffers of the bound's size; stop the pipeline.
            return;
        }
        let _ = pool.try_send(chunk.data);
        if tx
            .send(Chunk {
                seq: chunk.seq,
                data: out,
            })
            .is_err()
        {
            return;
        }
    }
}

type Written<W> = (Sha1, u64, W);

fn write_in_order<W: Write>(
    rx: Receiver<Chunk>,
    mut sink: W,
    pool: Sender<Vec<u8>>,
) -> io::Result<Written<W>> {
    let mut hasher = Sha1::new();
    let mut bytes = 0u64;
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for chunk in rx {
        waiting.insert(chunk.seq, chunk.data);
        while let Some(data) = waiting.remove(&next) {
            hasher.update(&data);
            sink.write_all(&data)?;
            bytes += data.len() as u64;
            next += 1;
            if data.capacity() >= CHUNK {
                let _ = pool.try_send(data);
            }
            // Buffers the pool has no room for are freed here.
        }
    }
    sink.flush()?;
    Ok((hasher, bytes, sink))
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
            stat: [0; 4],
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
