//! An image as an archive that `docker load` reads (Docker's
//! `manifest.json` with `RepoTags`) and that is also an OCI image layout
//! (`oci-layout`, `index.json` naming the tags), written atomically and
//! reproducibly.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write},
    path::Path,
};

use kiln_archive::atomic::AtomicFile;
use serde_json::{json, Value};

use crate::{
    data::Data,
    image::{media, Artifact},
};

/// What kiln last wrote at an output path: the archive (its image's digest
/// and tags) and the file's identity just after the write. A file whose
/// identity still matches, ctime included (which nothing but a change to
/// the file moves), still holds those bytes, so writing them again is
/// skipped.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct Written {
    archive: String,
    file: String,
}

fn identity(path: &Path) -> Option<String> {
    let m = std::fs::symlink_metadata(path).ok()?;
    m.is_file()
        .then(|| kiln_archive::identity::Identity::of(&m).to_string())
}

/// Write `artifact` to `out` as [`write_archive`] does, unless `out` is
/// the file an earlier build wrote with the very same archive and nothing
/// has touched it since (the records are kept in `records`). Returns
/// whether it wrote.
pub fn write_archive_unless_there(
    artifact: &Artifact,
    tags: &[String],
    out: &Path,
    records: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<bool, WriteError> {
    use sha2::{Digest, Sha256};
    let archive = format!(
        "{:x}",
        Sha256::digest(format!(
            "kiln-archive-v1\0{}\0{}",
            artifact.digest(),
            tags.join("\0")
        ))
    );
    let place = std::fs::canonicalize(
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
    .map(|d| d.join(out.file_name().unwrap_or_default()))
    .unwrap_or_else(|_| out.to_path_buf());
    let record = records.join(format!(
        "{:x}",
        Sha256::digest(place.as_os_str().as_encoded_bytes())
    ));
    let last: Option<Written> = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let (Some(last), Some(now)) = (&last, identity(out)) {
        if last.archive == archive && last.file == now {
            return Ok(false);
        }
    }
    write_archive(artifact, tags, out, cancelled)?;
    // The record is an optimisation: failing to keep it costs a write next time.
    if let Some(file) = identity(out) {
        let _ = std::fs::create_dir_all(records).and_then(|()| {
            let bytes = serde_json::to_vec(&Written { archive, file }).unwrap_or_default();
            let temp = AtomicFile::beside(&record).map_err(std::io::Error::other)?;
            temp.file().write_all(&bytes)?;
            // A hint, as unsynced as the archive it describes (a sync here
            // would wait for the archive's data).
            temp.commit_unsynced().map_err(std::io::Error::other)
        });
    }
    Ok(true)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// Write `artifact` as an archive `docker load` reads (Docker's
/// `manifest.json` with `RepoTags`: for an index, the image for this
/// machine's platform) that is also an OCI image layout (`oci-layout`,
/// `index.json` naming the tags, each pointing at the manifest or the
/// image index, as buildx's `type=oci` does), atomically: through a
/// temporary file beside `out`, renamed when whole, so a failure leaves
/// nothing at `out`. Entries are sorted and timestamps fixed, so the
/// archive is reproducible. `cancelled` is asked between entries and
/// before the rename: a cancelled write leaves nothing at `out`.
pub fn write_archive(
    artifact: &Artifact,
    tags: &[String],
    out: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), WriteError> {
    let mut files: BTreeMap<String, Data> = BTreeMap::new();
    files.insert(
        "oci-layout".into(),
        Data::from(r#"{"imageLayoutVersion":"1.0.0"}"#),
    );
    for image in artifact.images() {
        files.insert(
            blob_path(&image.config_digest()),
            Data::from(image.config.clone()),
        );
        files.insert(
            blob_path(&image.digest()),
            Data::from(image.manifest.clone()),
        );
        for layer in &image.layers {
            files.insert(blob_path(&layer.digest), layer.blob.clone());
        }
    }
    files.insert(
        blob_path(&artifact.digest()),
        Data::from(artifact.manifest().to_vec()),
    );
    let manifests: Vec<Value> = tags
        .iter()
        .map(|tag| {
            let ref_name = tag
                .rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
                .map_or("latest", |(_, t)| t);
            json!({
                "mediaType": artifact.media_type(),
                "digest": artifact.digest(),
                "size": artifact.manifest().len(),
                "annotations": {
                    "io.containerd.image.name": tag,
                    "org.opencontainers.image.ref.name": ref_name,
                },
            })
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::INDEX,
        "manifests": manifests,
    });
    files.insert(
        "index.json".into(),
        Data::from(serde_json::to_vec(&index).unwrap_or_default()),
    );
    let image = artifact.for_host();
    let docker_manifest = json!([{
        "Config": blob_path(&image.config_digest()),
        "RepoTags": tags,
        "Layers": image.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
    }]);
    files.insert(
        "manifest.json".into(),
        Data::from(serde_json::to_vec(&docker_manifest).unwrap_or_default()),
    );

    let temp =
        AtomicFile::beside(out).map_err(|e| WriteError::from_io(&e.source, e.to_string()))?;
    // As `docker save -o` leaves it: 0666 less the umask.
    temp.set_mode(kiln_archive::atomic::created_mode(0o666))
        .map_err(|e| WriteError::from_io(&e.source, e.to_string()))?;
    let failed =
        |e: std::io::Error| WriteError::from_io(&e, format!("writing {}: {e}", out.display()));
    {
        let mut builder = tar::Builder::new(BufWriter::with_capacity(1 << 20, temp.file()));
        for d in ["blobs/", "blobs/sha256/"] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_mtime(0);
            h.set_size(0);
            builder
                .append_data(&mut h, d, std::io::empty())
                .map_err(failed)?;
        }
        for (path, data) in &files {
            if cancelled() {
                return Err(WriteError::Cancelled);
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_size(data.len());
            // Blobs are read from the cache in chunks, never held whole.
            let contents = std::io::BufReader::with_capacity(crate::data::CHUNK, data.reader());
            builder
                .append_data(&mut h, path, contents)
                .map_err(failed)?;
        }
        let mut writer = builder.into_inner().map_err(failed)?;
        writer.flush().map_err(failed)?;
    }
    if cancelled() {
        return Err(WriteError::Cancelled);
    }
    // Not synced, as `docker save` and buildx's exporters do not: the
    // rename keeps it whole against a crash or a kill of kiln.
    temp.commit_unsynced()
        .map_err(|e| WriteError::from_io(&e.source, e.to_string()))
}

/// Why an archive was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The build was cancelled while writing.
    Cancelled,
    /// The disk is full (or a quota reached).
    Full(String),
    /// Anything else (a missing folder, no permission).
    Other(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Cancelled => f.write_str("cancelled"),
            WriteError::Full(m) | WriteError::Other(m) => f.write_str(m),
        }
    }
}

impl WriteError {
    /// `message` about `error`: [`WriteError::Full`] when the disk is full.
    pub(crate) fn from_io(error: &std::io::Error, message: String) -> Self {
        if crate::error::is_full(error) {
            WriteError::Full(message)
        } else {
            WriteError::Other(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::image::{
        assemble, history_entry, layer_tar, sha256, Assembly, Entry, Kind, Layer, Platform,
        RuntimeConfig,
    };

    fn tree(items: &[(&str, &str)]) -> BTreeMap<String, Entry> {
        items
            .iter()
            .map(|(p, d)| {
                (
                    p.to_string(),
                    Entry {
                        kind: Kind::File(crate::data::Data::from(d.to_string())),
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_same_inputs_give_the_same_archive() {
        let platform = Platform::parse("linux/amd64").expect("platform");
        let build = || {
            let tar_bytes = layer_tar(&tree(&[("app/hello.txt", "hi")]), 0).expect("tar");
            let layer = Layer::compress(&tar_bytes, sha256(&tar_bytes)).expect("gzip");
            let runtime = RuntimeConfig {
                env: vec!["A=1".into()],
                cmd: Some(vec!["cat".into(), "/app/hello.txt".into()]),
                ..Default::default()
            };
            assemble(Assembly {
                base_config: None,
                runtime: &runtime,
                layers: vec![layer],
                history: vec![history_entry(0, "COPY hello.txt /app/", false)],
                author: None,
                created: 0,
                platform: &platform,
            })
            .expect("assembles")
        };
        assert_eq!(build().digest(), build().digest());
        let dir = tempfile::tempdir().expect("tempdir");
        let one = dir.path().join("one.tar");
        let two = dir.path().join("two.tar");
        let tags = vec!["x:1".to_string()];
        write_archive(&Artifact::Image(build()), &tags, &one, &|| false).expect("write");
        // Cancelled while writing: nothing at the destination.
        let stopped = one.with_extension("cancelled");
        let asked = std::cell::Cell::new(0);
        let e = write_archive(&Artifact::Image(build()), &tags, &stopped, &|| {
            asked.set(asked.get() + 1);
            asked.get() > 2
        })
        .expect_err("cancelled");
        assert_eq!(e, WriteError::Cancelled);
        assert!(!stopped.exists());
        write_archive(&Artifact::Image(build()), &tags, &two, &|| false).expect("write");
        assert_eq!(
            std::fs::read(one).expect("read"),
            std::fs::read(two).expect("read")
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(names.len(), 2, "no temporary files left");

        // Written again only when the file is not the one written last.
        let records = dir.path().join("records");
        let image = Artifact::Image(build());
        let out = dir.path().join("out.tar");
        let write = |tags: &[String]| {
            write_archive_unless_there(&image, tags, &out, &records, &|| false).expect("write")
        };
        assert!(write(&tags));
        let bytes = std::fs::read(&out).expect("read");
        assert!(!write(&tags), "unchanged: kept");
        assert!(write(&["x:2".to_string()]), "other tags");
        assert!(!write(&["x:2".to_string()]));
        std::fs::write(&out, b"changed by hand").expect("write");
        assert!(write(&["x:2".to_string()]), "touched: written");
        std::fs::remove_file(&out).expect("rm");
        assert!(write(&tags), "gone: written");
        assert_eq!(std::fs::read(&out).expect("read"), bytes);
    }
}
