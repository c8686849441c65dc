//! The descriptor cache: what a plugin file said about itself (its name,
//! version, protocol features and flavors with their schemas), kept in
//! kiln's cache folder under the file's identity, so listing flavors opens
//! no library at all when nothing changed.
//!
//! The key is the file's path, device, inode, size, mtime and ctime (all to
//! the nanosecond), with kiln's version and its plugin-api version: a
//! plugin replaced in place, touched, deleted or added is seen on the next
//! run, and a new kiln never reads an old kiln's entries. As git treats
//! "racily clean" index entries, a file changed within the last [`RACY`]
//! (`KILN_PLUGIN_CACHE_RACY_MS`) is not cached (a change within the timestamps'
//! granularity could hide behind an unchanged stat). An entry that does not
//! parse is ignored. Only folders that are searched (trusted) reach here.

use std::{
    path::{Path, PathBuf},
    sync::RwLock,
    time::Duration,
};

use kiln_plugin_api::{FlavorDescriptor, PLUGIN_API_VERSION};
use serde::{Deserialize, Serialize};

/// How recent a change keeps a file out of the cache, unless set.
pub const RACY: Duration = Duration::from_secs(2);

static DIR: RwLock<Option<(PathBuf, Duration)>> = RwLock::new(None);

/// Keep descriptors under `dir` (kiln's cache folder's `plugins/`); a file
/// changed less than `racy` ago is not cached.
pub fn set_dir(dir: &Path, racy: Duration) {
    if let Ok(mut d) = DIR.write() {
        *d = Some((dir.to_path_buf(), racy));
    }
}

fn dir() -> Option<PathBuf> {
    Some(DIR.read().ok()?.as_ref()?.0.clone())
}

fn racy() -> Duration {
    DIR.read()
        .ok()
        .and_then(|d| d.as_ref().map(|d| d.1))
        .unwrap_or(RACY)
}

/// What a plugin said about itself, without the library.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Described {
    /// The name it gives itself.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The plugin-api release it was built against.
    pub api_version: String,
    /// The optional protocol features it implements.
    pub features: Vec<String>,
    /// Its flavors.
    pub flavors: Vec<FlavorDescriptor>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    described: Described,
}

/// The file's identity now, as the key's text; `None` when it cannot be
/// read or changed too recently to be trusted. Taken before a load and
/// given to [`write`] after it, so a file changed meanwhile is not cached.
pub fn identity(path: &Path) -> Option<String> {
    use kiln_archive::identity::{now_ns, Identity};
    let id = Identity::of(&std::fs::metadata(path).ok()?);
    if id.racy(now_ns(), racy().as_nanos() as i128) {
        return None;
    }
    Some(format!(
        "kiln {} plugin-api {PLUGIN_API_VERSION}\0{}\0{id}",
        env!("CARGO_PKG_VERSION"),
        path.display(),
    ))
}

fn entry_path(dir: &Path, path: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let name = format!("{:x}", Sha256::digest(path.as_os_str().as_encoded_bytes()));
    dir.join(&name[..32])
}

/// What `path` said about itself, when the cache holds it for the file as
/// it is now.
pub fn read(path: &Path) -> Option<Described> {
    let dir = dir()?;
    let key = identity(path)?;
    let bytes = std::fs::read(entry_path(&dir, path)).ok()?;
    let entry: Entry = serde_json::from_slice(&bytes).ok()?;
    (entry.key == key).then_some(entry.described)
}

/// Remember what `path`, whose [`identity`] was `key` before it was
/// loaded, said about itself; nothing when the file changed since (best
/// effort: a cache that cannot be written costs the next listing a load).
pub fn write(path: &Path, key: &str, described: &Described) {
    let Some(dir) = dir() else {
        return;
    };
    if identity(path).as_deref() != Some(key) {
        return;
    }
    let entry = Entry {
        key: key.to_string(),
        described: described.clone(),
    };
    let Ok(bytes) = serde_json::to_vec(&entry) else {
        return;
    };
    // Whole or not at all (a rename), but not synced: an entry lost to a
    // crash costs one load, and a listing is not slowed by a sync per file.
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        use std::io::Write;
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(
                "{}{}-",
                kiln_archive::atomic::TEMP_PREFIX,
                std::process::id()
            ))
            .tempfile_in(&dir)?;
        temp.write_all(&bytes)?;
        temp.persist(entry_path(&dir, path)).map_err(|e| e.error)?;
        Ok(())
    });
    if let Err(e) = written {
        tracing::debug!(error = %e, "the descriptor cache could not be written");
    }
}
