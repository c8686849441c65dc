//! The cache machines share through a registry (buildx's `--cache-to
//! type=registry,ref=REF[,mode=max]` and `--cache-from type=registry,ref=REF`).
//!
//! Under `REF` is one OCI image manifest: its config (media type
//! [`CONFIG_MEDIA`]) holds the layer format, each recipe's `diff_id` and
//! each layer's blob; its layers are those blobs. A recipe key is a hash of
//! what went into a step (a `COPY`'s files and metadata, a `RUN`'s parent
//! layers, command, environment, user and mount declarations: a secret's id,
//! never its value), so only digests and layers reach the registry, never a
//! secret or a cache mount's contents.
//!
//! Importing reads the config only; a layer is fetched when a build asks
//! for its recipe ([`crate::store::Remote`]), checked against its digest
//! on the way and against its `diff_id` before it is used.

use std::{collections::BTreeMap, io::Read};

use kiln_distribution::{client::is_digest, names, CallError, RegistryClient};
use kiln_plugin_api::{
    author::{block_on, Cancel, Events, HostRegistry},
    CacheSpec, ErrorKind, PluginError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    data::Data,
    image::{media, BLOB_FORMAT},
    outputs::registry::{plugin_error, push_blobs, Connection},
    store::{Remote, Store},
};

/// The media type of a kiln cache's config.
pub const CONFIG_MEDIA: &str = "application/vnd.kiln.cache.config.v1+json";

/// The largest cache config read (a registry may be hostile).
const MAX_CONFIG: usize = 64 << 20;

/// What a cache holds: recipes to layers, layers to blobs.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct CacheConfig {
    /// [`BLOB_FORMAT`] of the kiln that made it; another format is not used.
    format: String,
    /// Recipe key → `diff_id`.
    recipes: BTreeMap<String, String>,
    /// `diff_id` → the blob holding the layer.
    layers: BTreeMap<String, Blob>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Blob {
    digest: String,
    size: u64,
}

/// A cache's place: its registry, repository and tag.
struct Place {
    client: RegistryClient,
    host: String,
    repo: String,
    tag: String,
    name: String,
}

impl Place {
    /// `registry` (the build's) gives the credentials for a reference it
    /// owns; Docker's config gives the rest.
    fn of(
        reference: &str,
        c: Connection<'_>,
        registry: Option<&HostRegistry>,
    ) -> Result<Self, CallError> {
        let parsed = names::parse(reference).map_err(CallError::Failed)?;
        let host = parsed.registry().to_string();
        let repo = parsed.repository().to_string();
        let tag = parsed.tag().unwrap_or("latest").to_string();
        let credentials =
            crate::sources::registry::credentials(registry, reference, &host, c.timeout)
                .map_err(CallError::Denied)?;
        let client = RegistryClient::for_host(&host, c.insecure, credentials, c.timeout, c.retry)
            .map_err(CallError::Unavailable)?;
        Ok(Self {
            client,
            name: format!("{host}/{repo}:{tag}"),
            host,
            repo,
            tag,
        })
    }
}

/// A cache read from a registry (`--cache-from`).
pub struct RegistryCache {
    place: Place,
    config: CacheConfig,
}

/// The cache under `spec`'s reference: `None` when there is none yet. A
/// document that is not a kiln cache of this kiln's layer format is an
/// error naming what it is.
pub fn import(
    spec: &CacheSpec,
    c: Connection<'_>,
    registry: Option<&HostRegistry>,
) -> Result<Option<RegistryCache>, String> {
    let place = Place::of(&spec.reference, c, registry).map_err(|e| e.to_string())?;
    let name = place.name.clone();
    let config = block_on(async {
        let Some(manifest) = place.client.resolve(&place.repo, &place.tag).await? else {
            return Ok(None);
        };
        let doc: serde_json::Value = serde_json::from_slice(&manifest.bytes)
            .map_err(|e| CallError::Failed(format!("its manifest is not JSON: {e}")))?;
        let config = doc.get("config");
        let media_type = config
            .and_then(|d| d.get("mediaType"))
            .and_then(|m| m.as_str())
            .unwrap_or("");
        if media_type != CONFIG_MEDIA {
            return Err(CallError::Failed(format!(
                "not a kiln cache (its config is {:?}, not {CONFIG_MEDIA})",
                names::printable(media_type)
            )));
        }
        let digest = config
            .and_then(|d| d.get("digest"))
            .and_then(|d| d.as_str())
            .filter(|d| is_digest(d))
            .ok_or_else(|| CallError::Failed("its config has no valid digest".into()))?;
        place
            .client
            .get_small_blob(&place.repo, digest, MAX_CONFIG)
            .await
            .map(Some)
    })
    .map_err(|e: CallError| format!("{name}: {e}"))?;
    let Some(config) = config else {
        return Ok(None);
    };
    let config: CacheConfig = serde_json::from_slice(&config)
        .map_err(|e| format!("{name}: its config is not a kiln cache config: {e}"))?;
    if config.format != BLOB_FORMAT {
        return Err(format!(
            "{name}: made with layer format {:?}, this kiln makes {BLOB_FORMAT:?}; not used",
            names::printable(&config.format)
        ));
    }
    if let Some((diff_id, _)) = config
        .layers
        .iter()
        .find(|(d, b)| !is_digest(d) || !is_digest(&b.digest))
    {
        return Err(format!(
            "{name}: its config names an invalid digest (layer {:?})",
            names::printable(diff_id)
        ));
    }
    Ok(Some(RegistryCache { place, config }))
}

impl RegistryCache {
    /// How many recipes it holds.
    pub fn recipes(&self) -> usize {
        self.config.recipes.len()
    }
}

/// `sha256:` of the tar inside the gzip `blob`, read in chunks.
fn diff_id_of(blob: &Data) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut gz = flate2::read::MultiGzDecoder::new(blob.reader());
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = gz.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{:x}", h.finalize()))
}

impl Remote for RegistryCache {
    fn diff_id(&self, key: &str) -> Option<String> {
        self.config
            .recipes
            .get(key)
            .filter(|d| self.config.layers.contains_key(*d))
            .cloned()
    }

    fn fetch(&self, diff_id: &str, store: &Store) -> Result<(), String> {
        let blob = self
            .config
            .layers
            .get(diff_id)
            .ok_or_else(|| format!("no layer {diff_id}"))?;
        let data = match store.blob(&blob.digest) {
            Some(d) => d,
            None => {
                let into = store.incoming()?;
                let size = block_on(self.place.client.get_blob_to(
                    &self.place.repo,
                    &blob.digest,
                    &mut into.writer(),
                ))
                .map_err(|e| e.to_string())?;
                into.keep(&blob.digest, size)
                    .map_err(|e| format!("keeping blob {}: {e}", blob.digest))?
            }
        };
        if data.len() != blob.size {
            return Err(format!(
                "blob {} has {} bytes, its config says {}",
                blob.digest,
                data.len(),
                blob.size
            ));
        }
        let got = diff_id_of(&data).map_err(|e| format!("blob {}: {e}", blob.digest))?;
        if got != diff_id {
            return Err(format!(
                "blob {} holds the layer {got}, its config says {diff_id}",
                blob.digest
            ));
        }
        store.put_diff_id(diff_id, &blob.digest, blob.size)
    }

    fn name(&self) -> &str {
        &self.place.name
    }
}

/// `--cache-to`: store `recipes` (key → `diff_id`) and their layers from
/// `store` under `spec`'s reference, replacing what was there. Returns
/// how many recipes and layers went.
pub fn export(
    spec: &CacheSpec,
    store: &Store,
    recipes: &BTreeMap<String, String>,
    c: Connection<'_>,
    registry: Option<&HostRegistry>,
    events: &Events,
    cancel: &Cancel,
) -> Result<(usize, usize), PluginError> {
    let place = Place::of(&spec.reference, c, registry).map_err(plugin_error)?;
    let mut config = CacheConfig {
        format: BLOB_FORMAT.to_string(),
        ..CacheConfig::default()
    };
    let mut blobs: Vec<(String, Data)> = Vec::new();
    for (key, diff_id) in recipes {
        if !config.layers.contains_key(diff_id) {
            // A layer the cache no longer holds (pruned, or made outside
            // it on a full disk) is left out with its recipes.
            let Some(layer) = store.layer(diff_id) else {
                continue;
            };
            config.layers.insert(
                diff_id.clone(),
                Blob {
                    digest: layer.digest.clone(),
                    size: layer.blob.len(),
                },
            );
            blobs.push((layer.digest, layer.blob));
        }
        config.recipes.insert(key.clone(), diff_id.clone());
    }
    let config_bytes =
        serde_json::to_vec(&config).map_err(|e| PluginError::other(e.to_string()))?;
    let config_digest = kiln_distribution::client::sha256(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "config": {
            "mediaType": CONFIG_MEDIA,
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": config.layers.values().map(|b| json!({
            "mediaType": media::LAYER_GZIP,
            "digest": b.digest,
            "size": b.size,
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).map_err(|e| PluginError::other(e.to_string()))?;
    let layers = blobs.len();
    blobs.push((config_digest, Data::from(config_bytes)));
    block_on(async {
        push_blobs(
            &place.client,
            &place.host,
            &place.repo,
            blobs,
            events,
            cancel,
        )
        .await?;
        place
            .client
            .put_manifest(&place.repo, &place.tag, media::MANIFEST, manifest)
            .await
            .map_err(plugin_error)
    })
    .map_err(|e| PluginError::new(e.kind, format!("--cache-to {}: {}", place.name, e.message)))?;
    Ok((config.recipes.len(), layers))
}

/// The recipes `--cache-to` stores for `mode`: `max`, every one this
/// build used; `min` (the default), those whose layer is in `images`.
pub fn chosen(
    mode: &str,
    used: &BTreeMap<String, String>,
    image_diff_ids: &std::collections::BTreeSet<String>,
) -> BTreeMap<String, String> {
    used.iter()
        .filter(|(_, d)| mode == "max" || image_diff_ids.contains(*d))
        .map(|(k, d)| (k.clone(), d.clone()))
        .collect()
}

/// The error for a spec of a kind kiln does not keep.
pub fn check_kind(flag: &str, spec: &CacheSpec) -> Result<(), PluginError> {
    if spec.kind.is_empty() || spec.kind == "registry" {
        return Ok(());
    }
    Err(PluginError::new(
        ErrorKind::INVALID_INPUT,
        format!(
            "{flag} type={}: the oci builder keeps a shared cache in a registry only",
            names::printable(&spec.kind)
        ),
    ))
}
