//! File trees as the builder keeps them: paths (no leading `/`) to
//! [`Entry`]s, read from tar archives without reading file data (a file is
//! a range of its archive).

use std::collections::BTreeMap;

use crate::{
    data::Data,
    image::{Entry, Kind},
};

pub use kiln_archive::path::{clean_in_root as clean, escapes};

/// Remove everything below `path` (not `path` itself).
pub fn remove_under(fs: &mut BTreeMap<String, Entry>, path: &str) {
    let prefix = format!("{path}/");
    let under: Vec<String> = fs
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in under {
        fs.remove(&k);
    }
}

/// One member of a tar archive.
pub enum Member {
    /// A file, folder or symlink.
    Entry(Entry),
    /// A hard link to an earlier member (its cleaned path).
    HardLink(String, Entry),
}

/// The members of the tar archive `data`, in order, by cleaned path (names
/// that are not UTF-8 kept exactly, [`super::name`]); a file's contents are
/// a range of `data` (headers are read; contents are skipped). Devices,
/// FIFOs and other kinds are left out.
pub fn members(data: &Data) -> Result<Vec<(String, Member)>, String> {
    let failed = |e: std::io::Error| e.to_string();
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(data.reader());
    for entry in archive.entries_with_seek().map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let path = clean(&super::name::from_bytes(&entry.path_bytes()));
        if path.is_empty() {
            continue;
        }
        let h = entry.header();
        let meta = |kind| Entry {
            kind,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
        };
        let link = || -> Result<String, String> {
            Ok(entry
                .link_name_bytes()
                .map(|l| super::name::from_bytes(&l).into_owned())
                .unwrap_or_default())
        };
        let member = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let start = entry.raw_file_position();
                let size = entry.size();
                if start.saturating_add(size) > data.len() {
                    return Err(format!("{} is cut short", super::name::shown(&path)));
                }
                Member::Entry(meta(Kind::File(data.slice(start, size))))
            }
            tar::EntryType::Directory => Member::Entry(meta(Kind::Dir)),
            tar::EntryType::Symlink => Member::Entry(meta(Kind::Symlink(link()?))),
            tar::EntryType::Link => Member::HardLink(clean(&link()?), meta(Kind::Dir)),
            _ => continue,
        };
        out.push((path, member));
    }
    Ok(out)
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn names_that_are_not_utf8_stay_apart_and_round_trip_into_a_layer() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in [
            (&b"a\xff.t"[..], b"1"),
            (b"a\xfe.t", b"2"),
            (b"a\xef\xbf\xbd.t", b"3"),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(1);
            h.set_mode(0o644);
            h.as_mut_bytes()[..name.len()].copy_from_slice(name);
            h.set_cksum();
            b.append(&h, &body[..]).expect("append");
        }
        let data = Data::from(b.into_inner().expect("tar"));
        let members = members(&data).expect("members");
        assert_eq!(members.len(), 3, "three names, three files");
        let tree: BTreeMap<String, Entry> = members
            .into_iter()
            .map(|(p, m)| match m {
                Member::Entry(e) | Member::HardLink(_, e) => (p, e),
            })
            .collect();
        assert_eq!(tree.len(), 3);
        // A layer of them holds the very same names.
        let layer = crate::image::layer_tar(&tree, 0).expect("layer");
        let mut names: Vec<Vec<u8>> = tar::Archive::new(layer.as_slice())
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry").path_bytes().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                b"a\xef\xbf\xbd.t".to_vec(),
                b"a\xfe.t".to_vec(),
                b"a\xff.t".to_vec()
            ]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_subtrees_removed() {
        assert_eq!(clean("./a//b/../c/"), "a/c");
        assert_eq!(clean("/../../etc/passwd"), "etc/passwd");
        assert!(escapes("../x") && escapes("a/../../x") && escapes("/../x"));
        assert!(!escapes("a/../x") && !escapes("./x") && !escapes("/x"));
        let mut fs: BTreeMap<String, Entry> = ["a", "a/b", "a/b/c", "ab"]
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    Entry {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    },
                )
            })
            .collect();
        remove_under(&mut fs, "a");
        assert_eq!(fs.keys().collect::<Vec<_>>(), vec!["a", "ab"]);
    }
}
