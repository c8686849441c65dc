//! A layer from the entries an instruction produced: by recipe (unchanged
//! context slices) or by `diff_id` from the cache, else tarred and
//! compressed now.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::Run;
use crate::{
    error::{at, BuildError},
    image::{layer_tar, sha256, Entry, Kind, Layer},
};

/// The recipe of a layer: everything its tar is made of, with each file's
/// bytes named by where they sit in the context archive (whose sha1 pins
/// them) rather than hashed; bytes from elsewhere are hashed.
fn recipe_key(
    context_sha1: &str,
    context: &Bytes,
    entries: &BTreeMap<String, Entry>,
    created: u64,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"kiln-oci-recipe-v1\0");
    h.update(context_sha1.as_bytes());
    h.update(created.to_le_bytes());
    let base = context.as_ptr() as usize;
    let end = base + context.len();
    for (path, e) in entries {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(e.mode.to_le_bytes());
        h.update(e.uid.to_le_bytes());
        h.update(e.gid.to_le_bytes());
        match &e.kind {
            Kind::Dir => h.update(b"d"),
            Kind::Symlink(t) => {
                h.update(b"l");
                h.update(t.as_bytes());
                h.update([0]);
            }
            Kind::File(data) => {
                let at = data.as_ptr() as usize;
                if at >= base && at + data.len() <= end {
                    h.update(b"c");
                    h.update(((at - base) as u64).to_le_bytes());
                    h.update((data.len() as u64).to_le_bytes());
                } else {
                    h.update(b"f");
                    h.update(Sha256::digest(data));
                }
            }
        }
    }
    format!("sha256:{:x}", h.finalize())
}

impl Run<'_, '_> {
    /// The layer of `entries`: by recipe or by `diff_id` from the cache
    /// when it was made before (unless `--no-cache`), else made now.
    pub(super) fn layer(
        &mut self,
        entries: &BTreeMap<String, Entry>,
        line: usize,
    ) -> Result<Layer, BuildError> {
        let store = self.input.store.filter(|_| !self.input.no_cache);
        let key = self.input.context_sha1.map(|sha1| {
            recipe_key(
                sha1,
                &self.input.context.archive,
                entries,
                self.input.created,
            )
        });
        if let (Some(store), Some(key)) = (store, &key) {
            if let Some(l) = store.recipe(key) {
                self.layers_cached += 1;
                return Ok(l);
            }
        }
        let tar_bytes = layer_tar(entries, self.input.created).map_err(|e| at(line, e))?;
        let diff_id = sha256(&tar_bytes);
        let layer = match store.and_then(|s| s.layer(&diff_id)) {
            Some(l) => {
                self.layers_cached += 1;
                l
            }
            None => Layer::compress(&tar_bytes, diff_id).map_err(|e| at(line, e))?,
        };
        // The cache is an optimisation: a full disk must not fail the build.
        if let Some(store) = self.input.store {
            let _ = store.put_layer(&layer);
            if let Some(key) = &key {
                let _ = store.put_recipe(key, &layer.diff_id);
            }
        }
        Ok(layer)
    }
}
