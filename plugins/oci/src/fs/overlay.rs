//! A stack of layers applied into one tree, with overlay whiteouts.

use std::{collections::BTreeMap, io::Read};

use bytes::Bytes;

use crate::{
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

/// Apply one layer onto `files`, with its whiteouts.
pub fn apply(files: &mut BTreeMap<String, Entry>, layer: &Layer) -> Result<(), String> {
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
            remove_under(files, &gone);
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
