//! Which project plugin folders kiln loads. A library in a checkout's
//! `.kiln/plugins` runs code as soon as it is opened (its constructors), so
//! a project folder is searched only when its user trusts it, as git's
//! `safe.directory` and direnv's `allow` do: `kiln init` trusts the project
//! it creates, `kiln plugin trust` any other; a folder owned by another user,
//! or one others may write to, is never searched. Folders named with
//! `--plugins-dir` or `KILN_PLUGINS_DIR`, the user's own folder and kiln's
//! installed plugins are the user's choice and always searched.
//!
//! The trusted folders are kept per user, beside the user's plugins folder:
//! `<data dir>/kiln/trusted-plugin-folders.json`, a JSON list of canonical
//! paths.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// The file listing trusted folders, beside `user_plugins_dir`.
pub fn store_path(user_plugins_dir: Option<&Path>) -> Option<PathBuf> {
    Some(
        user_plugins_dir?
            .parent()?
            .join("trusted-plugin-folders.json"),
    )
}

fn canonical(folder: &Path) -> PathBuf {
    fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf())
}

fn read(store: &Path) -> Vec<PathBuf> {
    fs::read(store)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<PathBuf>>(&b).ok())
        .unwrap_or_default()
}

fn write(store: &Path, list: &[PathBuf]) -> Result<()> {
    if let Some(dir) = store.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    }
    let json = serde_json::to_vec_pretty(list).unwrap_or_default();
    crate::state::write_atomic(store, &json, 0o600)
}

/// Why kiln will not search the project folder `folder`, or `None` when it
/// will: owned by someone else, writable by others, or not trusted.
pub fn refusal(store: Option<&Path>, folder: &Path) -> Option<String> {
    if let Some(why) = ownership_problem(folder) {
        return Some(why);
    }
    let folder = canonical(folder);
    match store {
        Some(store) if read(store).contains(&folder) => None,
        _ => Some(format!(
            "not trusted: a project's plugins run code when loaded; `kiln plugin trust` \
             (in {}) allows them",
            folder
                .parent()
                .and_then(Path::parent)
                .unwrap_or(&folder)
                .display()
        )),
    }
}

/// Whether `folder` (or the `.kiln` holding it) belongs to another user or
/// can be written by anyone: then it is never searched, trusted or not.
pub fn ownership_problem(folder: &Path) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for path in [folder, folder.parent().unwrap_or(folder)] {
        let Ok(meta) = fs::metadata(path) else {
            continue;
        };
        if meta.uid() != me {
            return Some(format!(
                "{} is owned by user id {}, not by you ({me}): never loaded",
                path.display(),
                meta.uid()
            ));
        }
        // World-writable only: a group-writable folder is normal under
        // user-private groups (umask 002).
        if meta.mode() & 0o002 != 0 {
            return Some(format!(
                "{} can be written by any user (mode {:o}): never loaded",
                path.display(),
                meta.mode() & 0o7777
            ));
        }
    }
    None
}

/// Trust `folder` (kept canonical). Returns whether it was new.
pub fn trust(store: &Path, folder: &Path) -> Result<bool> {
    if let Some(why) = ownership_problem(folder) {
        return Err(Error::BadArgument(why));
    }
    let folder = canonical(folder);
    let mut list = read(store);
    if list.contains(&folder) {
        return Ok(false);
    }
    list.push(folder);
    list.sort();
    write(store, &list)?;
    Ok(true)
}

/// Stop trusting `folder`. Returns whether it was trusted.
pub fn untrust(store: &Path, folder: &Path) -> Result<bool> {
    let folder = canonical(folder);
    let mut list = read(store);
    let before = list.len();
    list.retain(|p| *p != folder);
    if list.len() == before {
        return Ok(false);
    }
    write(store, &list)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_folder_is_searched_once_trusted_and_not_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("proj/.kiln/plugins");
        fs::create_dir_all(&folder).expect("mkdir");
        for p in [dir.path().join("proj/.kiln"), folder.clone()] {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let store = dir.path().join("data/trusted.json");
        assert!(refusal(Some(&store), &folder)
            .expect("untrusted")
            .contains("kiln plugin trust"));
        assert!(trust(&store, &folder).expect("trust"));
        assert!(!trust(&store, &folder).expect("again"));
        assert_eq!(refusal(Some(&store), &folder), None);
        assert!(untrust(&store, &folder).expect("untrust"));
        assert!(refusal(Some(&store), &folder).is_some());
        assert!(refusal(None, &folder).is_some());
    }

    #[test]
    fn a_folder_others_can_write_is_never_searched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join(".kiln/plugins");
        fs::create_dir_all(&folder).expect("mkdir");
        fs::set_permissions(dir.path().join(".kiln"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o777)).expect("chmod");
        let store = dir.path().join("trusted.json");
        let err = trust(&store, &folder).expect_err("refused");
        assert!(err.to_string().contains("written by any user"), "{err}");
        assert!(refusal(Some(&store), &folder)
            .expect("refused")
            .contains("never loaded"));
    }
}
