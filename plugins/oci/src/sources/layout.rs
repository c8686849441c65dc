//! Base images from an OCI image layout: a directory, or a tar archive of
//! one (what `--output type=oci` and newer `docker save` write).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::{
    data::Data,
    fs::tree::{self, Member},
    image::{Entry, Kind, Platform},
    store::has_digest,
};

use super::{digest_of, from_manifest, is_index, pick_platform, Base};

/// The regular files of the tar archive `data`, by path (ranges of it).
pub fn archive_files(data: &Data) -> Result<BTreeMap<String, Data>, String> {
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

/// The bytes of a JSON document (an index, a manifest, a config): at most
/// 4 MiB, as registries bound manifests.
pub(crate) fn document(data: &Data, what: &str) -> Result<bytes::Bytes, String> {
    if data.len() > 4 << 20 {
        return Err(format!(
            "{what}: a {} byte document where a manifest, index or config was expected",
            data.len()
        ));
    }
    data.bytes().map_err(|e| format!("{what}: {e}"))
}

/// The blobs of an OCI layout: a directory, or a tar archive of one.
enum Layout {
    Dir(PathBuf),
    Archive(BTreeMap<String, Data>),
}

impl Layout {
    fn open(path: &Path) -> Result<Self, String> {
        if path.is_dir() {
            return Ok(Self::Dir(path.to_path_buf()));
        }
        let data = std::fs::File::open(path)
            .and_then(Data::whole)
            .map_err(|e| format!("reading the OCI layout {}: {e}", path.display()))?;
        Ok(Self::Archive(
            archive_files(&data).map_err(|e| format!("{}: {e}", path.display()))?,
        ))
    }

    fn read(&self, rel: &str, what: &str) -> Result<Data, String> {
        match self {
            Self::Dir(root) => std::fs::File::open(root.join(rel))
                .and_then(Data::whole)
                .map_err(|e| format!("{what}: {rel}: {e}")),
            Self::Archive(files) => files
                .get(rel)
                .cloned()
                .ok_or_else(|| format!("{what}: {rel} is missing")),
        }
    }

    fn blob(&self, digest: &str, what: &str) -> Result<Data, String> {
        let hex = digest.trim_start_matches("sha256:");
        if hex.contains(['/', '.']) {
            return Err(format!("{what}: bad digest {digest:?}"));
        }
        let data = self.read(&format!("blobs/sha256/{hex}"), what)?;
        if !has_digest(&data, digest).map_err(|e| format!("{what}: blob {digest}: {e}"))? {
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
    files: BTreeMap<String, Data>,
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
    let index: Value = serde_json::from_slice(&document(&layout.read("index.json", what)?, what)?)
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
        doc = serde_json::from_slice(&document(&layout.blob(&digest, what)?, what)?)
            .map_err(|e| format!("{what}: manifest {digest} is not JSON: {e}"))?;
        let media_type = doc.get("mediaType").and_then(Value::as_str).unwrap_or("");
        if !is_index(media_type, &doc) {
            break;
        }
        digest = digest_of(pick_platform(&doc, platform, what)?, what)?;
    }
    from_manifest(what, &doc, |d| layout.blob(d, what))
}
