//! Where base images come from (go-containerregistry's `remote`,
//! `layout` and `daemon`): a registry over the distribution API for the
//! requested platform ([`registry`]), an OCI image layout, a directory or a
//! tar archive of one, buildx's `oci-layout://` build contexts ([`layout`]),
//! or the local Docker Engine when it has the image ([`engine`]). Blobs are
//! verified against their digests and kept in the [`Store`](crate::store::Store),
//! so a base is fetched once. This module holds what all three share: the
//! [`Base`] and reading a manifest or index.

use serde_json::Value;

use crate::{
    data::Data,
    image::{media, Layer},
};

pub mod engine;
pub mod layout;
pub mod registry;

pub use layout::{archive_files, from_layout, from_layout_files};
pub use registry::Sources;

pub(crate) use kiln_distribution::manifest::{digest_of, is_index, pick_platform};

/// A base image: its config and layers (bottom first).
#[derive(Debug, Clone)]
pub struct Base {
    /// Where it came from, for history and messages.
    pub name: String,
    /// The image config document.
    pub config: Value,
    /// The layers.
    pub layers: Vec<Layer>,
}

/// The layer media type kept in kiln's OCI manifest for a base layer.
pub(crate) fn layer_media_type(given: &str, what: &str) -> Result<String, String> {
    match given {
        media::LAYER_GZIP
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            Ok(media::LAYER_GZIP.into())
        }
        media::LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
            Ok(media::LAYER_TAR.into())
        }
        other => Err(format!(
            "{what}: layer type {other:?} is not supported (gzip'd or plain tar layers only)"
        )),
    }
}

/// Assemble a base from a manifest document, fetching blobs with `fetch`.
pub(crate) fn from_manifest(
    name: &str,
    manifest: &Value,
    mut fetch: impl FnMut(&str) -> Result<Data, String>,
) -> Result<Base, String> {
    let config_digest = manifest
        .get("config")
        .map(|c| digest_of(c, name))
        .transpose()?
        .ok_or_else(|| format!("{name}: the manifest has no config"))?;
    let config: Value = serde_json::from_slice(&layout::document(&fetch(&config_digest)?, name)?)
        .map_err(|e| format!("{name}: the image config is not JSON: {e}"))?;
    let diff_ids: Vec<String> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let descriptors = manifest
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if descriptors.len() != diff_ids.len() {
        return Err(format!(
            "{name}: the manifest lists {} layers but the config {} diff_ids",
            descriptors.len(),
            diff_ids.len()
        ));
    }
    let mut layers = Vec::new();
    for (d, diff_id) in descriptors.iter().zip(diff_ids) {
        let digest = digest_of(d, name)?;
        let media_type = layer_media_type(
            d.get("mediaType").and_then(Value::as_str).unwrap_or(""),
            name,
        )?;
        layers.push(Layer {
            blob: fetch(&digest)?,
            digest,
            diff_id,
            media_type,
        });
    }
    Ok(Base {
        name: name.to_string(),
        config,
        layers,
    })
}
