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

/// The members of the tar archive `data`, in order, by cleaned path; a
/// file's contents are a range of `data` (headers are read; contents are
/// skipped). Devices, FIFOs and other kinds are left out.
pub fn members(data: &Data) -> Result<Vec<(String, Member)>, String> {
    read_members(data, false)
}

/// [`members`], refusing a name that is not UTF-8 (a build context's):
/// kiln keys the image's files by UTF-8 names, so two such names would
/// become one file. The error shows the name with its bytes escaped.
pub fn members_utf8(data: &Data) -> Result<Vec<(String, Member)>, String> {
    read_members(data, true)
}

fn read_members(data: &Data, utf8_only: bool) -> Result<Vec<(String, Member)>, String> {
    let failed = |e: std::io::Error| e.to_string();
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(data.reader());
    for entry in archive.entries_with_seek().map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let raw = entry.path_bytes();
        if utf8_only && std::str::from_utf8(&raw).is_err() {
            return Err(format!(
                "{}: a name that is not UTF-8; kiln's oci builder keeps names as UTF-8, where it \
                 would become the same file as another: rename it, or leave it out with \
                 .dockerignore",
                raw.escape_ascii()
            ));
        }
        let path = clean(&entry.path().map_err(failed)?.to_string_lossy());
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
                .link_name()
                .map_err(failed)?
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default())
        };
        let member = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let start = entry.raw_file_position();
                let size = entry.size();
                if start.saturating_add(size) > data.len() {
                    return Err(format!("{path} is cut short"));
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
mod utf8_tests {
    use super::*;

    #[test]
    fn a_context_name_that_is_not_utf8_is_refused_naming_its_bytes() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        h.as_mut_bytes()[..4].copy_from_slice(b"a\xff.t");
        h.set_cksum();
        b.append(&h, &b"x"[..]).expect("append");
        let data = Data::from(b.into_inner().expect("tar"));
        let Err(e) = members_utf8(&data) else {
            panic!("a name that is not UTF-8 was taken")
        };
        assert!(e.contains("a\\xff.t") && e.contains("not UTF-8"), "{e}");
        assert_eq!(members(&data).expect("lossy").len(), 1);
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
