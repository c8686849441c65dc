//! The build context: what every builder receives, made once in the host
//! (ZenML's `BuildContext`). Deciding what is sent follows the Docker CLI
//! exactly ([`dockerignore`], [`walk`]); the archive is deterministic and
//! streamed ([`archive`]); non-local builders get it through an artifact
//! store ([`store`]).

pub mod archive;
pub mod dockerignore;
pub mod kept;
pub mod stdin;
pub mod store;
pub mod walk;

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use sha1::{Digest, Sha1};

pub use archive::{ArchiveError, ContextSummary};
use dockerignore::{Matcher, PatternError};
pub use walk::{Entry, EntryKind};

/// ZenML warns about contexts above this size when no ignore file exists.
pub const LARGE_CONTEXT_BYTES: u64 = 50 * 1024 * 1024;

/// What the user named: the root, and optionally a Dockerfile and an ignore
/// file. Relative paths are relative to `cwd`, as for `docker build -f`.
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    /// The context root.
    pub root: PathBuf,
    /// `-f/--file`.
    pub dockerfile: Option<PathBuf>,
    /// `--dockerignore` (ZenML's `dockerignore_file`).
    pub ignore_file: Option<PathBuf>,
}

/// A file added from memory by the host or a builder plugin; never subject
/// to the user's ignore rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// `/`-separated path relative to the root.
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// Why a context could not be planned or packed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The root is missing or not a directory.
    #[error("build context {path}: {reason}")]
    Root {
        /// The root as resolved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The Dockerfile cannot be found.
    #[error("cannot locate Dockerfile {path}: {reason}")]
    Dockerfile {
        /// Where kiln looked.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The ignore file cannot be read.
    #[error("cannot read ignore file {path}: {source}")]
    IgnoreFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A pattern in the ignore file is invalid.
    #[error("{path}: {error}")]
    Pattern {
        /// The ignore file.
        path: PathBuf,
        /// Docker's message and the line.
        error: PatternError,
    },
    /// A file or directory under the root could not be read during the walk.
    #[error("cannot read {path}: {source}")]
    Walk {
        /// The path on disk.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file added from memory cannot be placed.
    #[error("cannot add {path:?} to the build context: {reason}")]
    Extra {
        /// The path asked for.
        path: String,
        /// Why not.
        reason: String,
    },
    /// The Dockerfile or ignore file in the context is a symlink that
    /// leads out of it.
    #[error(
        "{path} is a symlink to {target}, outside the context: refused (a file from the \
         context must stay inside it; name a file outside with -f or --ignore-file)"
    )]
    OutsideContext {
        /// The file in the context.
        path: PathBuf,
        /// Where it leads.
        target: PathBuf,
    },
    /// Making the archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Writing the output file failed.
    #[error("writing {path}: {source}")]
    Output {
        /// The output path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ContextError {
    /// Whether writing failed because the disk is full (or a quota reached).
    pub fn is_storage_full(&self) -> bool {
        let io = match self {
            ContextError::Output { source, .. }
            | ContextError::Archive(ArchiveError::Write(source)) => source,
            _ => return false,
        };
        io.kind() == std::io::ErrorKind::StorageFull
            || matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
    }

    /// Whether the user's input is at fault (as opposed to the output side).
    pub fn is_input_error(&self) -> bool {
        !matches!(
            self,
            ContextError::Output { .. } | ContextError::Archive(ArchiveError::Write(_))
        )
    }
}

/// How recent a change must be for a fingerprint to be racy: well above any
/// file system's timestamp granularity (FAT's 2 s).
pub const RACY_NS: i64 = 3_000_000_000;

/// The most entries a fingerprint's walk keeps for the archive written
/// after it (about 15 MiB of them); a larger context is walked again.
pub const KEEP_WALKED: usize = 100_000;

/// The entries a walk sent, in archive order, and its report.
#[derive(Debug)]
pub struct Walked {
    entries: Vec<Entry>,
    report: Report,
}

impl Walked {
    /// About how long their archive is: a header per entry, contents in
    /// whole blocks, the end (long names' extra headers left out).
    pub fn archive_bytes(&self) -> u64 {
        use kiln_archive::tar::{padding, END};
        let contents: u64 = self
            .entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { size } => size + padding(*size).len() as u64,
                _ => 0,
            })
            .sum();
        self.entries.len() as u64 * 512 + contents + END.len() as u64
    }
}

/// What [`Context::fingerprint`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// sha256 of everything the archive is made from, as metadata.
    pub digest: String,
    /// The regular files changed too recently for their metadata to vouch
    /// for their contents (path in the archive, size). Folders, links and
    /// the rest are vouched for by the walk itself (their listings and
    /// targets are in the digest).
    pub racy_files: Vec<(Vec<u8>, u64)>,
}

/// A planned build context: the resolved root, Dockerfile and rules, and
/// the files added from memory. Entries are produced by walking on demand
/// ([`Context::visit`], [`Context::write_to`]), never all held at once
/// (but for the bounded list a fingerprint hands on to the archive,
/// [`Context::fingerprint`]).
#[derive(Debug)]
pub struct Context {
    root: PathBuf,
    dockerfile: String,
    ignore_file: Option<PathBuf>,
    matcher: Matcher,
    extras: Vec<ExtraFile>,
}

/// What a walk or an archive saw, besides the entries.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Warnings to show the user (skipped special files, a large context).
    pub warnings: Vec<String>,
    /// Non-directory entries sent.
    pub files: u64,
    /// Bytes of file content sent.
    pub content_bytes: u64,
}

impl Context {
    /// Resolve the root, Dockerfile and ignore file as the Docker CLI does
    /// and compile the rules. Nothing under the root is read yet.
    pub fn resolve(options: &ContextOptions, cwd: &Path) -> Result<Self, ContextError> {
        let root = resolve_root(&cwd.join(&options.root))?;
        let (dockerfile_disk, dockerfile_given) = locate_dockerfile(options, cwd, &root)?;
        let ignore_file = pick_ignore_file(options, cwd, &root, &dockerfile_given)?;

        let inside = dockerfile_disk
            .strip_prefix(&root)
            .ok()
            .and_then(|p| p.to_str())
            .map(|p| p.to_string());

        let mut lines = Vec::new();
        if let Some(file) = &ignore_file {
            let bytes = fs::read(file).map_err(|source| ContextError::IgnoreFile {
                path: file.clone(),
                source,
            })?;
            lines = dockerignore::read_patterns(&bytes).map_err(|error| ContextError::Pattern {
                path: file.clone(),
                error,
            })?;
        }
        let compile = |extra: &[String]| {
            let all = lines
                .iter()
                .map(|(n, p)| (*n, p.as_str()))
                .chain(extra.iter().map(|p| (0, p.as_str())));
            Matcher::new(all).map_err(|error| ContextError::Pattern {
                path: ignore_file.clone().unwrap_or_default(),
                error,
            })
        };
        let matcher = compile(&[])?;
        // What the Docker CLI checks before it sends anything.
        matcher
            .check_broken(&root)
            .map_err(|error| ContextError::Pattern {
                path: ignore_file.clone().unwrap_or_default(),
                error,
            })?;
        // The Dockerfile and .dockerignore are always sent
        // (the CLI's TrimBuildFilesFromExcludes).
        let mut keep = Vec::new();
        if matcher.matches_or_parent_matches(".dockerignore") {
            keep.push("!.dockerignore".to_string());
        }
        if let Some(rel) = &inside {
            if matcher.matches_or_parent_matches(rel) {
                keep.push(format!("!{rel}"));
            }
        }
        let matcher = if keep.is_empty() {
            matcher
        } else {
            compile(&keep)?
        };
        let mut context = Context {
            root,
            dockerfile: inside.clone().unwrap_or_default(),
            ignore_file,
            matcher,
            extras: Vec::new(),
        };
        if inside.is_none() {
            context.add_outside_dockerfile(&dockerfile_disk)?;
        }
        Ok(context)
    }

    /// The resolved root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The Dockerfile's path inside the context.
    pub fn dockerfile(&self) -> &str {
        &self.dockerfile
    }

    /// The Dockerfile's text as the context sends it (a file added from
    /// memory replaces the one on disk).
    pub fn dockerfile_text(&self) -> Result<String, String> {
        if let Some(extra) = self.extras.iter().rev().find(|e| e.path == self.dockerfile) {
            return Ok(String::from_utf8_lossy(&extra.contents).into_owned());
        }
        let path = self.root.join(&self.dockerfile);
        fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The ignore file that was applied, if any.
    pub fn ignore_file(&self) -> Option<&Path> {
        self.ignore_file.as_deref()
    }

    /// Add or replace files from memory. They are not subject to the ignore
    /// rules. A path that is a directory in the context is refused when the
    /// context is walked.
    pub fn add_files(&mut self, files: Vec<ExtraFile>) -> Result<(), ContextError> {
        for file in files {
            let path = kiln_archive::path::clean(&file.path);
            if path.starts_with("../") || path == ".." || path.starts_with('/') || path == "." {
                return Err(ContextError::Extra {
                    path: file.path,
                    reason: "the path must stay inside the context root".into(),
                });
            }
            let file = ExtraFile {
                path,
                mode: file.mode & 0o7777,
                ..file
            };
            match self.extras.iter_mut().find(|e| e.path == file.path) {
                Some(existing) => *existing = file,
                None => self.extras.push(file),
            }
        }
        Ok(())
    }

    /// Visit every entry that is sent, in archive order, on this thread.
    pub fn visit(
        &self,
        visit: &mut dyn FnMut(Entry) -> Result<(), ContextError>,
    ) -> Result<Report, ContextError> {
        let placed = self.placed_extras();
        let walk = walk::Walk {
            root: &self.root,
            matcher: &self.matcher,
            extras: &placed,
        };
        let report = walk.run(visit).map_err(|e| self.walk_error(e))?;
        Ok(self.finish_report(report))
    }

    /// A fingerprint of everything the archive is made from, read from
    /// metadata alone (git's index idea): kiln's version, the root, the
    /// Dockerfile, the ignore rules, the files from memory, and every entry
    /// sent with its kind, mode, size or link target, device, inode, mtime
    /// and ctime. An unchanged fingerprint means unchanged contents unless a
    /// file changed within the timestamps' granularity: `racy_files` lists
    /// the files modified or changed less than `racy_ns` ([`RACY_NS`])
    /// before the walk, whose contents the fingerprint cannot vouch for
    /// (git's "racily clean"). With it comes the walk it made, when it had at most
    /// [`KEEP_WALKED`] entries: an archive written next
    /// ([`Context::write_walked_to`]) need not walk again.
    pub fn fingerprint(&self, racy_ns: i64) -> Result<(Fingerprint, Option<Walked>), ContextError> {
        use sha2::{Digest as _, Sha256};
        let started = kiln_archive::identity::now_ns();
        let mut h = Sha256::new();
        let field = |h: &mut Sha256, bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(&mut h, b"kiln-context-fingerprint-v2");
        field(&mut h, env!("CARGO_PKG_VERSION").as_bytes());
        field(&mut h, self.root.as_os_str().as_encoded_bytes());
        field(&mut h, self.dockerfile.as_bytes());
        match &self.ignore_file {
            Some(file) => {
                field(&mut h, file.as_os_str().as_encoded_bytes());
                let bytes = fs::read(file).map_err(|source| ContextError::IgnoreFile {
                    path: file.clone(),
                    source,
                })?;
                field(&mut h, &bytes);
            }
            None => field(&mut h, b""),
        }
        for extra in &self.extras {
            field(&mut h, extra.path.as_bytes());
            field(&mut h, &extra.mode.to_le_bytes());
            field(&mut h, &extra.contents);
        }
        let mut racy_files = Vec::new();
        let mut entries = Some(Vec::new());
        let report = self.visit(&mut |entry| {
            field(&mut h, &entry.path);
            let kind = match &entry.kind {
                EntryKind::Dir => "d".to_string(),
                EntryKind::File { size } => format!("f{size}"),
                EntryKind::Symlink { target } => {
                    format!("l{}", String::from_utf8_lossy(target))
                }
                EntryKind::Fifo => "p".to_string(),
                EntryKind::HardLink { target } => {
                    format!("h{}", String::from_utf8_lossy(target))
                }
                EntryKind::Memory { index } => format!("m{index}"),
            };
            field(&mut h, kind.as_bytes());
            field(&mut h, &entry.mode.to_le_bytes());
            field(&mut h, &entry.stat.to_bytes());
            if !matches!(entry.kind, EntryKind::Memory { .. })
                && entry.stat.racy(started, i128::from(racy_ns))
            {
                if let EntryKind::File { size } = entry.kind {
                    racy_files.push((entry.path.clone(), size));
                }
            }
            if let Some(kept) = &mut entries {
                if kept.len() < KEEP_WALKED {
                    kept.push(entry);
                } else {
                    entries = None;
                }
            }
            Ok(())
        })?;
        let fingerprint = Fingerprint {
            digest: format!("{:x}", h.finalize()),
            racy_files,
        };
        Ok((
            fingerprint,
            entries.map(|entries| Walked { entries, report }),
        ))
    }

    /// Stream the archive of an earlier walk into `sink`, as
    /// [`Context::write_to`] streams a new one.
    pub fn write_walked_to<W: Write + Send>(
        &self,
        walked: Walked,
        gzip: bool,
        sink: W,
    ) -> Result<(ContextSummary, Report, W), ContextError> {
        let (summary, sink) = archive::write_archive(walked.entries, self, gzip, sink)?;
        Ok((summary, walked.report, sink))
    }

    /// The context's content hash without writing anything: the sha1 of the
    /// uncompressed archive.
    pub fn digest(&self) -> Result<(ContextSummary, Report), ContextError> {
        let (summary, report, _) = self.write_to(false, std::io::sink())?;
        Ok((summary, report))
    }

    /// Stream the archive into `sink`: the walk runs on its own thread and
    /// feeds the archive pipeline as it goes.
    pub fn write_to<W: Write + Send>(
        &self,
        gzip: bool,
        sink: W,
    ) -> Result<(ContextSummary, Report, W), ContextError> {
        let placed = self.placed_extras();
        let walk = walk::Walk {
            root: &self.root,
            matcher: &self.matcher,
            extras: &placed,
        };
        let (tx, rx) = crossbeam_channel::bounded::<Entry>(1024);
        std::thread::scope(|scope| {
            let walker = scope.spawn(move || walk.run(&mut |entry| tx.send(entry).map_err(|_| ())));
            let archived = archive::write_archive(rx, self, gzip, sink);
            let walked = walker.join().unwrap_or_else(|_| {
                Err(walk::WalkError::Io {
                    path: self.root.clone(),
                    source: std::io::Error::other("the walk thread panicked"),
                })
            });
            match (walked, archived) {
                // The walk's own failure comes first; the archive then only
                // saw its input end early.
                (Err(walk::WalkError::Io { path, source }), _) => {
                    Err(ContextError::Walk { path, source })
                }
                (Err(walk::WalkError::Conflict(path)), _) => Err(conflict(&path)),
                (Err(walk::WalkError::Stopped(())), Ok(_)) => Err(ContextError::Archive(
                    ArchiveError::Write(std::io::Error::other("the archive stopped reading")),
                )),
                (_, Err(e)) => Err(e.into()),
                (Ok(report), Ok((summary, sink))) => {
                    Ok((summary, self.finish_report(report), sink))
                }
            }
        })
    }

    /// Write the archive to `out` atomically: a temporary file beside it,
    /// renamed into place only when complete. On failure nothing is left.
    pub fn pack_to_file(
        &self,
        out: &Path,
        gzip: bool,
    ) -> Result<(ContextSummary, Report), ContextError> {
        let output = |source| ContextError::Output {
            path: out.to_path_buf(),
            source,
        };
        let atomic = |e: kiln_archive::atomic::AtomicError| output(e.source);
        let temp = kiln_archive::atomic::AtomicFile::beside(out).map_err(atomic)?;
        temp.set_mode(kiln_archive::atomic::created_mode(0o666))
            .map_err(atomic)?;
        let (summary, report, _) = self.write_to(gzip, temp.file())?;
        temp.commit().map_err(atomic)?;
        Ok((summary, report))
    }

    fn placed_extras(&self) -> Vec<walk::Extra> {
        self.extras
            .iter()
            .enumerate()
            .map(|(index, file)| {
                let (dir, name) = file.path.rsplit_once('/').unwrap_or(("", &file.path));
                walk::Extra {
                    dir: dir.as_bytes().to_vec(),
                    name: name.as_bytes().to_vec(),
                    index,
                    mode: file.mode,
                    size: file.contents.len() as u64,
                }
            })
            .collect()
    }

    fn walk_error(&self, error: walk::WalkError<ContextError>) -> ContextError {
        match error {
            walk::WalkError::Io { path, source } => ContextError::Walk { path, source },
            walk::WalkError::Conflict(path) => conflict(&path),
            walk::WalkError::Stopped(e) => e,
        }
    }

    fn finish_report(&self, walked: walk::WalkReport) -> Report {
        let mut warnings = walked.warnings;
        if self.ignore_file.is_none() && walked.content_bytes > LARGE_CONTEXT_BYTES {
            warnings.push(format!(
                "the build context is {:.1} MiB and there is no .dockerignore in {}; \
                 if that is more than the image needs, add one (or pass --dockerignore FILE)",
                walked.content_bytes as f64 / (1024.0 * 1024.0),
                self.root.display()
            ));
        }
        Report {
            warnings,
            files: walked.files,
            content_bytes: walked.content_bytes,
        }
    }

    fn add_outside_dockerfile(&mut self, disk: &Path) -> Result<(), ContextError> {
        // As the Docker CLI does for a Dockerfile outside the context: send
        // it under a hidden name and list that name in .dockerignore so COPY
        // never picks it up. The name is derived from the contents (the CLI
        // uses a random one) so the archive stays reproducible.
        let contents = fs::read(disk).map_err(|e| ContextError::Dockerfile {
            path: disk.to_path_buf(),
            reason: e.to_string(),
        })?;
        let digest = Sha1::digest(&contents);
        let name = format!(
            ".dockerfile.{}",
            digest[..10]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let existing = self.root.join(".dockerignore");
        let mut ignore = match fs::symlink_metadata(&existing) {
            Ok(m) if m.is_file() && !self.matcher.matches_or_parent_matches(".dockerignore") => {
                fs::read(&existing).map_err(|source| ContextError::IgnoreFile {
                    path: existing.clone(),
                    source,
                })?
            }
            _ => b".dockerignore".to_vec(),
        };
        ignore.extend_from_slice(format!("\n{name}\n").as_bytes());
        self.dockerfile = name.clone();
        self.add_files(vec![
            ExtraFile {
                path: name,
                contents,
                mode: 0o600,
            },
            ExtraFile {
                path: ".dockerignore".into(),
                contents: ignore,
                mode: 0o600,
            },
        ])
    }
}

impl archive::Contents for Context {
    fn root(&self) -> &Path {
        &self.root
    }

    fn memory(&self, index: usize) -> &[u8] {
        &self.extras[index].contents
    }
}

fn conflict(path: &[u8]) -> ContextError {
    ContextError::Extra {
        path: String::from_utf8_lossy(path).into_owned(),
        reason: "the context has a directory there, or a file where a directory is needed".into(),
    }
}

fn resolve_root(given: &Path) -> Result<PathBuf, ContextError> {
    let root = fs::canonicalize(given).map_err(|e| ContextError::Root {
        path: given.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !root.is_dir() {
        return Err(ContextError::Root {
            path: root,
            reason: "not a directory".into(),
        });
    }
    Ok(root)
}

/// The Dockerfile on disk (symlinks resolved) and the path as the user
/// named it (for `<Dockerfile>.dockerignore`).
fn locate_dockerfile(
    options: &ContextOptions,
    cwd: &Path,
    root: &Path,
) -> Result<(PathBuf, PathBuf), ContextError> {
    let given = match &options.dockerfile {
        Some(f) => cwd.join(f),
        None => {
            let default = root.join("Dockerfile");
            let lower = root.join("dockerfile");
            if fs::symlink_metadata(&default).is_err() && fs::symlink_metadata(&lower).is_ok() {
                lower
            } else {
                default
            }
        }
    };
    let disk = fs::canonicalize(&given).map_err(|e| ContextError::Dockerfile {
        path: given.clone(),
        reason: e.to_string(),
    })?;
    stays_inside(&given, &disk, root)?;
    if disk.is_dir() {
        return Err(ContextError::Dockerfile {
            path: given,
            reason: "it is a directory".into(),
        });
    }
    Ok((disk, given))
}

fn pick_ignore_file(
    options: &ContextOptions,
    cwd: &Path,
    root: &Path,
    dockerfile: &Path,
) -> Result<Option<PathBuf>, ContextError> {
    if let Some(explicit) = &options.ignore_file {
        let path = cwd.join(explicit);
        if let Err(source) = fs::metadata(&path) {
            return Err(ContextError::IgnoreFile { path, source });
        }
        return Ok(Some(path));
    }
    let mut beside = dockerfile.as_os_str().to_owned();
    beside.push(".dockerignore");
    let beside = PathBuf::from(beside);
    let default = root.join(".dockerignore");
    for candidate in [beside, default] {
        if candidate.is_file() {
            if let Ok(disk) = fs::canonicalize(&candidate) {
                stays_inside(&candidate, &disk, root)?;
            }
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// A file named inside the context (`given`, where it sits) must not lead
/// out of it through a symlink (`disk`, where it resolves): a checkout's
/// `Dockerfile -> /home/me/.ssh/id_rsa` would send that file, and print its
/// first line in a parse error. A file named outside the context is the
/// user's own choice and is not refused.
fn stays_inside(given: &Path, disk: &Path, root: &Path) -> Result<(), ContextError> {
    let sits = given
        .parent()
        .and_then(|p| fs::canonicalize(p).ok())
        .zip(given.file_name())
        .map(|(parent, name)| parent.join(name))
        .unwrap_or_else(|| given.to_path_buf());
    if sits.starts_with(root) && !disk.starts_with(root) {
        return Err(ContextError::OutsideContext {
            path: given.to_path_buf(),
            target: disk.to_path_buf(),
        });
    }
    Ok(())
}
