//! The walk over the context root that decides what is sent, the way the
//! Docker CLI's `TarWithOptions` walks: results of a directory are handed to
//! its entries, an excluded directory is skipped unless an exception may
//! rescue something inside it, symlinks are never followed.
//!
//! The walk is a depth-first visit with each directory's entries sorted by
//! name (a directory's name compared as `name/`), which yields the files in
//! plain byte order of their full paths. Entries are handed out one at a
//! time, so memory is bounded by the depth of the tree, not its size.

use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    fs::{self, FileType},
    os::unix::{
        ffi::{OsStrExt, OsStringExt},
        fs::{FileTypeExt, MetadataExt},
    },
    path::{Path, PathBuf},
};

use super::dockerignore::{MatchInfo, Matcher};

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (sent as an entry of its own, as Docker does).
    Dir,
    /// A regular file of this size.
    File {
        /// Size in bytes at the time of the walk.
        size: u64,
    },
    /// A symbolic link, stored as a link and never followed.
    Symlink {
        /// The link's target, as stored on disk.
        target: Vec<u8>,
    },
    /// A named pipe: sent as a FIFO entry, never opened.
    Fifo,
    /// A further name for a file sent earlier in the archive.
    HardLink {
        /// The path of the first name, which carries the data.
        target: Vec<u8>,
    },
    /// A file supplied from memory by the host or a builder plugin.
    Memory {
        /// Index into the context's extra files.
        index: usize,
    },
}

/// One entry of the context, relative to the root, `/`-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The relative path (no leading `./`, no trailing `/`).
    pub path: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// For an entry on disk, its identity ([`super::Context::fingerprint`]);
    /// zero for a file from memory.
    pub stat: kiln_archive::identity::Identity,
}

impl Entry {
    /// The path as text (lossy for names that are not UTF-8).
    pub fn path_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }

    /// Whether the entry is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

/// Why the walk stopped.
#[derive(Debug)]
pub enum WalkError<E> {
    /// A directory or file could not be read.
    Io {
        /// The path on disk.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file from memory would replace a directory.
    Conflict(Vec<u8>),
    /// The consumer of the entries stopped it.
    Stopped(E),
}

/// A file from memory, placed in the tree (path split at its last `/`).
#[derive(Debug, Clone)]
pub struct Extra {
    /// The parent directory (`""` at the root).
    pub dir: Vec<u8>,
    /// The file name.
    pub name: Vec<u8>,
    /// Index of the file in the context's extras.
    pub index: usize,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
}

/// Everything the walk needs.
pub struct Walk<'a> {
    /// The context root.
    pub root: &'a Path,
    /// The ignore rules.
    pub matcher: &'a Matcher,
    /// Files from memory, not subject to the rules.
    pub extras: &'a [Extra],
}

/// What the walk saw besides the entries.
#[derive(Debug, Default, Clone)]
pub struct WalkReport {
    /// One line per skipped socket or device.
    pub warnings: Vec<String>,
    /// Non-directory entries sent.
    pub files: u64,
    /// Bytes of file content sent (regular files and files from memory).
    pub content_bytes: u64,
}

enum Source {
    Disk(FileType),
    /// A file from memory (index into `Walk::extras`).
    Extra(usize),
    /// A directory that exists only because files from memory are below it.
    Virtual,
}

struct Item {
    name: Vec<u8>,
    /// The directory entry, for a cheap `fstatat` relative to the open directory.
    dirent: Option<fs::DirEntry>,
    source: Source,
    /// Also on disk (an extra replacing a disk entry, or a virtual directory
    /// that is a real one).
    on_disk: Option<FileType>,
}

impl Item {
    fn sort_key(&self) -> (&[u8], bool) {
        let dir = match &self.source {
            Source::Disk(t) => t.is_dir(),
            Source::Extra(_) => false,
            Source::Virtual => true,
        };
        (&self.name, dir)
    }
}

/// Compare names with a directory's name read as `name/`.
fn key_cmp(a: (&[u8], bool), b: (&[u8], bool)) -> std::cmp::Ordering {
    let slash: &[u8] = b"/";
    let a_tail = if a.1 { slash } else { &[] };
    let b_tail = if b.1 { slash } else { &[] };
    a.0.iter().chain(a_tail).cmp(b.0.iter().chain(b_tail))
}

impl Walk<'_> {
    /// Visit every entry that is sent, in archive order.
    pub fn run<E>(
        &self,
        emit: &mut dyn FnMut(Entry) -> Result<(), E>,
    ) -> Result<WalkReport, WalkError<E>> {
        let mut state = State {
            report: WalkReport::default(),
            first_name: HashMap::new(),
            emit,
        };
        self.visit(&mut state, Vec::new(), true, &MatchInfo::default())?;
        Ok(state.report)
    }

    fn listing<E>(&self, rel: &[u8], disk: bool) -> Result<Vec<Item>, WalkError<E>> {
        let mut items = Vec::new();
        if disk {
            let abs = self.root.join(OsStr::from_bytes(rel));
            let io = |path: PathBuf| move |source| WalkError::Io { path, source };
            for item in fs::read_dir(&abs).map_err(io(abs.clone()))? {
                let item = item.map_err(io(abs.clone()))?;
                let file_type = item.file_type().map_err(io(item.path()))?;
                items.push(Item {
                    name: OsString::into_vec(item.file_name()),
                    source: Source::Disk(file_type),
                    on_disk: Some(file_type),
                    dirent: Some(item),
                });
            }
        }
        // Files from memory in this directory, and the first component of
        // those deeper down.
        for extra in self.extras {
            let name: Option<(&[u8], bool)> = if extra.dir == rel {
                Some((&extra.name, false))
            } else if rel.is_empty() {
                let first = extra.dir.split(|&b| b == b'/').next().unwrap_or_default();
                Some((first, true))
            } else if extra.dir.starts_with(rel) && extra.dir.get(rel.len()) == Some(&b'/') {
                let rest = &extra.dir[rel.len() + 1..];
                Some((rest.split(|&b| b == b'/').next().unwrap_or_default(), true))
            } else {
                None
            };
            let Some((name, is_dir)) = name else { continue };
            match items.iter_mut().find(|i| i.name == name) {
                Some(existing) if is_dir => {
                    let file_there = match existing.source {
                        Source::Extra(_) => true,
                        Source::Disk(t) => !t.is_dir(),
                        Source::Virtual => false,
                    };
                    if file_there {
                        return Err(WalkError::Conflict(join(rel, name)));
                    }
                    // A real directory also holds extras: walk it normally.
                }
                Some(existing) => {
                    let dir_there = matches!(existing.source, Source::Virtual)
                        || existing.on_disk.is_some_and(|t| t.is_dir());
                    if dir_there {
                        return Err(WalkError::Conflict(join(rel, name)));
                    }
                    existing.source = Source::Extra(extra.index);
                }
                None => items.push(Item {
                    name: name.to_vec(),
                    dirent: None,
                    source: if is_dir {
                        Source::Virtual
                    } else {
                        Source::Extra(extra.index)
                    },
                    on_disk: None,
                }),
            }
        }
        items.sort_unstable_by(|a, b| key_cmp(a.sort_key(), b.sort_key()));
        Ok(items)
    }

    fn has_extras_below(&self, rel: &[u8]) -> bool {
        self.extras.iter().any(|e| {
            e.dir == rel || (e.dir.starts_with(rel) && e.dir.get(rel.len()) == Some(&b'/'))
        })
    }

    /// Visit the directory `rel`. `disk` is false for a directory whose disk
    /// contents are all excluded but which holds files from memory.
    fn visit<E>(
        &self,
        state: &mut State<'_, E>,
        rel: Vec<u8>,
        disk: bool,
        info: &MatchInfo,
    ) -> Result<(), WalkError<E>> {
        for item in self.listing(&rel, disk)? {
            let path = join(&rel, &item.name);
            let file_type = match item.source {
                Source::Extra(index) => {
                    let extra = &self.extras[index];
                    state.report.content_bytes += extra.size;
                    state.emit(Entry {
                        path,
                        kind: EntryKind::Memory { index },
                        mode: extra.mode,
                        stat: Default::default(),
                    })?;
                    continue;
                }
                Source::Virtual => {
                    self.visit(state, path, false, info)?;
                    continue;
                }
                Source::Disk(t) => t,
            };
            let text = String::from_utf8_lossy(&path);
            let (excluded, child_info) = self.matcher.matches_using_parent_results(&text, info);
            if excluded {
                if file_type.is_dir() {
                    if self.matcher.may_rescue(&text) {
                        self.visit(state, path, true, &child_info)?;
                    } else if self.has_extras_below(&path) {
                        self.visit(state, path, false, &child_info)?;
                    }
                }
                continue;
            }
            let abs = self.root.join(OsStr::from_bytes(&path));
            let meta = match &item.dirent {
                Some(d) => d.metadata(),
                None => fs::symlink_metadata(&abs),
            }
            .map_err(|source| WalkError::Io {
                path: abs.clone(),
                source,
            })?;
            let mode = meta.mode() & 0o7777;
            let kind = if file_type.is_dir() {
                EntryKind::Dir
            } else if file_type.is_file() {
                EntryKind::File { size: meta.len() }
            } else if file_type.is_symlink() {
                let target = fs::read_link(&abs).map_err(|source| WalkError::Io {
                    path: abs.clone(),
                    source,
                })?;
                EntryKind::Symlink {
                    target: target.into_os_string().into_vec(),
                }
            } else if file_type.is_fifo() {
                EntryKind::Fifo
            } else {
                let what = if file_type.is_socket() {
                    "socket"
                } else {
                    "device"
                };
                state.report.warnings.push(format!(
                    "skipped {what} {text}: sockets and devices are not sent in a build context"
                ));
                continue;
            };
            let kind = if !file_type.is_dir() && meta.nlink() > 1 {
                // Docker's rule: a further name of a multiply-linked file
                // becomes a hard link to the first name in the archive.
                match state.first_name.get(&(meta.dev(), meta.ino())) {
                    Some(first) => EntryKind::HardLink {
                        target: first.clone(),
                    },
                    None => {
                        state
                            .first_name
                            .insert((meta.dev(), meta.ino()), path.clone());
                        kind
                    }
                }
            } else {
                kind
            };
            let is_dir = kind == EntryKind::Dir;
            state.emit(Entry {
                path: path.clone(),
                kind,
                mode,
                stat: kiln_archive::identity::Identity::of(&meta),
            })?;
            if is_dir {
                self.visit(state, path, true, &child_info)?;
            }
        }
        Ok(())
    }
}

struct State<'e, E> {
    report: WalkReport,
    first_name: HashMap<(u64, u64), Vec<u8>>,
    emit: &'e mut dyn FnMut(Entry) -> Result<(), E>,
}

impl<E> State<'_, E> {
    fn emit(&mut self, entry: Entry) -> Result<(), WalkError<E>> {
        if !entry.is_dir() {
            self.report.files += 1;
        }
        self.report.content_bytes += match &entry.kind {
            EntryKind::File { size } => *size,
            _ => 0,
        };
        (self.emit)(entry).map_err(WalkError::Stopped)
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(dir.len() + name.len() + 1);
    if !dir.is_empty() {
        path.extend_from_slice(dir);
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_sort_as_if_followed_by_a_slash() {
        let mut names = [
            (b"a".as_slice(), true),
            (b"a.txt", false),
            (b"a-b", false),
            (b"a0", true),
        ];
        names.sort_by(|x, y| key_cmp(*x, *y));
        let order: Vec<&[u8]> = names.iter().map(|n| n.0).collect();
        assert_eq!(order, vec![b"a-b".as_slice(), b"a.txt", b"a", b"a0"]);
    }
}
