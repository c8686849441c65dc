//! A stage's filesystem on disk for a command to run on, read back after,
//! and the difference as the entries of one layer.
//!
//! Files, folders and symbolic links, with their modes and owners, as the
//! builder's trees hold them ([`Entry`]). Hard links the command makes are
//! read as separate files; sockets, FIFOs and devices it makes are left out.
//! Times are not compared (a layer's times are the build's epoch), so a
//! command that only touches a file changes nothing.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::{
    data::Data,
    fs::name,
    image::{Entry, Kind},
};

/// Refuse to touch `path` (relative to `root`) through a symbolic link: a
/// link an image or a command made may point anywhere on this machine.
/// Folders found real are remembered in `checked`.
pub(crate) fn no_link_above(
    root: &Path,
    path: &str,
    checked: &mut std::collections::HashSet<String>,
) -> Result<(), String> {
    let Some((parents, _)) = path.rsplit_once('/') else {
        return Ok(());
    };
    let mut end = 0;
    for part in parents.split('/') {
        end += part.len();
        let prefix = &parents[..end];
        end += 1;
        if checked.contains(prefix) {
            continue;
        }
        match fs::symlink_metadata(name::on_disk(root, prefix)) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "/{} is below the symbolic link /{}: kiln does not write through links in \
                     an image",
                    name::shown(path),
                    name::shown(prefix)
                ))
            }
            Ok(m) if !m.is_dir() => {
                return Err(format!(
                    "/{} is below /{}, which is not a folder",
                    name::shown(path),
                    name::shown(prefix)
                ))
            }
            // Missing folders are made as real ones.
            _ => {
                checked.insert(prefix.to_string());
            }
        }
    }
    Ok(())
}

/// Write `tree` below `root` (which exists and is empty, or holds what an
/// earlier write put there), never through a symbolic link.
pub fn write(root: &Path, tree: &BTreeMap<String, Entry>) -> Result<(), String> {
    write_as(root, tree, true)
}

/// [`write()`], giving entries their owners only when `owners` (a process
/// that is not root cannot; its files are its own, as buildx's `local`
/// output leaves them).
pub fn write_as(root: &Path, tree: &BTreeMap<String, Entry>, owners: bool) -> Result<(), String> {
    let failed = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    // Folders' modes last: a read-only folder must still take its files.
    let mut dirs = Vec::new();
    let mut checked = std::collections::HashSet::new();
    for (path, entry) in tree {
        no_link_above(root, path, &mut checked)?;
        let p = name::on_disk(root, path);
        if let Some(parent) = p.parent() {
            if !parent.exists() {
                fs::create_dir_all(parent).map_err(|e| failed("creating", parent, e))?;
            }
        }
        match &entry.kind {
            Kind::Dir => {
                if !p.is_dir() {
                    fs::create_dir(&p).map_err(|e| failed("creating", &p, e))?;
                }
                dirs.push((p, entry));
                continue;
            }
            Kind::File(data) => fs::File::create(&p)
                .and_then(|mut f| data.write_to_file(&mut f))
                .map_err(|e| failed("writing", &p, e))?,
            Kind::Symlink(target) => {
                symlink(name::to_os(target), &p).map_err(|e| failed("linking", &p, e))?
            }
        }
        // Owner first: chown clears set-id bits.
        if owners {
            lchown(&p, Some(entry.uid as u32), Some(entry.gid as u32))
                .map_err(|e| failed("chown", &p, e))?;
        }
        if !matches!(entry.kind, Kind::Symlink(_)) {
            fs::set_permissions(&p, fs::Permissions::from_mode(entry.mode & 0o7777))
                .map_err(|e| failed("chmod", &p, e))?;
        }
    }
    for (p, entry) in dirs.into_iter().rev() {
        if owners {
            lchown(&p, Some(entry.uid as u32), Some(entry.gid as u32))
                .map_err(|e| failed("chown", &p, e))?;
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(entry.mode & 0o7777))
            .map_err(|e| failed("chmod", &p, e))?;
    }
    Ok(())
}

/// Where a walk keeps the files it reads: one unnamed scratch file they
/// are copied into (by the kernel), each file a range of it, so a command
/// that wrote gigabytes costs disk, not memory.
#[derive(Default)]
pub(crate) struct Spool {
    file: Option<std::sync::Arc<fs::File>>,
    len: u64,
}

impl Spool {
    /// Copy the file at `path` in; its contents as a range of the spool.
    pub(crate) fn add(&mut self, path: &Path) -> std::io::Result<Data> {
        let file = match &self.file {
            Some(f) => f.clone(),
            None => {
                let f = std::sync::Arc::new(
                    crate::store::scratch_file().map_err(std::io::Error::other)?,
                );
                self.file = Some(f.clone());
                f
            }
        };
        let mut from = fs::File::open(path)?;
        let n = std::io::copy(&mut from, &mut &*file)?;
        let data = Data::File {
            file,
            offset: self.len,
            len: n,
        };
        self.len += n;
        Ok(data)
    }
}

/// Everything below `root`, as a tree (paths relative, no leading `/`).
pub fn read(root: &Path) -> Result<BTreeMap<String, Entry>, String> {
    walk(root, |_, _| None).map(|(tree, _)| tree)
}

/// Each path's [`Stat`].
type Stats = HashMap<String, Stat>;

/// Walk `root`: every entry with its [`Stat`]; `known` may answer an
/// entry (a file whose metadata did not change) without reading it.
fn walk(
    root: &Path,
    known: impl Fn(&str, &Stat) -> Option<Entry>,
) -> Result<(BTreeMap<String, Entry>, Stats), String> {
    let mut tree = BTreeMap::new();
    let mut stats = HashMap::new();
    let mut spool = Spool::default();
    for (path, p, meta) in below(root)? {
        let stat = stat_of(&meta);
        let e = match known(&path, &stat) {
            Some(e) => e,
            None => match entry_of(&p, &meta, &mut spool)? {
                Some(e) => e,
                None => continue, // sockets, FIFOs, devices
            },
        };
        stats.insert(path.clone(), stat);
        tree.insert(path, e);
    }
    Ok((tree, stats))
}

/// Every entry below `root`: its path (relative, no leading `/`), where it
/// is, its metadata (of a link, not its target). Names that are not UTF-8
/// are kept exactly ([`name`]).
pub(crate) fn below(root: &Path) -> Result<Vec<(String, PathBuf, fs::Metadata)>, String> {
    let mut out = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
            let os_name = entry.file_name();
            let key = name::of_os(&os_name);
            let path = if prefix.is_empty() {
                key.into_owned()
            } else {
                format!("{prefix}/{key}")
            };
            let p = entry.path();
            let meta = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            if meta.is_dir() {
                pending.push((p.clone(), path.clone()));
            }
            out.push((path, p, meta));
        }
    }
    Ok(out)
}

/// The entry for the file, folder or link at `p` (a file's contents copied
/// into `spool`); `None` for sockets, FIFOs and devices, which a layer
/// made here leaves out.
pub(crate) fn entry_of(
    p: &Path,
    meta: &fs::Metadata,
    spool: &mut Spool,
) -> Result<Option<Entry>, String> {
    let kind = if meta.file_type().is_symlink() {
        let target = fs::read_link(p).map_err(|e| format!("{}: {e}", p.display()))?;
        Kind::Symlink(name::of_os(target.as_os_str()).into_owned())
    } else if meta.is_dir() {
        Kind::Dir
    } else if meta.is_file() {
        let data = spool
            .add(p)
            .map_err(|e| format!("reading {}: {e}", p.display()))?;
        Kind::File(data)
    } else {
        return Ok(None);
    };
    Ok(Some(Entry {
        kind,
        mode: meta.mode() & 0o7777,
        uid: u64::from(meta.uid()),
        gid: u64::from(meta.gid()),
    }))
}

/// What a file's metadata says about whether it changed (git's index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    id: kiln_archive::identity::Identity,
    mode: u32,
    uid: u32,
    gid: u32,
}

fn stat_of(meta: &fs::Metadata) -> Stat {
    Stat {
        id: kiln_archive::identity::Identity::of(meta),
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
    }
}

/// A stage's filesystem kept on disk between its `RUN`s: the first one
/// writes it all; later ones write only what `COPY` added since, and read
/// back only files whose metadata changed. Removed when dropped (its
/// folder is an [`super::overlay::OwnedDir`]).
pub struct DiskRoot {
    dir: super::overlay::OwnedDir,
    stats: Stats,
    /// What is on disk (mount points the runtime made included).
    pub tree: BTreeMap<String, Entry>,
    /// How many of the stage's layers it reflects.
    pub layers: usize,
}

impl DiskRoot {
    /// Write `tree` to a new folder `root-<pid>-<n>` under `parent`.
    pub fn create(parent: &Path, tree: &BTreeMap<String, Entry>) -> Result<DiskRoot, String> {
        let dir = super::overlay::OwnedDir::create(parent)?;
        let mut root = DiskRoot {
            dir,
            stats: HashMap::new(),
            tree: BTreeMap::new(),
            layers: 0,
        };
        write(root.dir.path(), tree)?;
        root.tree = tree.clone();
        for path in tree.keys() {
            if let Ok(meta) = fs::symlink_metadata(name::on_disk(root.dir.path(), path)) {
                root.stats.insert(path.clone(), stat_of(&meta));
            }
        }
        Ok(root)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Write `added` (files a `COPY` made, folders `WORKDIR` needs) over
    /// what is there.
    pub fn apply(&mut self, added: &BTreeMap<String, Entry>) -> Result<(), String> {
        let mut checked = std::collections::HashSet::new();
        for (path, entry) in added {
            no_link_above(self.dir.path(), path, &mut checked)?;
            let p = name::on_disk(self.dir.path(), path);
            if let Ok(meta) = fs::symlink_metadata(&p) {
                let keep_dir = meta.is_dir() && matches!(entry.kind, Kind::Dir);
                if meta.is_dir() && !keep_dir {
                    fs::remove_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                } else if !meta.is_dir() {
                    fs::remove_file(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                }
            }
            if !matches!(entry.kind, Kind::Dir) {
                crate::fs::tree::remove_under(&mut self.tree, path);
            }
            self.tree.insert(path.clone(), entry.clone());
        }
        write(self.dir.path(), added)?;
        for path in added.keys() {
            if let Ok(meta) = fs::symlink_metadata(name::on_disk(self.dir.path(), path)) {
                self.stats.insert(path.clone(), stat_of(&meta));
            }
        }
        Ok(())
    }

    /// Read what is on disk now, reusing the contents of every file whose
    /// metadata did not change.
    pub fn rescan(&mut self) -> Result<BTreeMap<String, Entry>, String> {
        let (tree, stats) = walk(self.dir.path(), |path, stat| {
            (self.stats.get(path) == Some(stat))
                .then(|| self.tree.get(path).cloned())
                .flatten()
        })?;
        self.stats = stats;
        self.tree = tree.clone();
        Ok(tree)
    }
}

/// Remove what builds that ended without cleaning up (killed, crashed)
/// left in `parent`: `root-PID-*` and `kiln-PID-*` of processes that are
/// gone.
pub fn remove_stale(parent: &Path) {
    kiln_archive::atomic::remove_stale(parent, &["root-", "kiln-"]);
}

/// Leave out of `after` what the runtime made only to mount on (`targets`,
/// absent `before`, still empty), and folders made only to hold them; the
/// paths left out.
pub fn drop_mount_targets(
    before: &BTreeMap<String, Entry>,
    after: &mut BTreeMap<String, Entry>,
    targets: &[&str],
) -> Vec<String> {
    let mut dropped = Vec::new();
    let mut candidates: BTreeSet<String> = BTreeSet::new();
    for t in targets {
        let mut path = *t;
        loop {
            candidates.insert(path.to_string());
            match path.rsplit_once('/') {
                Some((parent, _)) => path = parent,
                None => break,
            }
        }
    }
    // Deepest first, so a folder is empty once its mount targets are gone.
    let mut ordered: Vec<String> = candidates.into_iter().collect();
    ordered.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for path in ordered {
        if before.contains_key(&path) {
            continue;
        }
        let empty = match after.get(&path).map(|e| &e.kind) {
            Some(Kind::File(d)) => d.is_empty(),
            Some(Kind::Dir) => !has_children(after, &path),
            _ => false,
        };
        if empty {
            after.remove(&path);
            dropped.push(path);
        }
    }
    dropped
}

/// Whether `path` (absolute) names something in `tree`, following symbolic
/// links on the way as the kernel would (`/bin` -> `usr/bin` in merged-usr
/// images), at most 40 of them.
pub fn exists(tree: &BTreeMap<String, Entry>, path: &str) -> bool {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut at: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => {}
        }
        at.push(part);
        let key = at.join("/");
        match tree.get(&key).map(|e| &e.kind) {
            // A folder the tree holds only through what is below it.
            None if has_children(tree, &key) => {}
            None => return false,
            Some(Kind::Symlink(target)) => {
                links += 1;
                if links > 40 {
                    return false;
                }
                at.pop();
                if target.starts_with('/') {
                    at.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|p| !p.is_empty())
                        .rev()
                        .map(str::to_string),
                );
            }
            Some(_) => {}
        }
    }
    true
}

fn has_children(tree: &BTreeMap<String, Entry>, path: &str) -> bool {
    let prefix = format!("{path}/");
    tree.range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

fn parent_of(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

fn whiteout(parent: Option<&str>, name: &str) -> String {
    match parent {
        Some(p) => format!("{p}/{name}"),
        None => name.to_string(),
    }
}

/// The layer that takes `before` to `after`: what was added or changed,
/// with the folders above it as they are in `after`; a whiteout
/// (`.wh.NAME`) for each thing removed whose folder remains; an opaque
/// marker (`.wh..wh..opq`) for a folder that remains but lost everything
/// it held.
pub fn diff(
    before: &BTreeMap<String, Entry>,
    after: &BTreeMap<String, Entry>,
) -> BTreeMap<String, Entry> {
    let mut layer: BTreeMap<String, Entry> = BTreeMap::new();
    for (path, entry) in after {
        if !before.get(path).is_some_and(|b| same(b, entry)) {
            layer.insert(path.clone(), entry.clone());
        }
    }
    // The folders above each change, with their own metadata (a layer that
    // wrote /tmp/x must not reset /tmp's mode).
    let changed: Vec<String> = layer.keys().cloned().collect();
    for path in changed {
        let mut p = path.as_str();
        while let Some(parent) = parent_of(p) {
            if let Some(e) = after.get(parent) {
                layer.entry(parent.to_string()).or_insert_with(|| e.clone());
            }
            p = parent;
        }
    }
    let removed: Vec<&String> = before.keys().filter(|p| !after.contains_key(*p)).collect();
    let removed_set: BTreeSet<&str> = removed.iter().map(|p| p.as_str()).collect();
    // Folders that remain (as folders) and lost every child they had.
    let mut opaque: BTreeSet<String> = BTreeSet::new();
    for path in &removed {
        if let Some(parent) = parent_of(path) {
            let remains = matches!(after.get(parent).map(|e| &e.kind), Some(Kind::Dir))
                && matches!(before.get(parent).map(|e| &e.kind), Some(Kind::Dir));
            if remains && !opaque.contains(parent) {
                let prefix = format!("{parent}/");
                let kept_any = before
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .any(|(k, _)| after.contains_key(k));
                if !kept_any {
                    opaque.insert(parent.to_string());
                }
            }
        }
    }
    let dir_entry = |p: &str| after.get(p).cloned();
    for dir in &opaque {
        if let Some(e) = dir_entry(dir) {
            layer.entry(dir.clone()).or_insert(e);
        }
        layer.insert(format!("{dir}/.wh..wh..opq"), whiteout_entry());
    }
    for path in removed {
        let parent = parent_of(path);
        // Covered by a removed folder above, an opaque folder, or a
        // folder replaced by something that is not a folder.
        let mut covered = false;
        let mut p = path.as_str();
        while let Some(up) = parent_of(p) {
            if removed_set.contains(up)
                || opaque.contains(up)
                || matches!(after.get(up).map(|e| &e.kind), Some(k) if !matches!(k, Kind::Dir))
            {
                covered = true;
                break;
            }
            p = up;
        }
        if covered {
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        layer.insert(whiteout(parent, &format!(".wh.{name}")), whiteout_entry());
    }
    layer
}

/// Whether two entries are the same to a layer: a symbolic link's mode
/// means nothing (layers record it as 0777 or anything else).
fn same(a: &Entry, b: &Entry) -> bool {
    let owner = a.uid == b.uid && a.gid == b.gid;
    match (&a.kind, &b.kind) {
        (Kind::Symlink(x), Kind::Symlink(y)) => x == y && owner,
        _ => a.kind == b.kind && owner && a.mode & 0o7777 == b.mode & 0o7777,
    }
}

fn whiteout_entry() -> Entry {
    Entry {
        kind: Kind::File(Data::default()),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str) -> Entry {
        Entry {
            kind: Kind::File(Data::from(data.to_string())),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    fn dir(mode: u32) -> Entry {
        Entry {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    fn tree(entries: &[(&str, Entry)]) -> BTreeMap<String, Entry> {
        entries
            .iter()
            .map(|(p, e)| (p.to_string(), e.clone()))
            .collect()
    }

    #[test]
    fn nothing_is_written_or_removed_through_a_symbolic_link() {
        let outside = tempfile::tempdir().expect("tempdir");
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "host file").expect("write");
        let link = Entry {
            kind: Kind::Symlink(outside.path().to_string_lossy().into_owned()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        };
        // A layer that puts a file below its own link.
        let parent = tempfile::tempdir().expect("tempdir");
        let hostile = tree(&[("a", link.clone()), ("a/victim", file("owned"))]);
        let e = DiskRoot::create(parent.path(), &hostile)
            .err()
            .expect("refused");
        assert!(e.contains("below the symbolic link /a"), "{e}");
        // A link on disk (a command made it), then a COPY below it.
        let mut root = DiskRoot::create(parent.path(), &tree(&[("a", link)])).expect("root");
        let e = root
            .apply(&tree(&[("a/victim", file("owned"))]))
            .expect_err("refused");
        assert!(e.contains("below the symbolic link /a"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "host file");
    }

    #[test]
    fn additions_changes_deletions_and_opaque_folders() {
        let before = tree(&[
            ("etc", dir(0o755)),
            ("etc/a", file("1")),
            ("etc/b", file("2")),
            ("tmp", dir(0o1777)),
            ("var", dir(0o755)),
            ("var/cache", dir(0o755)),
            ("var/cache/x", file("3")),
            ("var/cache/y", file("4")),
            ("old", dir(0o755)),
            ("old/deep", file("5")),
        ]);
        let after = tree(&[
            ("etc", dir(0o755)),
            ("etc/a", file("changed")),
            ("tmp", dir(0o1777)),
            ("tmp/new", file("6")),
            ("var", dir(0o755)),
            ("var/cache", dir(0o755)),
        ]);
        let layer = diff(&before, &after);
        let keys: Vec<&str> = layer.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                ".wh.old",
                "etc",
                "etc/.wh.b",
                "etc/a",
                "tmp",
                "tmp/new",
                "var/cache",
                "var/cache/.wh..wh..opq",
            ]
        );
        // The folder above a change keeps its mode.
        assert_eq!(layer["tmp"].mode, 0o1777);
    }

    #[test]
    fn paths_resolve_through_symbolic_links() {
        let link = |t: &str| Entry {
            kind: Kind::Symlink(t.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        };
        let t = tree(&[
            ("bin", link("usr/bin")),
            ("usr", dir(0o755)),
            ("usr/bin", dir(0o755)),
            ("usr/bin/dash", file("")),
            ("usr/bin/sh", link("dash")),
            ("loop", link("/loop")),
        ]);
        assert!(exists(&t, "/bin/sh"));
        // Folders implied by the files below them.
        let implied = tree(&[("opt/tool/run", file(""))]);
        assert!(exists(&implied, "/opt/tool/run") && !exists(&implied, "/opt/other"));
        assert!(exists(&t, "/usr/bin/../bin/dash"));
        assert!(!exists(&t, "/bin/bash"));
        assert!(!exists(&t, "/loop/x"));
    }

    #[test]
    fn write_then_read_round_trips_and_mount_targets_are_dropped() {
        let root = tempfile::tempdir().expect("tmp");
        let t = tree(&[
            ("bin", dir(0o755)),
            ("bin/sh", file("#!")),
            (
                "bin/ls",
                Entry {
                    kind: Kind::Symlink("sh".into()),
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                },
            ),
            ("ro", dir(0o555)),
            ("ro/f", file("x")),
        ]);
        write(root.path(), &t).expect("write");
        let mut back = read(root.path()).expect("read");
        assert_eq!(back, t);
        // What a runtime makes to mount on is not a change.
        fs::create_dir_all(root.path().join("proc")).expect("proc");
        fs::create_dir_all(root.path().join("etc")).expect("etc");
        fs::write(root.path().join("etc/resolv.conf"), "").expect("resolv");
        back = read(root.path()).expect("read");
        drop_mount_targets(&t, &mut back, crate::runtime::spec::MOUNT_TARGETS);
        assert_eq!(back, t);
    }
}
