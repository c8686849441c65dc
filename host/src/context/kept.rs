//! The last archive of each context, kept in kiln's cache folder with its
//! [`Fingerprint`](super::Fingerprint), so that an unchanged context is
//! neither read nor written again: its files' metadata vouch for it, as
//! git's index does. What the builder gets is a link to the kept archive
//! made for this build alone, so a concurrent build that replaces the kept
//! archive never changes what this one reads.
//!
//! A racy fingerprint (a file changed within seconds of the walk) cannot
//! vouch for those files' contents: as git re-reads "racily clean" entries,
//! the archive is kept with the digest of each such file as it went into
//! it, and reused only while the files still hold exactly that (so an
//! archive just written for an edit is not written again, nor freed while
//! the disk is still busy writing it). One whose racy files are large is
//! not kept.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{ArchiveError, Context, ContextError, ContextSummary, Report};

/// What is kept beside `<key>.tar`, as `<key>.json`.
#[derive(Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    summary: ContextSummary,
    warnings: Vec<String>,
    files: u64,
    content_bytes: u64,
    /// The files the fingerprint could not vouch for, with the sha256 of
    /// what the archive holds for each.
    #[serde(default)]
    racy_files: Vec<RacyFile>,
}

/// A file whose contents a kept archive's fingerprint cannot vouch for.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
struct RacyFile {
    path: Vec<u8>,
    sha256: String,
}

/// At most this many bytes of racy files are read to keep an archive (and
/// again to reuse it); past it the archive is not kept.
const RACY_CHECK_MAX: u64 = 64 << 20;

/// The archive a build hands its builder.
pub struct Archive {
    /// What it holds.
    pub summary: ContextSummary,
    /// What the walk saw.
    pub report: Report,
    /// This build's own name for it, removed when dropped.
    pub path: tempfile::TempPath,
    /// Whether it was the kept one (nothing read or written).
    pub reused: bool,
}

fn output(path: &Path) -> impl Fn(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Output {
        path: path.to_path_buf(),
        source,
    }
}

/// Builds' links are `build-<pid>-*`: remove those of processes that are
/// gone (killed before they could clean up).
/// A fresh name in `dir` for this build's link or archive, removed if
/// Ctrl-C ends kiln.
fn build_file(dir: &Path) -> Result<tempfile::NamedTempFile, ContextError> {
    let file = tempfile::Builder::new()
        .prefix(&format!("build-{}-", std::process::id()))
        .suffix(".tar")
        .tempfile_in(dir)
        .map_err(output(dir))?;
    crate::build::interrupt::remove_on_interrupt(file.path());
    Ok(file)
}

/// The archive of `context`, from `dir` (made if missing) when the kept
/// one's fingerprint matches and its racy files (changed within `racy_ns`,
/// [`super::RACY_NS`] but in tests) still hold what it holds, else written
/// anew and kept.
pub fn archive(context: &Context, dir: &Path, racy_ns: i64) -> Result<Archive, ContextError> {
    fs::create_dir_all(dir).map_err(output(dir))?;
    kiln_archive::atomic::remove_stale(dir, &["build-", kiln_archive::atomic::TEMP_PREFIX]);
    let key = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(context.root().as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(context.dockerfile().as_bytes());
        h.update([0]);
        if let Some(f) = context.ignore_file() {
            h.update(f.as_os_str().as_encoded_bytes());
        }
        format!("{:x}", h.finalize())[..32].to_string()
    };
    let (fingerprint, walked) = context.fingerprint(racy_ns)?;
    // Named by the fingerprint: a kept archive never changes once there.
    let stem = format!("{key}-{}", &fingerprint.digest[..32]);
    let kept: PathBuf = dir.join(format!("{stem}.tar"));
    let record_path = dir.join(format!("{stem}.json"));

    let record: Option<Record> = fs::read(&record_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let trusted = |r: &Record| {
        r.fingerprint == fingerprint.digest && unchanged(context.root(), &fingerprint, r)
    };
    if let Some(r) = record.filter(trusted) {
        let link = build_file(dir)?.into_temp_path();
        // The link replaces the empty placeholder the name was taken with.
        let linked = fs::remove_file(&link).and_then(|()| fs::hard_link(&kept, &link));
        let intact = fs::metadata(&link).is_ok_and(|m| m.len() == r.summary.bytes);
        if linked.is_ok() && intact {
            // Used now: a cache pruned least recently used first keeps it.
            kiln_archive::atomic::touch(&kept);
            kiln_archive::atomic::touch(&record_path);
            return Ok(Archive {
                summary: r.summary,
                report: Report {
                    warnings: r.warnings,
                    files: r.files,
                    content_bytes: r.content_bytes,
                },
                path: link,
                reused: true,
            });
        }
    }

    let mut walked = walked;
    let mut write = |file| {
        let total = walked.as_ref().map_or(0, super::Walked::archive_bytes);
        let file = Packing::new(file, total);
        let (summary, report, file) = match walked.take() {
            Some(w) => context.write_walked_to(w, false, file),
            None => context.write_to(false, file),
        }?;
        Ok((summary, report, file.finish()))
    };
    let (summary, report, file, kept_here) = match build_file(dir).and_then(&mut write) {
        Ok((summary, report, file)) => (summary, report, file, true),
        // The cache's disk is full: the archive is written in the system's
        // temp folder for this build alone (the cache must not fail a build).
        Err(e) if e.is_storage_full() => {
            let elsewhere = build_file(&std::env::temp_dir())?;
            let (summary, report, file) = write(elsewhere)?;
            (summary, report, file, false)
        }
        Err(e) => return Err(e),
    };
    let file = file.into_temp_path();
    let racy_files = kept_here
        .then(|| archived_digests(&file, &fingerprint.racy_files))
        .flatten();
    if let Some(racy_files) = racy_files {
        // Keep it: a second name, renamed over the kept one, then the
        // record. A failure here only costs the next build a full read.
        let staged = dir.join(format!("{key}.tar.{}", std::process::id()));
        let _ = fs::remove_file(&staged);
        crate::build::interrupt::remove_on_interrupt(&staged);
        let kept_ok = fs::hard_link(&file, &staged)
            .and_then(|()| fs::rename(&staged, &kept))
            .is_ok();
        let _ = fs::remove_file(&staged);
        if kept_ok {
            let record = Record {
                fingerprint: fingerprint.digest,
                summary: summary.clone(),
                warnings: report.warnings.clone(),
                files: report.files,
                content_bytes: report.content_bytes,
                racy_files,
            };
            if write_record(&record_path, &record).is_ok() {
                // Only the latest of a context is kept.
                forget_others(dir, &key, &stem);
            }
        }
    }
    Ok(Archive {
        summary,
        report,
        path: file,
        reused: false,
    })
}

/// Whether the kept archive `record` describes may stand for the context
/// at `root` whose fingerprint `now` matches its own: every file that is
/// racy now was racy when it was kept, and every such file still holds
/// what the archive holds.
fn unchanged(root: &Path, now: &super::Fingerprint, record: &Record) -> bool {
    let known = |p: &Vec<u8>| record.racy_files.iter().any(|f| &f.path == p);
    if !now.racy_files.iter().all(|(p, _)| known(p)) {
        return false;
    }
    let real_root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    record.racy_files.iter().all(|f| {
        use std::os::unix::ffi::OsStrExt;
        let disk = root.join(std::ffi::OsStr::from_bytes(&f.path));
        super::archive::open_walked(&disk, &real_root)
            .ok()
            .and_then(|file| sha256_hex(file, RACY_CHECK_MAX))
            .is_some_and(|h| h == f.sha256)
    })
}

/// The sha256 of what `from` holds, when it is at most `max` bytes.
fn sha256_hex(from: impl std::io::Read, max: u64) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let n = std::io::copy(&mut from.take(max + 1), &mut h).ok()?;
    (n <= max).then(|| format!("{:x}", h.finalize()))
}

/// The sha256 of each of `racy` (paths in the archive, sizes) as the
/// archive at `archive` holds it; `None` when they are too large to check
/// or not all there.
fn archived_digests(archive: &Path, racy: &[(Vec<u8>, u64)]) -> Option<Vec<RacyFile>> {
    if racy.is_empty() {
        return Some(Vec::new());
    }
    if racy.iter().map(|(_, size)| size).sum::<u64>() > RACY_CHECK_MAX {
        return None;
    }
    let mut tar = tar::Archive::new(fs::File::open(archive).ok()?);
    let mut out = Vec::new();
    for entry in tar.entries_with_seek().ok()? {
        let entry = entry.ok()?;
        let path = entry.path_bytes().into_owned();
        if racy.iter().any(|(p, _)| *p == path) {
            out.push(RacyFile {
                sha256: sha256_hex(entry, RACY_CHECK_MAX)?,
                path,
            });
        }
    }
    (out.len() == racy.len()).then_some(out)
}

/// A writer that shows how much of the context archive is written, once
/// packing has taken a second (a quick one says nothing).
struct Packing<W> {
    inner: W,
    done: u64,
    total: u64,
    started: std::time::Instant,
    quiet_for: std::time::Duration,
    shown: Option<std::time::Instant>,
}

impl<W> Packing<W> {
    const LABEL: &'static str = "packing the context";

    fn new(inner: W, total: u64) -> Self {
        Self::after(inner, total, std::time::Duration::from_secs(1))
    }

    fn after(inner: W, total: u64, quiet_for: std::time::Duration) -> Self {
        Self {
            inner,
            done: 0,
            total,
            started: std::time::Instant::now(),
            quiet_for,
            shown: None,
        }
    }

    /// The writer, once the end is shown (when anything was).
    fn finish(self) -> W {
        if self.shown.is_some() {
            crate::output::progress_bytes(Self::LABEL, self.done, self.done);
        }
        self.inner
    }
}

impl<W: Write> Write for Packing<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        use std::time::Duration;
        let n = self.inner.write(data)?;
        self.done += n as u64;
        let due = match self.shown {
            None => self.started.elapsed() >= self.quiet_for,
            Some(at) => at.elapsed() >= Duration::from_millis(200),
        };
        if due {
            self.shown = Some(std::time::Instant::now());
            crate::output::progress_bytes(Self::LABEL, self.done, self.total.max(self.done + 1));
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Remove the kept archives of context `key` other than `stem`'s. They
/// are renamed out of the way at once (`build-<pid>-forgotten-*`) and
/// removed on a thread of their own while the build goes on: freeing a
/// large file takes the file system a while. What a kill interrupts is
/// removed by the next build ([`kiln_archive::atomic::remove_stale`]).
fn forget_others(dir: &Path, key: &str, stem: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{key}-");
    let mut forgotten = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let of_key =
            name.starts_with(&prefix) && (name.ends_with(".tar") || name.ends_with(".json"));
        if of_key && !name.starts_with(stem) {
            let aside = dir.join(format!("build-{}-forgotten-{name}", std::process::id()));
            if fs::rename(entry.path(), &aside).is_ok() {
                forgotten.push(aside);
            }
        }
    }
    if !forgotten.is_empty() {
        std::thread::spawn(move || {
            for f in forgotten {
                let _ = fs::remove_file(f);
            }
        });
    }
}

fn write_record(path: &Path, record: &Record) -> Result<(), ContextError> {
    let bytes = serde_json::to_vec(record)
        .map_err(|e| ContextError::Archive(ArchiveError::Write(std::io::Error::other(e))))?;
    let temp =
        kiln_archive::atomic::AtomicFile::beside(path).map_err(|e| output(path)(e.source))?;
    temp.file().write_all(&bytes).map_err(output(path))?;
    temp.commit().map_err(|e| output(path)(e.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextOptions;

    fn context(root: &Path) -> Context {
        let options = ContextOptions {
            root: root.to_path_buf(),
            ..Default::default()
        };
        Context::resolve(&options, root).expect("context")
    }

    #[test]
    fn packing_progress_passes_every_byte_on() {
        let mut quick = Packing::new(Vec::new(), 10);
        quick.write_all(b"abc").expect("write");
        assert!(quick.shown.is_none(), "a quick pack says nothing");
        assert_eq!(quick.finish(), b"abc");
        let mut slow = Packing::after(Vec::new(), 4, std::time::Duration::ZERO);
        for _ in 0..3 {
            slow.write_all(b"xy").expect("write");
        }
        assert!(slow.shown.is_some());
        assert_eq!(slow.done, 6);
        assert_eq!(slow.finish(), b"xyxyxy");
    }

    #[test]
    fn an_unchanged_context_is_reused_and_any_change_is_read_again() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("Dockerfile"), "FROM scratch\nCOPY a /\n").expect("write");
        fs::write(root.path().join("a"), "one").expect("write");
        let build = || archive(&context(root.path()), cache.path(), 0).expect("archive");

        let first = build();
        assert!(!first.reused);
        // Written from the fingerprint's walk: the archive a fresh walk gives.
        let (fresh, _) = context(root.path()).digest().expect("digest");
        assert_eq!(first.summary, fresh);
        let again = build();
        assert!(again.reused, "unchanged: the kept archive");
        assert_eq!(again.summary, first.summary);
        assert_eq!(
            fs::read(&again.path).expect("read"),
            fs::read(&first.path).expect("read")
        );
        // Each build has its own name for it, removed after.
        assert_ne!(again.path.to_path_buf(), first.path.to_path_buf());
        let link = again.path.to_path_buf();
        drop(again);
        assert!(!link.exists());

        // Same size, other contents: its metadata changed, so it is read.
        fs::write(root.path().join("a"), "two").expect("write");
        let changed = build();
        assert!(!changed.reused);
        assert_ne!(changed.summary.sha1, first.summary.sha1);
        let changed_sha1 = changed.summary.sha1.clone();
        // Only the latest archive of a context is kept.
        drop((first, changed));
        let names = || -> Vec<String> {
            fs::read_dir(cache.path())
                .expect("dir")
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        };
        // The old ones were set aside at once and are removed on a thread.
        let kept: Vec<_> = names()
            .into_iter()
            .filter(|n| !n.starts_with("build-"))
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while names().len() > 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(names().len(), 2, "{:?}", names());

        // A racy fingerprint is kept with what its racy files held
        // ([`unchanged`] is tested below), and reused while they hold it.
        let cache2 = tempfile::tempdir().expect("tempdir");
        let racy = |root: &Path| archive(&context(root), cache2.path(), i64::MAX).expect("archive");
        assert!(!racy(root.path()).reused);
        assert!(
            racy(root.path()).reused,
            "unchanged racy files: the kept archive"
        );
        // Large racy files are not read to keep an archive.
        let big = tempfile::tempdir().expect("tempdir");
        fs::write(big.path().join("Dockerfile"), "FROM scratch\n").expect("write");
        fs::write(
            big.path().join("big"),
            vec![0u8; (RACY_CHECK_MAX + 1) as usize],
        )
        .expect("write");
        let cache3 = tempfile::tempdir().expect("tempdir");
        let large =
            |root: &Path| archive(&context(root), cache3.path(), i64::MAX).expect("archive");
        assert!(!large(big.path()).reused);
        assert!(!large(big.path()).reused);

        // A new ignore rule or a removed file changes the fingerprint.
        assert!(build().reused);
        fs::write(root.path().join(".dockerignore"), "a\n").expect("write");
        let ignored = build();
        assert!(!ignored.reused);
        assert_ne!(ignored.summary.sha1, changed_sha1);
        fs::remove_file(root.path().join(".dockerignore")).expect("rm");
        // Back as it was: what was kept for it (without an ignore file) is
        // still right.
        let back = build();
        assert!(back.reused);
        assert_eq!(back.summary.sha1, changed_sha1);
    }

    #[test]
    fn racy_files_vouch_only_while_they_hold_what_the_archive_holds() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("a"), "one").expect("write");
        fs::write(root.path().join("b"), "bee").expect("write");
        let one = sha256_hex(&b"one"[..], 10).expect("hash");
        let record = Record {
            fingerprint: "f".into(),
            summary: ContextSummary {
                sha1: String::new(),
                bytes: 0,
                files: 2,
            },
            warnings: Vec::new(),
            files: 2,
            content_bytes: 6,
            racy_files: vec![RacyFile {
                path: b"a".to_vec(),
                sha256: one,
            }],
        };
        let now = |racy: &[&[u8]]| super::super::Fingerprint {
            digest: "f".into(),
            racy_files: racy.iter().map(|p| (p.to_vec(), 3)).collect(),
        };
        assert!(unchanged(root.path(), &now(&[b"a"]), &record));
        assert!(unchanged(root.path(), &now(&[]), &record));
        // A file racy now that was not when the archive was kept.
        assert!(!unchanged(root.path(), &now(&[b"a", b"b"]), &record));
        // The same size and name, other contents (what equal metadata can hide).
        fs::write(root.path().join("a"), "two").expect("write");
        assert!(!unchanged(root.path(), &now(&[b"a"]), &record));
        // Gone, or swapped for a link or a FIFO: never read through, never trusted.
        fs::remove_file(root.path().join("a")).expect("rm");
        assert!(!unchanged(root.path(), &now(&[]), &record));
        std::os::unix::fs::symlink(root.path().join("b"), root.path().join("a")).expect("link");
        assert!(!unchanged(root.path(), &now(&[]), &record));
        assert_eq!(sha256_hex(&b"12345"[..], 4), None, "past the bound");
    }
}
