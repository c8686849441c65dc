//! The builder's content-addressed cache: blobs by digest
//! (`blobs/sha256/<hex>`), and for each layer this builder made, its
//! `diff_id` to blob digest (`diffids/<hex>`). A rebuild whose layer tar is
//! unchanged takes the compressed blob from here instead of compressing
//! again; base image layers pulled once are not fetched again.
//!
//! Every write goes through a temporary file renamed into place, and every
//! read is checked against its digest, so a torn or altered file is ignored
//! (and replaced), never used.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::image::{media, sha256, Layer, Temp};

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
        for sub in ["blobs/sha256", "diffids"] {
            std::fs::create_dir_all(root.join(sub))
                .map_err(|e| format!("creating the cache {}: {e}", root.join(sub).display()))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The default folder: `$KILN_CACHE_DIR/oci`, else the user's cache
    /// folder (`~/.cache/kiln/oci`), else a folder in the temp dir.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("KILN_CACHE_DIR") {
            return PathBuf::from(dir).join("oci");
        }
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("kiln")
            .join("oci")
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
        if self.has_blob(digest) {
            return Ok(());
        }
        self.write(&self.blob_path(digest), data)
    }

    fn write(&self, path: &Path, data: &[u8]) -> Result<(), String> {
        use std::io::Write;
        let dir = path.parent().unwrap_or(&self.root);
        let mut temp = Temp::create_in(dir)?;
        temp.file
            .write_all(data)
            .map_err(|e| format!("writing the cache {}: {e}", path.display()))?;
        temp.persist(path)
    }

    /// The layer this builder made earlier with this `diff_id`.
    pub fn layer(&self, diff_id: &str) -> Option<Layer> {
        let digest = std::fs::read_to_string(self.root.join("diffids").join(hex(diff_id))).ok()?;
        let digest = digest.trim().to_string();
        let blob = self.blob(&digest)?;
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
            &self.root.join("diffids").join(hex(&layer.diff_id)),
            layer.digest.as_bytes(),
        )
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
        // A damaged blob is not used.
        std::fs::write(store.blob_path(&layer.digest), b"other").expect("damage");
        assert!(store.layer(&layer.diff_id).is_none());
        assert!(store.blob("sha256:../../etc/passwd").is_none());
    }
}
