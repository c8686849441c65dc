//! The build context as the builder reads it: the host's uncompressed
//! archive, mapped, and its files by path, each a slice of it.

use std::{collections::BTreeMap, path::Path};

use bytes::Bytes;

use crate::{
    error::{at, BuildError},
    fs::tree,
    image::Entry,
};

/// The build context: the host's archive (an uncompressed tar), mapped,
/// and its files by path, each a slice of it.
#[derive(Default)]
pub struct ContextFiles {
    pub(crate) archive: Bytes,
    pub(crate) files: BTreeMap<String, Entry>,
}

impl ContextFiles {
    /// Map and index the archive at `path`.
    pub fn open(path: &Path) -> Result<Self, BuildError> {
        let (archive, files) = read_context(path)?;
        Ok(Self { archive, files })
    }

    /// The regular file at `path` (relative to the context root), as text.
    pub fn text(&self, path: &str) -> Option<String> {
        match &self.files.get(path)?.kind {
            crate::image::Kind::File(data) => Some(String::from_utf8_lossy(data).into_owned()),
            _ => None,
        }
    }
}

/// Read the context archive (mapped): every file a slice of it.
fn read_context(path: &Path) -> Result<(Bytes, BTreeMap<String, Entry>), BuildError> {
    let failed = |e: std::io::Error| at(0, format!("build context {}: {e}", path.display()));
    let bytes = match crate::store::map(path) {
        Some(b) => b,
        None => Bytes::from(std::fs::read(path).map_err(failed)?),
    };
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(at(
            0,
            format!(
                "build context {}: pass the uncompressed tar",
                path.display()
            ),
        ));
    }
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    let members = tree::members_utf8(&bytes)
        .map_err(|e| at(0, format!("build context {}: {e}", path.display())))?;
    for (name, member) in members {
        // Docker ignores the context's owners: files are root's.
        let entry = match member {
            tree::Member::Entry(e) => e,
            tree::Member::HardLink(target, e) => match files.get(&target) {
                Some(t) => Entry {
                    kind: t.kind.clone(),
                    ..e
                },
                None => continue,
            },
        };
        files.insert(
            name,
            Entry {
                uid: 0,
                gid: 0,
                ..entry
            },
        );
    }
    Ok((bytes, files))
}
