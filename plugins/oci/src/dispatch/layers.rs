//! A layer from the entries an instruction produced: by recipe (unchanged
//! context slices) or by `diff_id` from the cache, else tarred and
//! compressed now.

use std::collections::BTreeMap;

use super::Run;
use crate::{
    data::Data,
    error::{at, is_full, BuildError, Cause},
    image::{Entry, Incoming, Kind, Layer},
};

/// The recipe of a layer: everything its tar is made of, with each file's
/// bytes named by where they sit in the context archive (whose sha1 pins
/// them) rather than hashed; bytes from elsewhere are hashed.
fn recipe_key(
    context_sha1: &str,
    context: &Data,
    entries: &BTreeMap<String, Entry>,
    created: u64,
) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"kiln-oci-recipe-v1\0");
    h.update(context_sha1.as_bytes());
    h.update(created.to_le_bytes());
    let archive = match context {
        Data::File { file, .. } => Some(file),
        Data::Memory(_) | Data::Parts { .. } => None,
    };
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
            Kind::File(data) => match archive.and_then(|a| data.offset_in(a)) {
                Some(at) => {
                    h.update(b"c");
                    h.update(at.to_le_bytes());
                    h.update(data.len().to_le_bytes());
                }
                None => {
                    h.update(b"f");
                    let digest = crate::store::sha256_of(data).map_err(|e| e.to_string())?;
                    h.update(digest.as_bytes());
                }
            },
        }
    }
    Ok(format!("sha256:{:x}", h.finalize()))
}

/// Layers from this size on report their compression.
const METER_FROM: u64 = 32 << 20;

impl Run<'_, '_> {
    /// The layer of `entries`: by recipe or by `diff_id` from the cache
    /// when it was made before (unless `--no-cache`), else made now.
    pub(super) fn layer(
        &mut self,
        entries: &BTreeMap<String, Entry>,
        line: usize,
    ) -> Result<Layer, BuildError> {
        let store = self.input.store.filter(|_| !self.input.no_cache);
        let key = self
            .input
            .context_sha1
            .map(|sha1| {
                recipe_key(
                    sha1,
                    &self.input.context.archive,
                    entries,
                    self.input.created,
                )
            })
            .transpose()
            .map_err(|e| at(line, e))?;
        if let (Some(store), Some(key)) = (store, &key) {
            if let Some(l) = store.recipe(key) {
                self.layers_cached += 1;
                return Ok(l);
            }
        }
        // Made as a stream into the cache (or, without one, an unnamed
        // file); the cache is an optimisation, so a cache that cannot be
        // written to falls back to the unnamed file.
        let into = match self.input.store.map(crate::store::Store::incoming) {
            Some(Ok(i)) => i,
            _ => Incoming::anonymous().map_err(|e| at(line, e))?,
        };
        let in_cache = into.in_cache();
        // Pieces of earlier layers are reused (not with --no-cache) and
        // this layer's are kept for the next build.
        let pieces = self.input.store.map(|s| s.pieces(!self.input.no_cache));
        let reuse = pieces
            .as_ref()
            .map(|p| p as &dyn crate::image::Reuse<Note = crate::image::Note>);
        // A large layer's compression is reported as it goes (a bar in a
        // terminal).
        let total = Layer::tar_size_bound(entries);
        let mut meter = self
            .input
            .events
            .filter(|_| total >= METER_FROM)
            .map(|e| crate::meter::Meter::new(e, format!("compressing line {line}"), total));
        let mut count = |n: u64| {
            if let Some(m) = meter.as_mut() {
                m.add(n);
            }
        };
        let made = match Layer::make(entries, self.input.created, into, reuse, Some(&mut count)) {
            // The cache's disk is full: the layer is made in the system's
            // temp folder instead (the cache must not fail a build).
            Err(e) if in_cache && is_full(&e) => Incoming::elsewhere()
                .and_then(|i| Layer::make(entries, self.input.created, i, None, None)),
            other => other,
        };
        if let Some(m) = meter.as_mut() {
            m.finish();
        }
        let layer = made.map_err(|e| BuildError {
            line,
            message: format!("writing the layer: {e}"),
            cause: if is_full(&e) {
                Cause::Storage
            } else {
                Cause::Input
            },
        })?;
        // Made in the cache, the layer is recorded there as it is kept.
        if let (Some(store), Some(key)) = (self.input.store, &key) {
            let _ = store.put_recipe(key, &layer.diff_id);
        }
        Ok(layer)
    }
}
