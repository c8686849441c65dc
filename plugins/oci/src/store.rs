//! The builder's content-addressed cache:
//!
//! - `blobs/sha256/<hex>`: blobs by digest (layers made, base image blobs);
//! - `diffids/<format>/<hex>`: for each layer this builder made, its `diff_id` to
//!   its blob's digest and size, so a layer whose tar is unchanged is not
//!   compressed again;
//! - `recipes/<format>/<hex>`: a layer's recipe (the context archive's sha1, where
//!   each file's bytes sit in it, every path and its metadata) to its
//!   `diff_id`, so an unchanged `COPY` from an unchanged context finds its
//!   layer without building or hashing the tar at all.
//!
//! Every write goes through a temporary file renamed into place (a file is
//! never changed in place, so mapping one is safe). Layer blobs are mapped,
//! not read, and checked against their recorded size; base blobs are
//! checked against their digest. A torn or altered file is ignored.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use kiln_archive::atomic::AtomicFile;

use crate::image::{media, sha256, Layer, BLOB_FORMAT};

/// The cache folder.
pub struct Store {
    root: PathBuf,
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

impl Store {
    /// Open (creating) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self, String> {
        for sub in [
            "blobs/sha256".to_string(),
            format!("diffids/{BLOB_FORMAT}"),
            format!("recipes/{BLOB_FORMAT}"),
        ] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating the cache {}: {e}", dir.display()))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The default folder: `$KILN_CACHE_DIR/oci`, else the user's cache
    /// folder (`~/.cache/kiln/oci`), else a folder in the temp dir.
    #[allow(clippy::disallowed_methods)] // the one home of KILN_CACHE_DIR
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("KILN_CACHE_DIR") {
            return PathBuf::from(dir).join("oci");
        }
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("kiln")
            .join("oci")
    }

    fn diffid_path(&self, diff_id: &str) -> PathBuf {
        self.root
            .join("diffids")
            .join(BLOB_FORMAT)
            .join(hex(diff_id))
    }

    fn recipe_path(&self, key: &str) -> PathBuf {
        self.root.join("recipes").join(BLOB_FORMAT).join(hex(key))
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex(digest))
    }

    /// The blob `digest`, when cached and intact.
    pub fn blob(&self, digest: &str) -> Option<Bytes> {
        if !digest.starts_with("sha256:") || hex(digest).contains(['/', '.']) {
            return None;
        }
        let path = self.blob_path(digest);
        let data = std::fs::read(&path).ok()?;
        if sha256(&data) != digest {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(Bytes::from(data))
    }

    /// Whether the blob is cached (not checked).
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Cache `data` as the blob `digest`.
    pub fn put_blob(&self, digest: &str, data: &[u8]) -> Result<(), String> {
        let have = std::fs::metadata(self.blob_path(digest)).map(|m| m.len());
        if have.is_ok_and(|n| n == data.len() as u64) {
            return Ok(());
        }
        self.write(&self.blob_path(digest), data)
    }

    fn write(&self, path: &Path, data: &[u8]) -> Result<(), String> {
        use std::io::Write;
        let mut temp = AtomicFile::beside(path).map_err(|e| format!("the cache: {e}"))?;
        temp.file_mut()
            .write_all(data)
            .map_err(|e| format!("writing the cache {}: {e}", path.display()))?;
        temp.commit().map_err(|e| format!("the cache: {e}"))
    }

    /// The layer this builder made earlier with this `diff_id`: its blob
    /// mapped from the cache, of the size recorded.
    pub fn layer(&self, diff_id: &str) -> Option<Layer> {
        let text = std::fs::read_to_string(self.diffid_path(diff_id)).ok()?;
        let mut words = text.split_whitespace();
        let digest = words.next()?.to_string();
        let size: usize = words.next()?.parse().ok()?;
        if !digest.starts_with("sha256:") || hex(&digest).contains(['/', '.']) {
            return None;
        }
        let blob = map(&self.blob_path(&digest))?;
        if blob.len() != size {
            return None;
        }
        Some(Layer {
            blob,
            digest,
            diff_id: diff_id.to_string(),
            media_type: media::LAYER_GZIP.into(),
        })
    }

    /// Remember a layer this builder made.
    pub fn put_layer(&self, layer: &Layer) -> Result<(), String> {
        self.put_blob(&layer.digest, &layer.blob)?;
        self.write(
            &self.diffid_path(&layer.diff_id),
            format!("{} {}", layer.digest, layer.blob.len()).as_bytes(),
        )
    }

    /// The layer made from the recipe `key` before.
    pub fn recipe(&self, key: &str) -> Option<Layer> {
        let diff_id = std::fs::read_to_string(self.recipe_path(key)).ok()?;
        self.layer(diff_id.trim())
    }

    /// Remember that recipe `key` makes the layer `diff_id`.
    pub fn put_recipe(&self, key: &str, diff_id: &str) -> Result<(), String> {
        self.write(&self.recipe_path(key), diff_id.as_bytes())
    }
}

/// The file at `path`, mapped into memory (read on an error to map it).
pub fn map(path: &Path) -> Option<Bytes> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() == 0 {
        return Some(Bytes::new());
    }
    // SAFETY: kiln never changes these files in place: the cache writes
    // new files and renames them, and the context archive is the host's
    // own temporary file, kept until the build returns. A mapping stays
    // valid when its file is unlinked or replaced by a rename.
    match unsafe { memmap2::Mmap::map(&file) } {
        Ok(m) => Some(Bytes::from_owner(m)),
        Err(_) => std::fs::read(path).ok().map(Bytes::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_and_layers_round_trip_and_damage_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let blob = b"compressed".to_vec();
        let layer = Layer {
            digest: sha256(&blob),
            diff_id: sha256(b"plain"),
            blob: Bytes::from(blob.clone()),
            media_type: media::LAYER_GZIP.into(),
        };
        assert!(store.layer(&layer.diff_id).is_none());
        store.put_layer(&layer).expect("put");
        assert_eq!(store.layer(&layer.diff_id), Some(layer.clone()));
        let key = sha256(b"recipe");
        assert!(store.recipe(&key).is_none());
        store.put_recipe(&key, &layer.diff_id).expect("recipe");
        assert_eq!(store.recipe(&key), Some(layer.clone()));
        // A cut-short blob is not used as a layer; a changed one not as a blob.
        std::fs::write(store.blob_path(&layer.digest), b"cut").expect("damage");
        assert!(store.layer(&layer.diff_id).is_none());
        assert!(store.recipe(&key).is_none());
        assert!(store.blob(&layer.digest).is_none());
        assert!(store.blob("sha256:../../etc/passwd").is_none());
    }
}
