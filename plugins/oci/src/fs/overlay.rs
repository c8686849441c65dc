//! A stack of layers applied into one tree, with overlay whiteouts.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
};

use crate::{
    data::Data,
    fs::tree::{self, remove_under, Member},
    image::{Entry, Kind, Layer},
};

/// The files of `layers` applied in order, with overlay whiteouts
/// (`.wh.NAME` removes `NAME`, `.wh..wh..opq` empties its directory).
pub fn filesystem(layers: &[Layer]) -> Result<BTreeMap<String, Entry>, String> {
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    for layer in layers {
        apply(&mut files, layer)?;
    }
    Ok(files)
}

/// The uncompressed tar of `layer`: the blob itself, or (gzip'd)
/// decompressed in chunks, checked against the layer's `diff_id` when it
/// has one, and kept in the cache's `unpacked/` folder by that `diff_id`
/// (so a base is decompressed once, not at every build); without a
/// `diff_id` or a cache, into an unnamed scratch file.
pub fn plain_tar(layer: &Layer) -> Result<Data, String> {
    if !layer.blob.starts_with(&[0x1f, 0x8b]) {
        return Ok(layer.blob.clone());
    }
    let failed = |e: std::io::Error| format!("reading layer {}: {e}", layer.digest);
    let kept = crate::store::unpacked_path(&layer.diff_id);
    if let Some(path) = &kept {
        if let Ok(file) = std::fs::File::open(path) {
            kiln_archive::atomic::touch(path);
            return Data::whole(file).map_err(failed);
        }
    }
    // Into the cache, checked; a cache that cannot take it (a full disk)
    // is an optimisation lost: then into an unnamed file in the system's
    // temp folder.
    if let Some(path) = &kept {
        match unpack_kept(layer, path) {
            Ok(data) => return Ok(data),
            Err(Unpack::Damaged(e)) => return Err(e),
            Err(Unpack::Cache) => {}
        }
    }
    let mut file = tempfile::tempfile().map_err(failed)?;
    let got = unpack_into(layer, &mut file).map_err(failed)?;
    check(layer, &got)?;
    Data::whole(file).map_err(failed)
}

enum Unpack {
    /// The layer is not what its digests say.
    Damaged(String),
    /// The cache could not take it.
    Cache,
}

fn check(layer: &Layer, got: &str) -> Result<(), String> {
    if layer.diff_id.starts_with("sha256:") && got != layer.diff_id {
        return Err(format!(
            "layer {}: its contents are {got}, but the image config says {}: a damaged or \
             altered image",
            layer.digest, layer.diff_id
        ));
    }
    Ok(())
}

/// Unpack `layer` into the cache at `path`, renamed into place once checked.
fn unpack_kept(layer: &Layer, path: &std::path::Path) -> Result<Data, Unpack> {
    let mut temp = kiln_archive::atomic::AtomicFile::beside(path).map_err(|_| Unpack::Cache)?;
    let got = match unpack_into(layer, temp.file_mut()) {
        Ok(got) => got,
        Err(e) if crate::error::is_full(&e) => return Err(Unpack::Cache),
        Err(e) => {
            return Err(Unpack::Damaged(format!(
                "reading layer {}: {e}",
                layer.digest
            )))
        }
    };
    check(layer, &got).map_err(Unpack::Damaged)?;
    temp.commit().map_err(|_| Unpack::Cache)?;
    std::fs::File::open(path)
        .and_then(Data::whole)
        .map_err(|_| Unpack::Cache)
}

/// Decompress `layer`'s blob into `file` in chunks; the digest of what was
/// written.
fn unpack_into(layer: &Layer, file: &mut std::fs::File) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut gz = flate2::read::MultiGzDecoder::new(layer.blob.reader());
    let mut buf = vec![0u8; crate::data::CHUNK];
    loop {
        let n = match gz.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buf[..n]);
        file.write_all(&buf[..n])?;
    }
    Ok(format!("sha256:{:x}", hash.finalize()))
}

/// What a layer does to the tree below it, read from its tar.
pub struct Changes {
    /// Folders whose contents below are hidden (`DIR/.wh..wh..opq`).
    pub opaque: Vec<String>,
    /// Paths removed from below (`.wh.NAME`), with what is under them.
    pub whiteouts: Vec<String>,
    /// What it adds or replaces (a non-folder replaces what was under its
    /// path); a hard link holds its target's contents, from earlier in the
    /// layer, else from `below`.
    pub entries: BTreeMap<String, Entry>,
}

/// The [`Changes`] of `layer` over `below` (the tree it is applied onto,
/// when known: only hard links to files below need it).
pub fn changes(layer: &Layer, below: Option<&BTreeMap<String, Entry>>) -> Result<Changes, String> {
    let plain = plain_tar(layer)?;
    let members =
        tree::members(&plain).map_err(|e| format!("reading layer {}: {e}", layer.digest))?;
    let mut out = Changes {
        opaque: Vec::new(),
        whiteouts: Vec::new(),
        entries: BTreeMap::new(),
    };
    for (path, member) in members {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if name == ".wh..wh..opq" {
            out.opaque.push(parent.to_string());
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            out.whiteouts.push(if parent.is_empty() {
                gone.to_string()
            } else {
                format!("{parent}/{gone}")
            });
            continue;
        }
        let entry = match member {
            Member::Entry(e) => e,
            Member::HardLink(target, e) => {
                let found = out
                    .entries
                    .get(&target)
                    .or_else(|| below.and_then(|b| b.get(&target)));
                match found {
                    Some(t) => Entry {
                        kind: t.kind.clone(),
                        ..e
                    },
                    None => continue,
                }
            }
        };
        if !matches!(entry.kind, Kind::Dir) {
            remove_under(&mut out.entries, &path);
        }
        out.entries.insert(path, entry);
    }
    Ok(out)
}

/// Apply one layer onto `files`, with its whiteouts.
pub fn apply(files: &mut BTreeMap<String, Entry>, layer: &Layer) -> Result<(), String> {
    let changes = changes(layer, Some(files))?;
    for dir in changes.opaque {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        files.retain(|k, _| !k.starts_with(&prefix) || k.len() == prefix.len());
    }
    for gone in changes.whiteouts {
        files.remove(&gone);
        remove_under(files, &gone);
    }
    for (path, entry) in changes.entries {
        if !matches!(entry.kind, Kind::Dir) {
            remove_under(files, &path);
        }
        files.insert(path, entry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{layer_tar, sha256};

    fn layer(entries: &[(&str, Option<&str>)]) -> Layer {
        let tree: BTreeMap<String, Entry> = entries
            .iter()
            .map(|(p, d)| {
                (
                    p.to_string(),
                    Entry {
                        kind: match d {
                            Some(d) => Kind::File(crate::data::Data::from(d.to_string())),
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
            Some(&Kind::File(crate::data::Data::from("5")))
        );
    }
}
