//! The image's filesystem, as buildx's `local` and `tar` exporters write
//! it: every layer applied with its whiteouts, written into a folder
//! (`--output type=local,dest=DIR`) or as one tar (`type=tar,dest=FILE`).
//! For an image index, one folder (or top folder of the tar) per platform,
//! named as buildx names them (`linux_amd64`, `linux_arm_v7`).
//!
//! A folder is written beside its destination and renamed into place when
//! whole, so a failure or Ctrl-C leaves nothing; the destination must not
//! exist or be an empty folder (buildx writes into a full one; kiln never
//! mixes an image's files with what a folder held). Set-id bits are
//! dropped in a folder: a host folder is no place for an image's set-uid
//! programs. Owners are kept when kiln runs as root. The tar keeps modes
//! and owners, and every entry's time is the build's epoch.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use kiln_archive::atomic::{AtomicFile, TEMP_PREFIX};
use serde_json::Value;

use super::archive::WriteError;
use crate::image::{write_layer_tar, Artifact, Entry, Image, Kind};

/// buildx's name for the platform of `image` (`linux_amd64`), from its
/// config, with anything but letters, digits, `.`, `-` and `_` replaced: a
/// config is input, and this becomes a path.
fn platform_dir(image: &Image) -> String {
    let config: Value = serde_json::from_slice(&image.config).unwrap_or_default();
    let parts: Vec<&str> = ["os", "architecture", "variant"]
        .iter()
        .filter_map(|k| config.get(*k).and_then(Value::as_str))
        .filter(|v| !v.is_empty())
        .collect();
    let name: String = parts
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match name.trim_matches('.') {
        "" => "unknown".into(),
        n => n.to_string(),
    }
}

/// One image's filesystem and the folder it goes in (none for a single
/// image).
type Placed = (Option<String>, BTreeMap<String, Entry>);

/// The filesystem of each image of `artifact`.
fn trees(artifact: &Artifact) -> Result<Vec<Placed>, String> {
    let images = artifact.images();
    images
        .iter()
        .map(|image| {
            let tree = crate::fs::overlay::filesystem(&image.layers)?;
            let folder = (images.len() > 1).then(|| platform_dir(image));
            Ok((folder, tree))
        })
        .collect()
}

fn other(what: String) -> WriteError {
    WriteError::Other(what)
}

/// A folder being written, removed (made writable first, as a folder the
/// image made read-only would refuse) unless kept.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            remove_all(&dir);
        }
    }
}

/// Remove `dir` and everything below it, making read-only folders
/// writable on the way. Best effort.
fn remove_all(dir: &Path) {
    if std::fs::remove_dir_all(dir).is_ok() {
        return;
    }
    fn writable(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    writable(&e.path());
                }
            }
        }
    }
    writable(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Write the filesystem of `artifact` into the folder `dest` (made, with
/// its parents; it must not exist or be empty).
pub fn write_local(
    artifact: &Artifact,
    dest: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), WriteError> {
    let at = |e: std::io::Error, what: &str, p: &Path| {
        WriteError::from_io(&e, format!("{what} {}: {e}", p.display()))
    };
    let replaces_empty = match std::fs::symlink_metadata(dest) {
        Err(_) => false,
        Ok(m) if m.is_dir() => {
            let empty = std::fs::read_dir(dest)
                .map_err(|e| at(e, "reading", dest))?
                .next()
                .is_none();
            if !empty {
                return Err(other(format!(
                    "{} exists and is not empty: kiln writes an image's files into a new or \
                     empty folder, never among other files",
                    dest.display()
                )));
            }
            true
        }
        Ok(_) => {
            return Err(other(format!(
                "{} exists and is not a folder",
                dest.display()
            )))
        }
    };
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| at(e, "creating", parent))?;
    let trees = trees(artifact).map_err(other)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
        .tempdir_in(parent)
        .map_err(|e| at(e, "creating a folder in", parent))?
        .keep();
    let mut staging = Staging(Some(staging));
    let root = staging.0.clone().unwrap_or_default();
    // SAFETY: geteuid has no preconditions.
    let owners = unsafe { libc::geteuid() } == 0;
    for (folder, tree) in trees {
        if cancelled() {
            return Err(WriteError::Cancelled);
        }
        let into = match &folder {
            Some(f) => {
                let p = root.join(f);
                std::fs::create_dir(&p).map_err(|e| at(e, "creating", &p))?;
                p
            }
            None => root.clone(),
        };
        let tree: BTreeMap<String, Entry> = tree
            .into_iter()
            .map(|(path, mut entry)| {
                entry.mode &= !0o6000;
                (path, entry)
            })
            .collect();
        crate::runtime::rootfs::write_as(&into, &tree, owners).map_err(other)?;
    }
    // The staging folder is private (0700); the folder made is as
    // `mkdir` would make it.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = kiln_archive::atomic::created_mode(0o777);
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(mode))
            .map_err(|e| at(e, "setting permissions on", &root))?;
    }
    if cancelled() {
        return Err(WriteError::Cancelled);
    }
    if replaces_empty {
        std::fs::remove_dir(dest).map_err(|e| at(e, "replacing", dest))?;
    }
    std::fs::rename(&root, dest).map_err(|e| at(e, "renaming the image's files to", dest))?;
    staging.0 = None;
    Ok(())
}

/// Write the filesystem of `artifact` as one tar at `dest`, every entry's
/// time `mtime` (atomically: through a temporary file beside it, renamed
/// when whole).
pub fn write_tar(
    artifact: &Artifact,
    dest: &Path,
    mtime: u64,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), WriteError> {
    let failed =
        |e: std::io::Error| WriteError::from_io(&e, format!("writing {}: {e}", dest.display()));
    let mut all: BTreeMap<String, Entry> = BTreeMap::new();
    for (folder, tree) in trees(artifact).map_err(other)? {
        match folder {
            None => all.extend(tree),
            Some(f) => {
                all.insert(
                    f.clone(),
                    Entry {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    },
                );
                all.extend(tree.into_iter().map(|(p, e)| (format!("{f}/{p}"), e)));
            }
        }
    }
    if cancelled() {
        return Err(WriteError::Cancelled);
    }
    let temp =
        AtomicFile::beside(dest).map_err(|e| WriteError::from_io(&e.source, e.to_string()))?;
    temp.set_mode(kiln_archive::atomic::created_mode(0o666))
        .map_err(|e| WriteError::from_io(&e.source, e.to_string()))?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, temp.file());
        write_layer_tar(&all, mtime, &mut out).map_err(failed)?;
        out.flush().map_err(failed)?;
    }
    if cancelled() {
        return Err(WriteError::Cancelled);
    }
    temp.commit_unsynced()
        .map_err(|e| WriteError::from_io(&e.source, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_folders_are_buildx_names_and_never_paths() {
        let image = |config: &str| Image {
            layers: Vec::new(),
            config: config.as_bytes().to_vec(),
            manifest: Vec::new(),
        };
        assert_eq!(
            platform_dir(&image(r#"{"os":"linux","architecture":"amd64"}"#)),
            "linux_amd64"
        );
        assert_eq!(
            platform_dir(&image(
                r#"{"os":"linux","architecture":"arm","variant":"v7"}"#
            )),
            "linux_arm_v7"
        );
        let hostile = platform_dir(&image(r#"{"os":"../..","architecture":"/etc"}"#));
        assert!(
            !hostile.contains('/') && !hostile.starts_with('.'),
            "{hostile}"
        );
        assert_eq!(platform_dir(&image("not json")), "unknown");
        assert_eq!(platform_dir(&image(r#"{"os":".."}"#)), "unknown");
    }
}
