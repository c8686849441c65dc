//! The last archive of each context, kept in kiln's cache folder with its
//! [`Fingerprint`](super::Fingerprint), so that an unchanged context is
//! neither read nor written again: its files' metadata vouch for it, as
//! git's index does. What the builder gets is a link to the kept archive
//! made for this build alone, so a concurrent build that replaces the kept
//! archive never changes what this one reads.
//!
//! A racy fingerprint (a file changed within seconds of the walk) is never
//! kept: the next build reads everything again.

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
}

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
/// one's fingerprint matches, else written anew (and kept when its
/// fingerprint is not racy: no entry changed within `racy_ns`,
/// [`super::RACY_NS`] but in tests).
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
    if let Some(r) = record.filter(|r| !fingerprint.racy && r.fingerprint == fingerprint.digest) {
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
    if !fingerprint.racy && kept_here {
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

        // A racy fingerprint is never kept, so never trusted.
        let cache2 = tempfile::tempdir().expect("tempdir");
        let racy = |root: &Path| archive(&context(root), cache2.path(), i64::MAX).expect("archive");
        assert!(!racy(root.path()).reused);
        assert!(!racy(root.path()).reused);

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
}
