//! Reproducible OCI images: layers from file entries, the image config, the
//! manifest, and an archive that both `docker load` (Docker's
//! `manifest.json`) and OCI tools (`oci-layout`, `index.json`) read.
//!
//! Every byte depends only on the inputs: tar headers carry uid/gid and mode
//! as asked, a fixed mtime, no user or group names; entries are sorted; a
//! layer's tar is cut into pieces at content-defined boundaries (256 KiB to
//! 4 MiB, kiln-archive's `Cut::LAYERS`), each compressed (on every core) into
//! its own gzip member by libdeflate at a fixed level with a zero gzip
//! mtime (a piece whose bytes look random is stored, not compressed), so the
//! blob is the same whatever the number of cores; the config's `created` is
//! the given epoch second.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    str::FromStr,
};

pub use crate::data::Data;
use kiln_archive::tar::{append_header, padding, EntryType, Header, END};
use oci_spec::image::{Descriptor, Digest as OciDigest, ImageManifestBuilder, MediaType};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// OCI media types.
pub mod media {
    /// An OCI image manifest.
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image index.
    pub use kiln_distribution::manifest::INDEX;
    /// An OCI image config.
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// A gzip'd tar layer.
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// An uncompressed tar layer.
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// Docker's schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker's manifest list.
    pub use kiln_distribution::manifest::DOCKER_LIST;
}

/// What a layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file and its contents.
    File(Data),
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
}

/// An entry to put in a layer (or a file of a stage's filesystem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
}

/// A finished layer: where its blob is, and its digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The compressed tar (a cache file, read in chunks when written out).
    pub blob: Data,
    /// `sha256:` of the blob.
    pub digest: String,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// The blob's media type.
    pub media_type: String,
}

pub use kiln_distribution::platform::host_architecture;

impl Layer {
    /// The gzip'd layer of `tar_bytes`, whose sha256 is `diff_id`, in memory
    /// (small layers made in tests and by `ADD`'s checks).
    pub fn compress(tar_bytes: &[u8], diff_id: String) -> Result<Self, String> {
        let blob = gzip_parallel(tar_bytes)?;
        Ok(Self {
            digest: sha256(&blob),
            diff_id,
            blob: Data::from(blob),
            media_type: media::LAYER_GZIP.into(),
        })
    }

    /// The layer holding `entries` (as [`layer_tar`] lays them out), made as
    /// a stream: the tar is produced entry by entry, reading files in
    /// chunks, hashed (its `diff_id`), cut into pieces gzip'd on every core
    /// and written to `into` (a cache blob or an anonymous file), hashed
    /// again (its digest). Memory stays bounded whatever the layer's size.
    /// `progress` hears of every byte of tar made.
    pub fn make(
        entries: &BTreeMap<String, Entry>,
        mtime: u64,
        into: Incoming,
        reuse: Option<&dyn Reuse<Note = Note>>,
        progress: Option<&mut dyn FnMut(u64)>,
    ) -> std::io::Result<Self> {
        Self::stream(into, reuse, progress, |out| {
            write_layer_tar(entries, mtime, out)
        })
    }

    /// At least the size of the tar [`Layer::make`] makes of `entries`
    /// (each entry's header, with room for a long name or link target, and
    /// its padded contents), for progress.
    pub fn tar_size_bound(entries: &BTreeMap<String, Entry>) -> u64 {
        let blocks = |n: u64| n.div_ceil(512) * 512;
        let body: u64 = entries
            .iter()
            .map(|(path, e)| {
                let data = match &e.kind {
                    Kind::File(d) => blocks(d.len()),
                    Kind::Symlink(target) => 1024 + blocks(target.len() as u64 + 1),
                    Kind::Dir => 0,
                };
                1024 + blocks(path.len() as u64 + 2) + data
            })
            .sum();
        body + 1024
    }

    /// The gzip'd layer of the uncompressed tar `tar`, which must hash to
    /// `diff_id` (streamed as [`Layer::make`] streams).
    pub fn from_tar(tar: &Data, diff_id: &str, into: Incoming) -> Result<Self, String> {
        let layer =
            Self::stream(into, None, None, |out| tar.write_to(out)).map_err(|e| e.to_string())?;
        if layer.diff_id != diff_id {
            return Err(format!(
                "does not match its diff_id {diff_id} (its contents are {})",
                layer.diff_id
            ));
        }
        Ok(layer)
    }

    /// The layer whose uncompressed tar `produce` writes: hashed, gzip'd on
    /// every core and written to `into` in bounded memory.
    fn stream(
        into: Incoming,
        reuse: Option<&dyn Reuse<Note = Note>>,
        progress: Option<&mut dyn FnMut(u64)>,
        produce: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> std::io::Result<Self> {
        let (diff_id, packed) = gzip_stream(into.writer(), reuse, progress, produce)?;
        let digest = packed.digest.clone();
        let blob = into.keep_layer(packed, &diff_id)?;
        Ok(Self {
            digest,
            diff_id,
            blob,
            media_type: media::LAYER_GZIP.into(),
        })
    }
}

/// Gzip what `produce` writes into `file` through kiln-archive's pipeline
/// (pieces `reuse` has are not compressed or written again); returns the
/// plain stream's digest and what was written.
fn gzip_stream(
    file: kiln_archive::atomic::Writeback<'_>,
    reuse: Option<&dyn Reuse<Note = Note>>,
    mut progress: Option<&mut dyn FnMut(u64)>,
    produce: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<(String, crate::store::Packed)> {
    use kiln_archive::pipeline::{run_with, Cut, Failed, Tee};
    let mut tar_hash = Sha256::new();
    let sink = crate::store::Packing::new(file);
    let written = run_with(true, Cut::LAYERS, reuse, sink, |pieces| {
        let mut tar = Tee::new(pieces, |d: &[u8]| {
            tar_hash.update(d);
            if let Some(p) = progress.as_mut() {
                p(d.len() as u64);
            }
        });
        produce(&mut tar)
    });
    let packed = match written {
        Ok(((), sink)) => sink.finish()?,
        Err(Failed::Produce(e) | Failed::Write(e)) => return Err(e),
    };
    Ok((format!("sha256:{:x}", tar_hash.finalize()), packed))
}

pub use crate::store::{Incoming, Note};
pub use kiln_archive::pipeline::Reuse;

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The uncompressed tar of a layer holding `entries` (path without a
/// leading `/` to entry), in memory: [`write_layer_tar`] into a buffer.
pub fn layer_tar(entries: &BTreeMap<String, Entry>, mtime: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write_layer_tar(entries, mtime, &mut out).map_err(|e| format!("a layer: {e}"))?;
    Ok(out)
}

/// Write the uncompressed tar of a layer holding `entries` to `out`.
/// Parent directories missing from `entries` are added (mode 0755,
/// root-owned). `mtime` is the epoch second every entry gets. File contents
/// are read in chunks; a file shorter than recorded is an error.
pub fn write_layer_tar(
    entries: &BTreeMap<String, Entry>,
    mtime: u64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut all: BTreeMap<String, Option<&Entry>> = BTreeMap::new();
    for (path, entry) in entries {
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            all.entry(p.to_string()).or_insert(None);
            parent = p;
        }
        all.insert(path.clone(), Some(entry));
    }
    let dir = Entry {
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
    let none = Data::default();
    let mut header = Vec::with_capacity(2048);
    for (path, entry) in all {
        let entry = entry.unwrap_or(&dir);
        // Names that are not UTF-8 go back to their bytes.
        let name = crate::fs::name::to_bytes(&path);
        let (dir_path, target);
        let (path, kind, data, link): (&[u8], _, &Data, &[u8]) = match &entry.kind {
            Kind::Dir => {
                dir_path = [&name[..], b"/"].concat();
                (&dir_path, EntryType::Directory, &none, &[])
            }
            Kind::File(data) => (&name, EntryType::Regular, data, &[]),
            Kind::Symlink(to) => {
                target = crate::fs::name::to_bytes(to);
                (&name, EntryType::Symlink, &none, &target)
            }
        };
        header.clear();
        append_header(
            &Header {
                path,
                kind,
                mode: entry.mode & 0o7777,
                uid: entry.uid,
                gid: entry.gid,
                mtime,
                size: data.len(),
                link,
            },
            &mut header,
        );
        out.write_all(&header)?;
        data.write_to(out)?;
        out.write_all(padding(data.len()))?;
    }
    out.write_all(&END)
}

pub use kiln_archive::gzip::{gzip_parallel, BLOB_FORMAT};

/// The runtime settings of an image (the `config` object of the image config).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConfig {
    /// `KEY=value` entries, in order.
    pub env: Vec<String>,
    /// `CMD`.
    pub cmd: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    pub entrypoint: Option<Vec<String>>,
    /// `WORKDIR`.
    pub working_dir: Option<String>,
    /// `USER`.
    pub user: Option<String>,
    /// `LABEL`s.
    pub labels: BTreeMap<String, String>,
    /// `EXPOSE` (`80/tcp`).
    pub exposed_ports: BTreeSet<String>,
    /// `VOLUME`s.
    pub volumes: BTreeSet<String>,
    /// `STOPSIGNAL`.
    pub stop_signal: Option<String>,
    /// `HEALTHCHECK` (Docker's `Healthcheck` object).
    pub healthcheck: Option<Value>,
    /// `ONBUILD` triggers.
    pub on_build: Vec<String>,
    /// `SHELL`, when set.
    pub shell: Option<Vec<String>>,
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    })
}

fn keys(v: Option<&Value>) -> BTreeSet<String> {
    v.and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

impl RuntimeConfig {
    /// The settings of a base image's config (its `config` object).
    pub fn from_config(c: &Value) -> Self {
        let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
        Self {
            env: strings(c.get("Env")).unwrap_or_default(),
            cmd: strings(c.get("Cmd")),
            entrypoint: strings(c.get("Entrypoint")),
            working_dir: text("WorkingDir").filter(|w| !w.is_empty()),
            user: text("User").filter(|u| !u.is_empty()),
            labels: c
                .get("Labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            exposed_ports: keys(c.get("ExposedPorts")),
            volumes: keys(c.get("Volumes")),
            stop_signal: text("StopSignal"),
            healthcheck: c.get("Healthcheck").filter(|h| !h.is_null()).cloned(),
            on_build: strings(c.get("OnBuild")).unwrap_or_default(),
            shell: strings(c.get("Shell")),
        }
    }
}

/// One history entry of the image config, made by this builder.
pub fn history_entry(created: u64, created_by: &str, empty_layer: bool) -> Value {
    let mut entry = json!({
        "created": rfc3339(created),
        "created_by": created_by,
        "comment": "kiln oci",
    });
    if empty_layer {
        entry["empty_layer"] = json!(true);
    }
    entry
}

pub use kiln_distribution::{manifest::platform_matches, Platform};

/// A finished image: blobs and the documents that name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The layers, bottom first (a base image's first).
    pub layers: Vec<Layer>,
    /// The image config JSON.
    pub config: Vec<u8>,
    /// The OCI manifest JSON.
    pub manifest: Vec<u8>,
}

impl Image {
    /// `sha256:` of the manifest: the image's digest.
    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    /// `sha256:` of the config: the image ID Docker shows.
    pub fn config_digest(&self) -> String {
        sha256(&self.config)
    }
}

/// What a build made: one image, or one image per platform and the OCI
/// image index naming them (`--platform linux/amd64,linux/arm64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Artifact {
    /// One image.
    Image(Image),
    /// Images, one per platform, in the order asked, and the index's JSON.
    Index {
        /// The images.
        images: Vec<Image>,
        /// The OCI image index JSON.
        index: Vec<u8>,
    },
}

impl Artifact {
    /// An index over `images` (each image's platform read from its config).
    pub fn index(images: Vec<Image>) -> Result<Self, String> {
        if images.is_empty() {
            return Err("an image index needs at least one image".into());
        }
        let manifests = images
            .iter()
            .map(|image| {
                let config: Value = serde_json::from_slice(&image.config)
                    .map_err(|e| format!("an image config: {e}"))?;
                let mut platform = Map::new();
                for key in ["architecture", "os", "variant"] {
                    if let Some(v) = config.get(key).filter(|v| v.is_string()) {
                        platform.insert(key.into(), v.clone());
                    }
                }
                Ok(json!({
                    "mediaType": media::MANIFEST,
                    "digest": image.digest(),
                    "size": image.manifest.len(),
                    "platform": platform,
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media::INDEX,
            "manifests": manifests,
        });
        Ok(Artifact::Index {
            images,
            index: serde_json::to_vec(&index).map_err(|e| format!("the image index: {e}"))?,
        })
    }

    /// The images it holds.
    pub fn images(&self) -> &[Image] {
        match self {
            Artifact::Image(image) => std::slice::from_ref(image),
            Artifact::Index { images, .. } => images,
        }
    }

    /// The document a tag names: the manifest, or the index.
    pub fn manifest(&self) -> &[u8] {
        match self {
            Artifact::Image(image) => &image.manifest,
            Artifact::Index { index, .. } => index,
        }
    }

    /// That document's media type.
    pub fn media_type(&self) -> &'static str {
        match self {
            Artifact::Image(_) => media::MANIFEST,
            Artifact::Index { .. } => media::INDEX,
        }
    }

    /// `sha256:` of that document: what a tag resolves to.
    pub fn digest(&self) -> String {
        sha256(self.manifest())
    }

    /// The image a single-image consumer (`docker load` of Docker's
    /// `manifest.json`) gets: the one for this machine's platform if there
    /// is one, else the first.
    pub fn for_host(&self) -> &Image {
        let images = self.images();
        let host = Platform::host();
        images
            .iter()
            .find(|image| {
                serde_json::from_slice::<Value>(&image.config)
                    .is_ok_and(|c| platform_matches(&host, &c))
            })
            .unwrap_or(&images[0])
    }
}

/// What an image is assembled from.
pub struct Assembly<'a> {
    /// The base image's config, when not `scratch`: its fields outside
    /// `config`, `rootfs` and `history` are kept.
    pub base_config: Option<&'a Value>,
    /// The runtime settings (the base's, changed by the Dockerfile).
    pub runtime: &'a RuntimeConfig,
    /// All layers, bottom first.
    pub layers: Vec<Layer>,
    /// The base's history entries (as they are) followed by this build's.
    pub history: Vec<Value>,
    /// `MAINTAINER`, recorded as the config's `author`.
    pub author: Option<&'a str>,
    /// The epoch second recorded.
    pub created: u64,
    /// The platform.
    pub platform: &'a Platform,
}

/// The image config as kiln writes it: the OCI image configuration plus
/// the Docker fields kiln's instructions set (`Healthcheck`, `OnBuild`,
/// `Shell`), which `oci-spec`'s `ImageConfiguration` has no room for.
/// Field order is fixed, so the bytes (and the image ID) depend only on the
/// values.
#[derive(Debug, Serialize)]
struct ImageConfig<'a> {
    created: String,
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: ContainerConfig<'a>,
    rootfs: RootFs,
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<&'a str>,
    history: Vec<Value>,
    /// A base image's other fields (`os.version`, ...), kept as they are.
    #[serde(flatten)]
    base: Map<String, Value>,
}

/// The config's `rootfs`.
#[derive(Debug, Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

/// The config's `config` object, Docker's field names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<&'a str, Empty>,
    env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<&'a Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    volumes: BTreeMap<&'a str, Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    on_build: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<&'a [String]>,
}

/// `{}`, as Docker writes set members.
#[derive(Debug, Serialize)]
struct Empty {}

impl<'a> ContainerConfig<'a> {
    fn of(r: &'a RuntimeConfig) -> Self {
        Self {
            user: r.user.as_deref(),
            exposed_ports: r
                .exposed_ports
                .iter()
                .map(|p| (p.as_str(), Empty {}))
                .collect(),
            env: &r.env,
            entrypoint: r.entrypoint.as_deref(),
            cmd: r.cmd.as_deref(),
            healthcheck: r.healthcheck.as_ref(),
            volumes: r.volumes.iter().map(|v| (v.as_str(), Empty {})).collect(),
            working_dir: r.working_dir.as_deref(),
            labels: &r.labels,
            stop_signal: r.stop_signal.as_deref(),
            on_build: &r.on_build,
            shell: r.shell.as_deref(),
        }
    }
}

/// Assemble config and manifest (an `oci-spec` `ImageManifest`).
pub fn assemble(a: Assembly<'_>) -> Result<Image, String> {
    let mut base = match a.base_config {
        Some(Value::Object(base)) => base.clone(),
        _ => Map::new(),
    };
    // Set here, or Docker's and not carried over.
    for k in [
        "created",
        "architecture",
        "os",
        "variant",
        "config",
        "rootfs",
        "author",
        "history",
        "container",
        "container_config",
        "docker_version",
    ] {
        base.remove(k);
    }
    // A variant asked for is recorded; without one, a base's stays
    // (`linux/arm64` pulls `linux/arm64/v8`).
    let base_variant = a
        .base_config
        .and_then(|c| c.get("variant"))
        .and_then(Value::as_str);
    let author = a.author.or_else(|| {
        a.base_config
            .and_then(|c| c.get("author"))
            .and_then(Value::as_str)
    });
    let config = ImageConfig {
        created: rfc3339(a.created),
        architecture: &a.platform.architecture,
        os: &a.platform.os,
        variant: a.platform.variant.as_deref().or(base_variant),
        config: ContainerConfig::of(a.runtime),
        rootfs: RootFs {
            kind: "layers",
            diff_ids: a.layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        author,
        history: a.history,
        base,
    };
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let descriptor = |media_type: MediaType, digest: &str, size: u64| {
        OciDigest::from_str(digest)
            .map(|d| Descriptor::new(media_type, size, d))
            .map_err(|e| format!("blob digest {digest:?}: {e}"))
    };
    let layers = a
        .layers
        .iter()
        .map(|l| {
            descriptor(
                MediaType::from(l.media_type.as_str()),
                &l.digest,
                l.blob.len(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &sha256(&config_bytes),
            config_bytes.len() as u64,
        )?)
        .layers(layers)
        .build()
        .map_err(|e| format!("the image manifest: {e}"))?;
    let manifest = serde_json::to_vec(&manifest).map_err(|e| format!("the image manifest: {e}"))?;
    Ok(Image {
        layers: a.layers,
        config: config_bytes,
        manifest,
    })
}

/// Days-from-civil (Howard Hinnant's algorithm) for a UTC timestamp.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str) -> Entry {
        Entry {
            kind: Kind::File(Data::from(data.to_string())),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    fn tree(items: &[(&str, &str)]) -> BTreeMap<String, Entry> {
        items
            .iter()
            .map(|(p, d)| (p.to_string(), file(d)))
            .collect()
    }

    #[test]
    fn layers_are_reproducible_with_parents_added() {
        let a = layer_tar(&tree(&[("b/x", "1"), ("a", "2")]), 0).expect("layer");
        let b = layer_tar(&tree(&[("a", "2"), ("b/x", "1")]), 0).expect("layer");
        assert_eq!(a, b);
        let c = layer_tar(&tree(&[("a", "2"), ("b/x", "changed")]), 0).expect("layer");
        assert_ne!(sha256(&a), sha256(&c));
        let tar_bytes = layer_tar(&tree(&[("b/c/x", "1")]), 7).expect("tar");
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let h = entry.header();
            assert_eq!(h.mtime().expect("mtime"), 7);
            assert_eq!(h.uid().expect("uid"), 0);
            seen.push(entry.path().expect("path").to_string_lossy().into_owned());
        }
        assert_eq!(seen, vec!["b/", "b/c/", "b/c/x"]);
    }

    #[test]
    fn long_names_and_symlinks_survive() {
        let long = format!("{}/file.txt", "d".repeat(150));
        let mut t = tree(&[(long.as_str(), "x")]);
        t.insert(
            "link".into(),
            Entry {
                kind: Kind::Symlink("d/file.txt".into()),
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
        );
        let bytes = layer_tar(&t, 0).expect("tar");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                e.path().expect("path").to_string_lossy().into_owned()
            })
            .collect();
        assert!(names.contains(&long), "{names:?}");
        assert!(names.contains(&"link".to_string()));
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm64").expect("platform");
        assert!(platform_matches(
            &p,
            &json!({"os": "linux", "architecture": "arm64", "variant": "v8"})
        ));
        assert!(!platform_matches(
            &p,
            &json!({"os": "linux", "architecture": "amd64"})
        ));
        let v7 = Platform::parse("linux/arm/v7").expect("platform");
        assert!(!platform_matches(
            &v7,
            &json!({"os": "linux", "architecture": "arm", "variant": "v6"})
        ));
        assert!(Platform::parse("linux").is_err());
    }

    /// The exact bytes kiln writes, pinned: a config over a base (with
    /// fields kiln keeps, drops and replaces) and its manifest. Any change
    /// to the documents' shape changes these digests; change them only on
    /// purpose, and say so in the README.
    #[test]
    fn golden_config_and_manifest_digests() {
        let platform = Platform::parse("linux/arm64").expect("platform");
        let base = json!({
            "architecture": "arm64",
            "variant": "v8",
            "os": "linux",
            "os.version": "6.1",
            "author": "base maintainer",
            "container": "abc",
            "docker_version": "20.10",
            "config": {"Env": ["OLD=1"]},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{"created_by": "base"}],
        });
        let tar_bytes = layer_tar(&tree(&[("app/hello.txt", "hi")]), 0).expect("tar");
        let layer = Layer::compress(&tar_bytes, sha256(&tar_bytes)).expect("gzip");
        let runtime = RuntimeConfig {
            env: vec!["PATH=/bin".into(), "A=1".into()],
            cmd: Some(vec!["cat".into(), "/app/hello.txt".into()]),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            working_dir: Some("/app".into()),
            user: Some("65534".into()),
            labels: [("org.example".to_string(), "x".to_string())].into(),
            exposed_ports: ["80/tcp".to_string()].into(),
            volumes: ["/data".to_string()].into(),
            stop_signal: Some("SIGTERM".into()),
            healthcheck: Some(json!({"Test": ["CMD", "true"]})),
            on_build: vec!["COPY . /src".into()],
            shell: Some(vec!["/bin/bash".into(), "-c".into()]),
        };
        let image = assemble(Assembly {
            base_config: Some(&base),
            runtime: &runtime,
            layers: vec![layer],
            history: vec![history_entry(0, "COPY hello.txt /app/", false)],
            author: None,
            created: 1_700_000_000,
            platform: &platform,
        })
        .expect("assembles");
        let config: Value = serde_json::from_slice(&image.config).expect("json");
        assert_eq!(config["variant"], "v8", "a base's variant stays");
        assert_eq!(config["author"], "base maintainer");
        assert_eq!(config["os.version"], "6.1", "other base fields are kept");
        assert!(config.get("container").is_none() && config.get("docker_version").is_none());
        assert_eq!(config["config"]["Healthcheck"]["Test"][0], "CMD");
        assert_eq!(config["config"]["ExposedPorts"]["80/tcp"], json!({}));
        let manifest: Value = serde_json::from_slice(&image.manifest).expect("json");
        assert_eq!(manifest["mediaType"], media::MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], media::CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], media::LAYER_GZIP);
        assert_eq!(image.config_digest(), GOLDEN_CONFIG, "config bytes changed");
        assert_eq!(image.digest(), GOLDEN_MANIFEST, "manifest bytes changed");
    }

    const GOLDEN_CONFIG: &str =
        "sha256:01c132be80f5667d9a9e0678071ab22c94c69eb562a7daa9d40e219211e0cd08";
    const GOLDEN_MANIFEST: &str =
        "sha256:35d8e931052b5ffc5a67c598b51c9ef8770cbecd65c2264bf3ca1d52aae9d6a2";
}
