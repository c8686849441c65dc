//! The build context as the builder reads it: the host's uncompressed
//! archive, open, and its files by path, each a range of it (read in
//! chunks when a layer is written, never all at once).

use std::{collections::BTreeMap, path::Path};

use crate::{
    data::Data,
    error::{at, BuildError},
    fs::tree,
    image::Entry,
};

/// The build context: the host's archive (an uncompressed tar), open,
/// and its files by path, each a range of it.
#[derive(Default)]
pub struct ContextFiles {
    pub(crate) archive: Data,
    pub(crate) files: BTreeMap<String, Entry>,
}

impl ContextFiles {
    /// Open and index the archive at `path`.
    pub fn open(path: &Path) -> Result<Self, BuildError> {
        let (archive, files) = read_context(path)?;
        Ok(Self { archive, files })
    }

    /// The regular file at `path` (relative to the context root), as text.
    pub fn text(&self, path: &str) -> Option<String> {
        match &self.files.get(path)?.kind {
            crate::image::Kind::File(data) => {
                Some(String::from_utf8_lossy(&data.bytes().ok()?).into_owned())
            }
            _ => None,
        }
    }
}

/// Read the context archive's headers: every file a range of it.
fn read_context(path: &Path) -> Result<(Data, BTreeMap<String, Entry>), BuildError> {
    let failed = |e: std::io::Error| at(0, format!("build context {}: {e}", path.display()));
    let bytes = Data::whole(std::fs::File::open(path).map_err(failed)?).map_err(failed)?;
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
    let members = tree::members(&bytes)
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
