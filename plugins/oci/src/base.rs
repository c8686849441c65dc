//! Base images: pulled from a registry over the distribution API for the
//! requested platform, or read from an OCI image layout (a directory or a
//! tar archive of one, buildx's `oci-layout://` build contexts). Blobs are
//! verified against their digests and kept in the [`Store`], so a base is
//! fetched once.
//!
//! [`filesystem`] applies a base's layers (with overlay whiteouts) into one
//! tree, for `COPY --from=<stage or image>` and `--chown` by name.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use kiln_distribution::{dockercfg, names, CallError, Credentials, RegistryClient, Retry};
use kiln_plugin_api::{author::Events, ContainerRegistryBox};
use serde_json::Value;

use crate::{
    fs::tree::{self, remove_under, Member},
    image::{media, sha256, Entry, Kind, Layer, Platform},
    store::Store,
};

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

/// Everything needed to fetch bases.
pub struct Sources<'a> {
    /// The blob cache.
    pub store: &'a Store,
    /// The platform to pick from multi-platform indexes.
    pub platform: &'a Platform,
    /// The build's registry: its credentials serve images it owns.
    pub registry: Option<&'a ContainerRegistryBox>,
    /// Hosts spoken to over plain HTTP (loopback always is).
    pub insecure: &'a [String],
    /// Bounds each request.
    pub timeout: Duration,
    /// How 429 and 5xx answers are retried.
    pub retry: Retry,
    /// Progress.
    pub events: &'a Events,
}

fn is_index(media_type: &str, doc: &Value) -> bool {
    media_type == media::INDEX
        || media_type == media::DOCKER_LIST
        || (doc.get("manifests").is_some() && doc.get("layers").is_none())
}

/// The entry of an index for `platform`, or an error listing what it has.
fn pick_platform<'v>(
    index: &'v Value,
    platform: &Platform,
    what: &str,
) -> Result<&'v Value, String> {
    let list = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{what}: an index without manifests"))?;
    list.iter()
        .find(|m| {
            m.get("platform")
                .is_some_and(|p| crate::image::platform_matches(platform, p))
        })
        .ok_or_else(|| {
            let have: Vec<String> = list
                .iter()
                .filter_map(|m| m.get("platform"))
                .map(|p| {
                    let f = |k| p.get(k).and_then(Value::as_str).unwrap_or("");
                    let v = f("variant");
                    if v.is_empty() {
                        format!("{}/{}", f("os"), f("architecture"))
                    } else {
                        format!("{}/{}/{v}", f("os"), f("architecture"))
                    }
                })
                .collect();
            format!(
                "{what} has no image for {platform} (it has: {})",
                have.join(", ")
            )
        })
}

fn digest_of(descriptor: &Value, what: &str) -> Result<String, String> {
    descriptor
        .get("digest")
        .and_then(Value::as_str)
        .filter(|d| d.starts_with("sha256:"))
        .map(str::to_string)
        .ok_or_else(|| format!("{what}: a descriptor without a sha256 digest"))
}

/// The layer media type kept in kiln's OCI manifest for a base layer.
fn layer_media_type(given: &str, what: &str) -> Result<String, String> {
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
fn from_manifest(
    name: &str,
    manifest: &Value,
    mut fetch: impl FnMut(&str) -> Result<Bytes, String>,
) -> Result<Base, String> {
    let config_digest = manifest
        .get("config")
        .map(|c| digest_of(c, name))
        .transpose()?
        .ok_or_else(|| format!("{name}: the manifest has no config"))?;
    let config: Value = serde_json::from_slice(&fetch(&config_digest)?)
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

impl Sources<'_> {
    /// Pull `image` (Docker's reference grammar) from its registry.
    pub fn pull(&self, image: &str) -> Result<Base, CallError> {
        let reference = names::parse(image).map_err(CallError::Failed)?;
        let host = reference.registry().to_string();
        let repo = reference.repository().to_string();
        let wanted = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let credentials = self.credentials(image, &host).map_err(CallError::Denied)?;
        let client =
            RegistryClient::for_host(&host, self.insecure, credentials, self.timeout, self.retry)
                .map_err(CallError::Unavailable)?;
        self.events
            .info(format!("pulling {image} for {}", self.platform));
        kiln_plugin_api::author::block_on(async {
            let not_json = |e: serde_json::Error| {
                CallError::Failed(format!("the manifest of {image} is not JSON: {e}"))
            };
            let mut m = client.get_manifest(&repo, &wanted).await?;
            let mut doc: Value = serde_json::from_slice(&m.bytes).map_err(not_json)?;
            if is_index(&m.media_type, &doc) {
                let entry = pick_platform(&doc, self.platform, image).map_err(CallError::Failed)?;
                let digest = digest_of(entry, image).map_err(CallError::Failed)?;
                m = client.get_manifest(&repo, &digest).await?;
                doc = serde_json::from_slice(&m.bytes).map_err(not_json)?;
            }
            let mut blobs: BTreeMap<String, Bytes> = BTreeMap::new();
            let needed: Vec<String> = doc
                .get("config")
                .into_iter()
                .chain(
                    doc.get("layers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten(),
                )
                .filter_map(|d| d.get("digest").and_then(Value::as_str).map(str::to_string))
                .collect();
            for digest in needed {
                let blob = match self.store.blob(&digest) {
                    Some(b) => b,
                    None => {
                        let b = client.get_blob(&repo, &digest).await?;
                        self.store
                            .put_blob(&digest, &b)
                            .map_err(CallError::Failed)?;
                        b
                    }
                };
                blobs.insert(digest, blob);
            }
            from_manifest(image, &doc, |d| {
                blobs
                    .get(d)
                    .cloned()
                    .ok_or_else(|| format!("{image}: blob {d} missing"))
            })
            .map_err(CallError::Failed)
        })
    }

    /// The build registry's credentials for an image it owns, else Docker's
    /// config for the host (as `docker pull` would use).
    fn credentials(&self, image: &str, host: &str) -> Result<Option<Credentials>, String> {
        if let Some(registry) = self.registry {
            let owns = registry
                .owns_image(image.into())
                .into_result()
                .unwrap_or(false);
            if owns {
                if let Ok(Some(auth)) = registry.auth().into_result().map(|a| a.into_option()) {
                    return Ok(Some(Credentials {
                        username: auth.username.into_string(),
                        password: auth.secret.into_string(),
                    }));
                }
            }
        }
        dockercfg::lookup(host, self.timeout)
    }
}

/// The regular files of the tar archive `data`, by path (slices of it).
pub fn archive_files(data: &Bytes) -> Result<BTreeMap<String, Bytes>, String> {
    Ok(tree::members(data)
        .map_err(|e| format!("not a tar archive: {e}"))?
        .into_iter()
        .filter_map(|(path, m)| match m {
            Member::Entry(Entry {
                kind: Kind::File(data),
                ..
            }) => Some((path, data)),
            _ => None,
        })
        .collect())
}

/// The blobs of an OCI layout: a directory, or a tar archive of one.
enum Layout {
    Dir(PathBuf),
    Archive(BTreeMap<String, Bytes>),
}

impl Layout {
    fn open(path: &Path) -> Result<Self, String> {
        if path.is_dir() {
            return Ok(Self::Dir(path.to_path_buf()));
        }
        let data = crate::store::map(path)
            .ok_or_else(|| format!("reading the OCI layout {}: cannot open it", path.display()))?;
        Ok(Self::Archive(
            archive_files(&data).map_err(|e| format!("{}: {e}", path.display()))?,
        ))
    }

    fn read(&self, rel: &str, what: &str) -> Result<Bytes, String> {
        match self {
            Self::Dir(root) => std::fs::read(root.join(rel))
                .map(Bytes::from)
                .map_err(|e| format!("{what}: {rel}: {e}")),
            Self::Archive(files) => files
                .get(rel)
                .cloned()
                .ok_or_else(|| format!("{what}: {rel} is missing")),
        }
    }

    fn blob(&self, digest: &str, what: &str) -> Result<Bytes, String> {
        let hex = digest.trim_start_matches("sha256:");
        if hex.contains(['/', '.']) {
            return Err(format!("{what}: bad digest {digest:?}"));
        }
        let data = self.read(&format!("blobs/sha256/{hex}"), what)?;
        if sha256(&data) != digest {
            return Err(format!("{what}: blob {digest} does not match its digest"));
        }
        Ok(data)
    }
}

/// A base from an OCI layout: `PATH[:TAG][@sha256:DIGEST]`, `PATH` a
/// directory or a tar archive (such as `--output type=oci` writes).
pub fn from_layout(spec: &str, platform: &Platform) -> Result<Base, String> {
    let (rest, digest) = match spec.rsplit_once('@') {
        Some((r, d)) if d.starts_with("sha256:") => (r, Some(d.to_string())),
        _ => (spec, None),
    };
    let (path, tag) = match rest.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !p.is_empty() && !Path::new(rest).exists() => {
            (p, Some(t))
        }
        _ => (rest, None),
    };
    let what = format!("oci-layout://{spec}");
    let layout = Layout::open(Path::new(path))?;
    resolve_layout(&layout, tag, digest.as_deref(), platform, &what)
}

/// A base from the files of an OCI layout archive (such as `docker save`
/// writes on newer engines), the one image it holds or the one tagged `tag`.
pub fn from_layout_files(
    files: BTreeMap<String, Bytes>,
    tag: Option<&str>,
    platform: &Platform,
    what: &str,
) -> Result<Base, String> {
    resolve_layout(&Layout::Archive(files), tag, None, platform, what)
}

fn resolve_layout(
    layout: &Layout,
    tag: Option<&str>,
    digest: Option<&str>,
    platform: &Platform,
    what: &str,
) -> Result<Base, String> {
    let index: Value = serde_json::from_slice(&layout.read("index.json", what)?)
        .map_err(|e| format!("{what}: index.json is not JSON: {e}"))?;
    let entries = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let chosen = match (digest, tag) {
        (Some(d), _) => entries
            .iter()
            .find(|m| m.get("digest").and_then(Value::as_str) == Some(d))
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"digest": d})),
        (None, Some(t)) => entries
            .iter()
            .find(|m| {
                let a = |k: &str| m.pointer(&format!("/annotations/{}", k.replace('/', "~1")));
                a("org.opencontainers.image.ref.name").and_then(Value::as_str) == Some(t)
                    || a("io.containerd.image.name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.ends_with(&format!(":{t}")))
            })
            .cloned()
            .ok_or_else(|| format!("{what}: no image tagged {t:?} in index.json"))?,
        (None, None) if entries.len() == 1 => entries[0].clone(),
        (None, None) if entries.is_empty() => {
            return Err(format!("{what}: index.json lists no image"))
        }
        (None, None) => {
            return Err(format!(
                "{what}: index.json lists {} images; name one with :TAG or @DIGEST",
                entries.len()
            ))
        }
    };
    let mut digest = digest_of(&chosen, what)?;
    let mut doc: Value;
    loop {
        doc = serde_json::from_slice(&layout.blob(&digest, what)?)
            .map_err(|e| format!("{what}: manifest {digest} is not JSON: {e}"))?;
        let media_type = doc.get("mediaType").and_then(Value::as_str).unwrap_or("");
        if !is_index(media_type, &doc) {
            break;
        }
        digest = digest_of(pick_platform(&doc, platform, what)?, what)?;
    }
    from_manifest(what, &doc, |d| layout.blob(d, what))
}

/// The files of `layers` applied in order, with overlay whiteouts
/// (`.wh.NAME` removes `NAME`, `.wh..wh..opq` empties its directory).
pub fn filesystem(layers: &[Layer]) -> Result<BTreeMap<String, Entry>, String> {
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    for layer in layers {
        let plain = if layer.blob.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(layer.blob.as_ref())
                .read_to_end(&mut plain)
                .map_err(|e| format!("reading layer {}: {e}", layer.digest))?;
            Bytes::from(plain)
        } else {
            layer.blob.clone()
        };
        let mut upper: BTreeMap<String, Entry> = BTreeMap::new();
        let members =
            tree::members(&plain).map_err(|e| format!("reading layer {}: {e}", layer.digest))?;
        for (path, member) in members {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if name == ".wh..wh..opq" {
                let prefix = if parent.is_empty() {
                    String::new()
                } else {
                    format!("{parent}/")
                };
                files.retain(|k, _| !k.starts_with(&prefix) || k.len() == prefix.len());
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let gone = if parent.is_empty() {
                    gone.to_string()
                } else {
                    format!("{parent}/{gone}")
                };
                files.remove(&gone);
                remove_under(&mut files, &gone);
                continue;
            }
            let entry = match member {
                Member::Entry(e) => e,
                Member::HardLink(target, e) => {
                    match upper.get(&target).or_else(|| files.get(&target)) {
                        Some(t) => Entry {
                            kind: t.kind.clone(),
                            ..e
                        },
                        None => continue,
                    }
                }
            };
            upper.insert(path, entry);
        }
        for (path, entry) in upper {
            if !matches!(entry.kind, Kind::Dir) {
                remove_under(&mut files, &path);
            }
            files.insert(path, entry);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::layer_tar;

    fn layer(entries: &[(&str, Option<&str>)]) -> Layer {
        let tree: BTreeMap<String, Entry> = entries
            .iter()
            .map(|(p, d)| {
                (
                    p.to_string(),
                    Entry {
                        kind: match d {
                            Some(d) => Kind::File(Bytes::from(d.to_string())),
                            None => Kind::Dir,
                        },
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                    },
                )
            })
            .collect();
        let tar_bytes = layer_tar(&tree, 0).expect("tar");
        Layer::compress(&tar_bytes, sha256(&tar_bytes)).expect("gzip")
    }

    #[test]
    fn whiteouts_remove_and_opaque_dirs_empty() {
        let lower = layer(&[
            ("etc/a", Some("1")),
            ("etc/b", Some("2")),
            ("var/x/y", Some("3")),
            ("var/z", Some("4")),
        ]);
        let upper = layer(&[
            ("etc/.wh.a", Some("")),
            ("var/.wh..wh..opq", Some("")),
            ("var/new", Some("5")),
        ]);
        let fs = filesystem(&[lower, upper]).expect("fs");
        assert!(!fs.contains_key("etc/a"));
        assert!(fs.contains_key("etc/b"));
        assert!(!fs.contains_key("var/x/y"));
        assert!(!fs.contains_key("var/z"));
        assert_eq!(
            fs.get("var/new").map(|e| &e.kind),
            Some(&Kind::File(Bytes::from("5")))
        );
    }
}
