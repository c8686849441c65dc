//! Files that appear whole or not at all: written to a temporary file
//! beside the target, synced, renamed into place, the folder synced (or,
//! for outputs handed to the user, renamed without waiting for the disk). A
//! failure or a crash leaves the target as it was and no temporary file
//! behind (a crash at most a `.kiln-tmp-*` one). The host's state files and
//! context archives and the `oci` builder's archives and cache use it.

use std::{
    fmt, fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

/// What failed, on which file.
#[derive(Debug)]
pub struct AtomicError {
    /// `creating a temp file in`, `writing`, `replacing`, ...
    pub action: &'static str,
    /// The file or folder.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

impl fmt::Display for AtomicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for AtomicError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn failed<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> AtomicError + 'p {
    move |source| AtomicError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A temporary file beside its target; removed on drop unless committed.
#[derive(Debug)]
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// A new, empty temporary file in the folder of `target`.
    pub fn beside(target: &Path) -> Result<Self, AtomicError> {
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let temp = tempfile::Builder::new()
            .prefix(&temp_prefix(std::process::id()))
            .tempfile_in(dir)
            .map_err(failed("creating a temp file in", dir))?;
        Ok(Self {
            temp,
            target: target.to_path_buf(),
        })
    }

    /// The open temporary file, to write to.
    pub fn file(&self) -> &fs::File {
        self.temp.as_file()
    }

    /// The open temporary file, to write to.
    pub fn file_mut(&mut self) -> &mut fs::File {
        self.temp.as_file_mut()
    }

    /// Set the permission bits the target will have (Unix).
    pub fn set_mode(&self, mode: u32) -> Result<(), AtomicError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            self.file()
                .set_permissions(fs::Permissions::from_mode(mode))
                .map_err(failed("setting permissions on", self.temp.path()))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        Ok(())
    }

    /// Sync the data and rename it to `target` instead of the target it was
    /// made for (in the same folder: a name known only once it is written,
    /// such as a digest).
    pub fn commit_as(mut self, target: &Path) -> Result<(), AtomicError> {
        self.target = target.to_path_buf();
        self.commit()
    }

    /// A writer to the (fresh) temporary file that starts the disk on
    /// what it is given as it goes ([`Writeback`]).
    pub fn writer(&self) -> Writeback<'_> {
        Writeback::new(self.file())
    }

    /// Sync the data and rename it into place.
    pub fn commit(self) -> Result<(), AtomicError> {
        self.file()
            .sync_all()
            .map_err(failed("writing", &self.target))?;
        let target = self.rename()?;
        if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = fs::File::open(dir) {
                // Make the rename durable; not all filesystems support it.
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Rename it into place without waiting for the disk, as `docker save`
    /// and buildx's exporters write their archives: a crash or a kill of
    /// kiln still leaves the target whole or as it was (the rename is
    /// atomic); what a power cut leaves is the file system's rule, as for
    /// `docker save`. For outputs handed to the user, not for kiln's own
    /// cache and state.
    ///
    /// A file already at the target is swapped out atomically (Linux's
    /// `RENAME_EXCHANGE`) and then removed: ext4 starts writing a file
    /// renamed over another to disk within the rename, which made
    /// replacing a large archive wait for the disk after all.
    pub fn commit_unsynced(self) -> Result<(), AtomicError> {
        #[cfg(target_os = "linux")]
        let Err(this) = self.exchange() else {
            return Ok(());
        };
        #[cfg(not(target_os = "linux"))]
        let this = self;
        this.rename().map(|_| ())
    }

    /// Swap the file with a regular file at the target, then remove what
    /// was there (now at the temporary name; a kill in between leaves it
    /// as a `.kiln-tmp-*` file the next sweep removes). `Err(self)` when
    /// there is nothing to swap or the file system cannot.
    #[cfg(target_os = "linux")]
    fn exchange(self) -> Result<(), Self> {
        use std::{ffi::CString, os::unix::ffi::OsStrExt};
        if !fs::symlink_metadata(&self.target).is_ok_and(|m| m.file_type().is_file()) {
            return Err(self);
        }
        let (Ok(from), Ok(to)) = (
            CString::new(self.temp.path().as_os_str().as_bytes()),
            CString::new(self.target.as_os_str().as_bytes()),
        ) else {
            return Err(self);
        };
        // SAFETY: both are valid NUL-terminated paths that outlive the call.
        let swapped = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        } == 0;
        if !swapped {
            return Err(self);
        }
        // The temporary name now holds what the target held: dropping the
        // temporary file removes it.
        drop(self.temp);
        Ok(())
    }

    fn rename(self) -> Result<PathBuf, AtomicError> {
        let target = self.target;
        self.temp
            .persist(&target)
            .map_err(|e| failed("replacing", &target)(e.error))?;
        Ok(target)
    }
}

/// A writer to a file written from its start that asks the kernel to
/// begin writing each few MiB to disk as soon as they are given (Linux's
/// `sync_file_range`; elsewhere a plain writer), so that the `fsync` of a
/// commit finds little left to do: the disk works while the build does,
/// not after it.
pub struct Writeback<'a> {
    file: &'a fs::File,
    early: bool,
    written: u64,
    started: u64,
}

impl<'a> Writeback<'a> {
    /// Bytes given to the disk at a time.
    const STEP: u64 = 8 << 20;

    /// A writer to `file`, whose position is its start.
    pub fn new(file: &'a fs::File) -> Self {
        Self {
            file,
            early: true,
            written: 0,
            started: 0,
        }
    }

    /// A plain writer to `file` (for scratch files never synced).
    pub fn plain(file: &'a fs::File) -> Self {
        Self {
            file,
            early: false,
            written: 0,
            started: 0,
        }
    }
}

impl Write for Writeback<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).write(data)?;
        self.written += n as u64;
        if self.early && self.written - self.started >= Self::STEP {
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: a valid open descriptor and a range of it; the call
                // only schedules writeback (failure is harmless: the commit's
                // fsync writes everything anyway).
                unsafe {
                    libc::sync_file_range(
                        self.file.as_raw_fd(),
                        self.started as _,
                        (self.written - self.started) as _,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
            }
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `mode` as a file created by `open(2)` with it gets: the process's
/// umask applied (read from `/proc/self/status`; `022` when unknown). For
/// outputs handed to the user, which [`AtomicFile`]'s private temporary
/// file would otherwise leave `0600`.
pub fn created_mode(mode: u32) -> u32 {
    let umask = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022);
    mode & !umask
}

/// The name every temporary file of process `pid` starts with.
fn temp_prefix(pid: u32) -> String {
    format!("{TEMP_PREFIX}{pid}-")
}

/// Remove what process `pid` left in `dir` when it died before committing
/// or dropping its [`AtomicFile`]s or staging folders (a crashed or killed
/// worker): its temporary files and folders only, never another
/// process's. Best effort.
pub fn remove_leftovers(dir: &Path, pid: u32) {
    let prefix = temp_prefix(pid);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            remove_entry(&entry);
        }
    }
}

/// Remove a file, or a folder and everything below it. Best effort.
fn remove_entry(entry: &fs::DirEntry) {
    let path = entry.path();
    if entry.file_type().is_ok_and(|t| t.is_dir()) {
        let _ = fs::remove_dir_all(&path);
    } else {
        let _ = fs::remove_file(&path);
    }
}

/// Mark `path` as used now (its mtime), so that a cache pruned least
/// recently used first keeps it longest. Best effort.
pub fn touch(path: &Path) {
    if let Ok(f) = fs::File::options().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// For a name `<prefix><pid>-...` (one of `prefixes`): whether process
/// `pid` is alive. `None` for names that carry no pid.
pub fn owner_alive(name: &str, prefixes: &[&str]) -> Option<bool> {
    let pid = prefixes
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .and_then(|rest| rest.split('-').next())
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p > 0)?;
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    Some(alive)
}

/// Remove what processes that are gone (killed, crashed) left in `dir`:
/// every entry named `<prefix><pid>-...` for one of `prefixes` whose process
/// no longer exists (files and folders alike). Entries of live processes,
/// and names that carry no pid, are left alone. Best effort.
pub fn remove_stale(dir: &Path, prefixes: &[&str]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if owner_alive(&name, prefixes) == Some(false) {
            remove_entry(&entry);
        }
    }
}

/// The file that makes a cache folder one item to `kiln cache` (a layer
/// unpacked for overlay mounts): pruned whole or not at all, its size the
/// number the file holds, its last use the file's mtime. A folder holding
/// such a file and a `build-<pid>-*` entry of a live process is in use.
pub const UNIT_MARK: &str = ".kiln-unit";

/// The prefix of every [`AtomicFile`]'s temporary name, for [`remove_stale`].
pub const TEMP_PREFIX: &str = ".kiln-tmp-";

/// Replace `path` with `contents` atomically, with permission bits `mode`.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), AtomicError> {
    written(path, contents, mode)?.commit()
}

/// [`write()`] without waiting for the disk ([`AtomicFile::commit_unsynced`]):
/// for hints and for outputs handed to the user, which Docker writes so
/// too (a sync waits for every file written before it, on ext4).
pub fn write_unsynced(path: &Path, contents: &[u8], mode: u32) -> Result<(), AtomicError> {
    written(path, contents, mode)?.commit_unsynced()
}

fn written(path: &Path, contents: &[u8], mode: u32) -> Result<AtomicFile, AtomicError> {
    let mut file = AtomicFile::beside(path)?;
    file.set_mode(mode)?;
    file.file_mut()
        .write_all(contents)
        .map_err(failed("writing", path))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> usize {
        fs::read_dir(dir)
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".kiln-tmp-"))
            .count()
    }

    #[test]
    fn replaces_contents_and_sets_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.json");
        fs::write(&p, b"old").expect("write");
        write(&p, b"new", 0o600).expect("atomic write");
        assert_eq!(fs::read(&p).expect("read"), b"new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(leftovers(dir.path()), 0, "temp files left behind");
    }

    #[test]
    fn writeback_and_unsynced_commits_keep_every_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("blob");
        // Past several writeback steps, in uneven writes.
        let data: Vec<u8> = (0..(20u32 << 20) + 12345)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let f = AtomicFile::beside(&p).expect("temp");
        {
            let mut w = f.writer();
            for chunk in data.chunks(3 << 20 | 7) {
                w.write_all(chunk).expect("write");
            }
        }
        f.commit_unsynced().expect("commit");
        assert_eq!(fs::read(&p).expect("read"), data);
        write_unsynced(&p, b"hint", 0o600).expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"hint");
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[test]
    fn an_unsynced_commit_replaces_only_a_file_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let commit = |target: &Path, body: &[u8]| {
            let mut f = AtomicFile::beside(target).expect("temp");
            f.file_mut().write_all(body).expect("write");
            f.commit_unsynced()
        };
        // A file there: swapped out and removed; a hard link to the old
        // one still holds the old bytes (it was never written in place).
        let p = dir.path().join("image.tar");
        fs::write(&p, b"old").expect("write");
        let linked = dir.path().join("linked");
        fs::hard_link(&p, &linked).expect("link");
        commit(&p, b"new").expect("commit");
        assert_eq!(fs::read(&p).expect("read"), b"new");
        assert_eq!(fs::read(&linked).expect("read"), b"old");
        // A symlink there is replaced, never followed.
        let l = dir.path().join("l.tar");
        std::os::unix::fs::symlink(&linked, &l).expect("symlink");
        commit(&l, b"other").expect("commit");
        assert!(fs::symlink_metadata(&l).expect("stat").is_file());
        assert_eq!(fs::read(&linked).expect("read"), b"old");
        // A folder there is an error, and the folder is kept whole.
        let d = dir.path().join("d.tar");
        fs::create_dir(&d).expect("mkdir");
        fs::write(d.join("inside"), b"kept").expect("write");
        let e = commit(&d, b"x").expect_err("a folder is not replaced");
        assert!(e.to_string().starts_with("replacing "), "{e}");
        assert_eq!(fs::read(d.join("inside")).expect("read"), b"kept");
        assert_eq!(leftovers(dir.path()), 0);
    }

    #[test]
    fn an_abandoned_file_leaves_the_target_alone_and_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("image.tar");
        fs::write(&p, b"old").expect("write");
        {
            let mut f = AtomicFile::beside(&p).expect("temp");
            f.file_mut().write_all(b"half").expect("write");
            // Dropped without commit: a failed build.
        }
        assert_eq!(fs::read(&p).expect("read"), b"old");
        assert_eq!(leftovers(dir.path()), 0);
        // What a process that died left is removed by its pid, and only it.
        let own = AtomicFile::beside(&p).expect("temp");
        std::mem::forget(own);
        let other = dir.path().join(format!("{}x", temp_prefix(u32::MAX)));
        fs::write(&other, b"another process's").expect("write");
        // A folder being staged (an image's files for `--output type=local`).
        let staged = dir
            .path()
            .join(format!("{}dir", temp_prefix(std::process::id())));
        fs::create_dir_all(staged.join("etc")).expect("mkdir");
        fs::write(staged.join("etc/passwd"), b"root").expect("write");
        assert_eq!(leftovers(dir.path()), 3);
        remove_leftovers(dir.path(), std::process::id());
        assert_eq!(leftovers(dir.path()), 1);
        assert!(!staged.exists());
        assert!(other.is_file());
        let e = AtomicFile::beside(&dir.path().join("missing/x")).expect_err("no folder");
        assert!(e.to_string().contains("creating a temp file in"), "{e}");
    }
}
