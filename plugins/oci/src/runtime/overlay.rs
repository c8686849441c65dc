//! A stage's filesystem for `RUN` as an overlay mount, as Docker's overlay2
//! driver and buildah's storage make it: each layer unpacked once into a
//! folder of the cache ([`Snapshots`], kept across builds by the layer's
//! `diff_id`), stacked read-only under a fresh upper folder; the command's
//! changes are then exactly what the upper folder holds (whiteouts as
//! `0/0` character devices, opaque folders by their `trusted.overlay.opaque`
//! attribute), read without walking the whole filesystem.
//!
//! The mount is made in a mount namespace private to the building thread
//! (its mounts vanish with the process, whatever kills it), so nothing is
//! ever left mounted on the machine. Where the kernel or the user's rights
//! do not allow it, `RUN` writes the filesystem out instead ([`super::rootfs`]).

use std::{
    collections::BTreeMap,
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt, fs::FileTypeExt, fs::MetadataExt},
    path::{Path, PathBuf},
};

use crate::{
    fs::tree::remove_under,
    image::{Entry, Kind, Layer},
};

// UNIT_MARK marks a finished snapshot: its mtime is when a build last used
// it, its text the snapshot's size in bytes (for `kiln cache du`); the
// host's cache pruning treats a folder holding one as a single item.
use kiln_archive::atomic::UNIT_MARK;

/// The longest mount option text the kernel takes (a page, less the end).
const MAX_OPTIONS: usize = 4095;

fn c_path(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a NUL in the path", p.display()))
}

fn os_error(what: &str, p: &Path) -> String {
    format!(
        "{what} {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    )
}

thread_local! {
    /// Whether this thread has its own mount namespace (`Some(Err)`: it
    /// could not have one).
    static PRIVATE: std::cell::RefCell<Option<Result<(), String>>> =
        const { std::cell::RefCell::new(None) };
}

/// Give the calling thread a mount namespace of its own, once, whose mounts
/// never reach the machine's (`MS_SLAVE`): the overlay mounts of `RUN` are
/// made there, and the runtime (spawned from this thread) sees them.
fn private_namespace() -> Result<(), String> {
    PRIVATE.with(|state| {
        let mut state = state.borrow_mut();
        if let Some(done) = &*state {
            return done.clone();
        }
        // SAFETY: unshare(2) with CLONE_NEWNS affects only this thread (and
        // the fs information it then stops sharing); mount(2) with null
        // strings and a propagation flag changes only this namespace.
        let done = unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                Err(format!(
                    "a private mount namespace: {}",
                    std::io::Error::last_os_error()
                ))
            } else if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) != 0
            {
                Err(format!(
                    "keeping mounts private: {}",
                    std::io::Error::last_os_error()
                ))
            } else {
                Ok(())
            }
        };
        *state = Some(done.clone());
        done
    })
}

/// A folder of this build under the run folder (`root-<pid>-<n>`, removed
/// by the next build if this one is killed), removed when dropped.
pub struct OwnedDir(PathBuf);

impl OwnedDir {
    /// A new, empty one under `parent`.
    pub fn create(parent: &Path) -> Result<OwnedDir, String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
        let dir = parent.join(format!(
            "root-{}-o{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(OwnedDir(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A layer unpacked in the cache, held by this build: a mark file
/// (`build-<pid>-<n>`) beside it keeps `kiln cache prune` away while it is
/// in use, removed when dropped.
pub struct Held {
    root: PathBuf,
    mark: PathBuf,
}

impl Held {
    /// The layer's files (a lower folder).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.mark);
    }
}

/// Unpacked layers by `diff_id`, in `<cache>/snapshots/<hex>/`: `root/`
/// (the files, whiteouts as overlay has them), [`UNIT_MARK`], and the marks
/// of the builds using it.
pub struct Snapshots {
    dir: PathBuf,
}

fn next_mark(unit: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    unit.join(format!(
        "build-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

impl Snapshots {
    /// The snapshots of the cache at `cache_dir`; what killed builds left
    /// half-made is removed.
    pub fn open(cache_dir: &Path) -> Result<Snapshots, String> {
        let dir = cache_dir.join("snapshots");
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        kiln_archive::atomic::remove_stale(&dir, &[kiln_archive::atomic::TEMP_PREFIX]);
        Ok(Snapshots { dir })
    }

    /// The files of `layer`, unpacked (now, if no build did before).
    pub fn get(&self, layer: &Layer) -> Result<Held, String> {
        let hex = layer
            .diff_id
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("layer {}: no diff_id to keep it by", layer.digest))?;
        let unit = self.dir.join(hex);
        for _ in 0..3 {
            if let Some(held) = Self::hold(&unit) {
                return Ok(held);
            }
            let temp = Self::temp_name(&self.dir, hex);
            if unit.exists() {
                // Not whole (a mark lost to a crash): set aside, then made anew.
                let aside = Self::temp_name(&self.dir, hex);
                if fs::rename(&unit, &aside).is_ok() {
                    let _ = fs::remove_dir_all(&aside);
                }
            }
            let made = Self::make(&temp, layer);
            if let Err(e) = made {
                let _ = fs::remove_dir_all(&temp);
                return Err(e);
            }
            // Another build may have made it first: then its copy is used.
            if fs::rename(&temp, &unit).is_err() {
                let _ = fs::remove_dir_all(&temp);
            }
        }
        Err(format!(
            "layer {}: its unpacked copy in {} keeps vanishing",
            layer.digest,
            unit.display()
        ))
    }

    /// A name for a folder being made or removed (`.kiln-tmp-<pid>-<n>-<hex>`).
    fn temp_name(dir: &Path, hex: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        dir.join(format!(
            "{}{}-{}-{hex}",
            kiln_archive::atomic::TEMP_PREFIX,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ))
    }

    /// Mark `unit` as used by this build, if it is whole.
    fn hold(unit: &Path) -> Option<Held> {
        let done = unit.join(UNIT_MARK);
        if !done.is_file() {
            return None;
        }
        kiln_archive::atomic::remove_stale(unit, &["build-"]);
        let mark = next_mark(unit);
        fs::File::create(&mark).ok()?;
        // Pruned between the check and the mark: not whole any more.
        if !done.is_file() {
            let _ = fs::remove_file(&mark);
            return None;
        }
        kiln_archive::atomic::touch(&done);
        Some(Held {
            root: unit.join("root"),
            mark,
        })
    }

    /// Unpack `layer` into `temp/root`, synced, with its unit mark.
    fn make(temp: &Path, layer: &Layer) -> Result<(), String> {
        let root = temp.join("root");
        fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let changes = crate::fs::overlay::changes(layer, None)?;
        super::rootfs::write(&root, &changes.entries)?;
        // Never through a link the layer holds: it may point anywhere on
        // this machine.
        let mut checked = std::collections::HashSet::new();
        for path in changes.whiteouts {
            super::rootfs::no_link_above(&root, &path, &mut checked)
                .map_err(|e| format!("layer {}: {e}", layer.digest))?;
            let p = crate::fs::name::on_disk(&root, &path);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            if p.symlink_metadata().is_ok() {
                continue; // the layer also holds it: its own entry wins
            }
            let c = c_path(&p)?;
            // SAFETY: mknod(2) on a NUL-terminated path; a 0/0 character
            // device is overlayfs's whiteout.
            if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) } != 0 {
                return Err(os_error("making the whiteout", &p));
            }
        }
        for dir in changes.opaque {
            super::rootfs::no_link_above(&root, &format!("{dir}/.wh..wh..opq"), &mut checked)
                .map_err(|e| format!("layer {}: {e}", layer.digest))?;
            let p = crate::fs::name::on_disk(&root, &dir);
            if p.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                return Err(format!(
                    "layer {}: /{dir} is marked opaque but is not a folder",
                    layer.digest
                ));
            }
            fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
            set_opaque(&p)?;
        }
        let size = tree_size(&root);
        // The whole snapshot on disk before it is named: a crash must not
        // leave a unit whose files are empty.
        if let Ok(f) = fs::File::open(&root) {
            use std::os::fd::AsRawFd;
            // SAFETY: syncfs(2) on an open descriptor.
            unsafe { libc::syncfs(f.as_raw_fd()) };
        }
        fs::write(temp.join(UNIT_MARK), size.to_string())
            .map_err(|e| format!("writing {}: {e}", temp.display()))?;
        Ok(())
    }
}

fn set_opaque(p: &Path) -> Result<(), String> {
    let c = c_path(p)?;
    // SAFETY: lsetxattr(2) with NUL-terminated name and path and a 1-byte value.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    if rc != 0 {
        return Err(os_error("marking opaque", p));
    }
    Ok(())
}

fn is_opaque(p: &Path) -> bool {
    let Ok(c) = c_path(p) else { return false };
    let mut value = [0u8; 4];
    // SAFETY: lgetxattr(2) into a buffer of the length given.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// The bytes of the files below `root` (what `du` would roughly say).
fn tree_size(root: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total += meta.len();
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

/// A folder a stage's overlay stacks: a layer unpacked in the cache, or
/// a folder of this build (the files `COPY` added since the last `RUN`, a
/// `RUN`'s upper folder).
pub struct Lower {
    path: PathBuf,
    /// What keeps the folder: its mark in the cache, or the folder itself.
    _held: Option<Held>,
    _own: Option<OwnedDir>,
}

impl Lower {
    /// A snapshot held.
    pub fn held(held: Held) -> Lower {
        Lower {
            path: held.root().to_path_buf(),
            _held: Some(held),
            _own: None,
        }
    }

    /// `files` written to a new folder of this build under `parent`.
    pub fn written(parent: &Path, files: &BTreeMap<String, Entry>) -> Result<Lower, String> {
        let dir = OwnedDir::create(parent)?;
        super::rootfs::write(dir.path(), files)?;
        Ok(Lower {
            path: dir.path().to_path_buf(),
            _held: None,
            _own: Some(dir),
        })
    }
}

/// A stage's lower folders, bottom first, and how many of its layers they
/// hold.
pub struct Stack {
    /// The folders.
    pub lowers: Vec<Lower>,
    /// How many of the stage's layers they reflect.
    pub layers: usize,
}

/// An overlay mount of a stage for one `RUN`: `upper/` over the lower
/// folders, seen at `merged/`, in a folder of this build. Unmounted (and
/// the folder removed) when dropped.
pub struct Mounted {
    dir: Option<OwnedDir>,
    merged: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mounted: bool,
}

impl Mounted {
    /// Mount `stack` under a new upper folder in a new folder of `parent`.
    pub fn mount(parent: &Path, stack: &Stack) -> Result<Mounted, String> {
        let lowers: Vec<&Path> = stack
            .lowers
            .iter()
            .rev()
            .map(|l| l.path.as_path())
            .collect();
        Self::mount_paths(parent, &lowers)
    }

    fn mount_paths(parent: &Path, lowers: &[&Path]) -> Result<Mounted, String> {
        private_namespace()?;
        let dir = OwnedDir::create(parent)?;
        let empty = dir.path().join("empty");
        let mut m = Mounted {
            merged: dir.path().join("merged"),
            upper: dir.path().join("upper"),
            work: dir.path().join("work"),
            dir: Some(dir),
            mounted: false,
        };
        for d in [&m.merged, &m.upper, &m.work] {
            fs::create_dir(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let mut lower_list: Vec<String> = Vec::new();
        for l in lowers {
            lower_list.push(escape(l)?);
        }
        // A stage from scratch still needs one lower folder.
        if lower_list.is_empty() {
            fs::create_dir(&empty).map_err(|e| format!("creating {}: {e}", empty.display()))?;
            lower_list.push(escape(&empty)?);
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off",
            lower_list.join(":"),
            escape(&m.upper)?,
            escape(&m.work)?
        );
        if options.len() > MAX_OPTIONS {
            return Err(format!(
                "{} layers make a mount option longer than the kernel takes",
                lowers.len()
            ));
        }
        let target = c_path(&m.merged)?;
        let data = CString::new(options).map_err(|_| "a NUL in a mount option".to_string())?;
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(os_error("mounting an overlay at", &m.merged));
        }
        m.mounted = true;
        Ok(m)
    }

    /// Where the stage's files are seen.
    pub fn merged(&self) -> &Path {
        &self.merged
    }

    /// What the command changed.
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    fn unmount(&mut self) -> Result<(), String> {
        if self.mounted {
            let c = c_path(&self.merged)?;
            // SAFETY: umount2(2) on a NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                return Err(os_error("unmounting", &self.merged));
            }
            self.mounted = false;
        }
        let _ = fs::remove_dir_all(&self.work);
        let _ = fs::remove_dir(&self.merged);
        Ok(())
    }

    /// Unmount; the upper folder becomes a lower one for later `RUN`s.
    pub fn into_lower(mut self) -> Result<Lower, String> {
        self.unmount()?;
        let dir = self
            .dir
            .take()
            .ok_or_else(|| "an overlay without its folder".to_string())?;
        Ok(Lower {
            path: self.upper.clone(),
            _held: None,
            _own: Some(dir),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Never remove the folder while it is mounted: that would reach
        // into the lower folders.
        if self.unmount().is_err() {
            if let Some(dir) = self.dir.take() {
                std::mem::forget(dir);
            }
        }
    }
}

/// A path as a mount option holds it (`,` and `:` and `\` escaped).
fn escape(p: &Path) -> Result<String, String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("{}: not UTF-8", p.display()))?;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

/// Whether overlay mounts work here (asked once per process, by mounting
/// one in a scratch folder under `parent`).
pub fn available(parent: &Path) -> Result<(), String> {
    static ANSWER: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let dir = OwnedDir::create(parent)?;
            let lower = dir.path().join("lower");
            fs::create_dir(&lower).map_err(|e| format!("creating {}: {e}", lower.display()))?;
            let probe = lower.join("w");
            let c = c_path(&probe)?;
            // SAFETY: mknod(2) on a NUL-terminated path.
            if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) } != 0 {
                return Err(os_error("making a whiteout", &probe));
            }
            set_opaque(&lower)?;
            let m = Mounted::mount_paths(dir.path(), &[&lower])?;
            let seen = fs::read_dir(m.merged()).map(|d| d.count());
            m.into_lower()?;
            match seen {
                Ok(0) => Ok(()),
                _ => Err("the overlay showed a whiteout as a file".to_string()),
            }
        })
        .clone()
}

/// The stage's files after a command, from those before it and what the
/// overlay's upper folder holds: every entry of `upper` applied over
/// `before` (a whiteout removes, an opaque folder hides what was below).
/// Files are read into a scratch file, as [`super::rootfs::read`] does.
pub fn after(
    before: &BTreeMap<String, Entry>,
    upper: &Path,
) -> Result<BTreeMap<String, Entry>, String> {
    let mut after = before.clone();
    let mut spool = super::rootfs::Spool::default();
    let mut found = super::rootfs::below(upper)?;
    // Folders before what they hold.
    found.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, p, meta) in found {
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            after.remove(&path);
            remove_under(&mut after, &path);
            continue;
        }
        // Sockets, FIFOs and devices a command made stay out of the layer,
        // as when the filesystem is written out.
        let Some(entry) = super::rootfs::entry_of(&p, &meta, &mut spool)? else {
            continue;
        };
        if matches!(entry.kind, Kind::Dir) {
            if is_opaque(&p) {
                remove_under(&mut after, &path);
            }
        } else {
            remove_under(&mut after, &path);
        }
        after.insert(path, entry);
    }
    Ok(after)
}

/// Remove from `upper` what the layer left out (`dropped`: the runtime's
/// mount points), deepest first, so that the folder serves as the layer's
/// files under later `RUN`s.
pub fn prune_upper(upper: &Path, dropped: &[String]) {
    let mut paths: Vec<&String> = dropped.iter().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    let mut checked = std::collections::HashSet::new();
    for path in paths {
        if super::rootfs::no_link_above(upper, path, &mut checked).is_err() {
            continue;
        }
        let p = crate::fs::name::on_disk(upper, path);
        if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            let _ = fs::remove_dir(&p);
        } else {
            let _ = fs::remove_file(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{layer_tar, sha256};

    fn layer(entries: &[(&str, Kind)]) -> Layer {
        let tree: BTreeMap<String, Entry> = entries
            .iter()
            .map(|(p, kind)| {
                (
                    p.to_string(),
                    Entry {
                        kind: kind.clone(),
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    },
                )
            })
            .collect();
        let tar = layer_tar(&tree, 0).expect("tar");
        Layer::compress(&tar, sha256(&tar)).expect("gzip")
    }

    #[test]
    fn a_whiteout_or_opaque_marker_below_a_link_is_refused() {
        let outside = tempfile::tempdir().expect("outside");
        let target = outside.path().to_string_lossy().into_owned();
        let empty = || Kind::File(crate::data::Data::default());
        for marker in ["a/.wh.planted", "a/sub/.wh..wh..opq"] {
            let hostile = layer(&[("a", Kind::Symlink(target.clone())), (marker, empty())]);
            let dir = tempfile::tempdir().expect("tempdir");
            let e = Snapshots::make(dir.path(), &hostile).expect_err("through the link");
            assert!(e.contains("symbolic link /a"), "{e}");
            assert_eq!(
                fs::read_dir(outside.path()).expect("outside").count(),
                0,
                "something was made outside"
            );
        }
    }

    #[test]
    fn mount_options_escape_separators() {
        assert_eq!(
            escape(Path::new("/a,b:c\\d")).expect("utf8"),
            "/a\\,b\\:c\\\\d"
        );
    }
}
