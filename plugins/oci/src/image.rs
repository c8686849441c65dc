//! Reproducible OCI images: layers from files, the image config, the
//! manifest, and an archive that both `docker load` (Docker's
//! `manifest.json`) and OCI tools (`oci-layout`, `index.json`) read.
//!
//! Every byte depends only on the inputs: tar headers carry uid/gid and mode
//! as asked, a fixed mtime, no user or group names; entries are sorted; the
//! gzip stream is libdeflate's at a fixed level with a zero gzip mtime; the
//! config's `created` is the given epoch second.

use std::{collections::BTreeMap, io::Write, path::Path};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A file to put in a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFile {
    /// Path inside the image, without a leading `/`.
    pub path: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
}

/// A finished layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The gzip'd tar.
    pub blob: Vec<u8>,
    /// `sha256:` of the blob.
    pub digest: String,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Build a layer from files; parent directories are added (mode 0755,
/// root-owned) when missing. `mtime` is the epoch second every entry gets.
pub fn layer(files: &[LayerFile], mtime: u64) -> Result<Layer, String> {
    let tar_bytes = layer_tar(files, mtime)?;
    let mut compressor =
        libdeflater::Compressor::new(libdeflater::CompressionLvl::new(6).unwrap_or_default());
    let mut blob = vec![0u8; compressor.gzip_compress_bound(tar_bytes.len())];
    let n = compressor
        .gzip_compress(&tar_bytes, &mut blob)
        .map_err(|e| format!("compressing a layer: {e:?}"))?;
    blob.truncate(n);
    Ok(Layer {
        digest: sha256(&blob),
        diff_id: sha256(&tar_bytes),
        blob,
    })
}

/// The uncompressed tar of a layer.
fn layer_tar(files: &[LayerFile], mtime: u64) -> Result<Vec<u8>, String> {
    let mut sorted: Vec<&LayerFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut dirs: Vec<String> = Vec::new();
    for f in &sorted {
        let mut prefix = String::new();
        for part in f
            .path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            prefix.push_str(part);
            prefix.push('/');
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
            }
        }
    }
    dirs.sort();
    let mut builder = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(size);
        h
    };
    let mut entries: Vec<(String, Option<&LayerFile>)> =
        dirs.into_iter().map(|d| (d, None)).collect();
    entries.extend(sorted.iter().map(|f| (f.path.clone(), Some(*f))));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, file) in entries {
        match file {
            None => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0, 0, 0);
                builder
                    .append_data(&mut h, &path, std::io::empty())
                    .map_err(|e| format!("layer entry {path}: {e}"))?;
            }
            Some(f) => {
                let mut h = header(
                    tar::EntryType::Regular,
                    f.mode,
                    f.uid,
                    f.gid,
                    f.data.len() as u64,
                );
                builder
                    .append_data(&mut h, &path, f.data.as_slice())
                    .map_err(|e| format!("layer entry {path}: {e}"))?;
            }
        }
    }
    builder.into_inner().map_err(|e| format!("layer: {e}"))
}

/// The runtime settings of an image (the `config` object of the image config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    pub exposed_ports: Vec<String>,
    /// `VOLUME`s.
    pub volumes: Vec<String>,
    /// `STOPSIGNAL`.
    pub stop_signal: Option<String>,
}

/// A finished image: blobs and the documents that name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The layers, bottom first.
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

/// Assemble config and manifest. `created` is the epoch second recorded
/// (a fixed value, or `SOURCE_DATE_EPOCH`), `history` one line per layer.
pub fn assemble(
    runtime: &RuntimeConfig,
    layers: Vec<Layer>,
    history: &[String],
    created: u64,
    architecture: &str,
) -> Image {
    let created = rfc3339(created);
    let set = |items: &[String]| -> Value {
        Value::Object(items.iter().map(|i| (i.clone(), json!({}))).collect())
    };
    let mut config = serde_json::Map::new();
    config.insert("Env".into(), json!(runtime.env));
    if let Some(c) = &runtime.cmd {
        config.insert("Cmd".into(), json!(c));
    }
    if let Some(e) = &runtime.entrypoint {
        config.insert("Entrypoint".into(), json!(e));
    }
    if let Some(w) = &runtime.working_dir {
        config.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &runtime.user {
        config.insert("User".into(), json!(u));
    }
    if !runtime.labels.is_empty() {
        config.insert("Labels".into(), json!(runtime.labels));
    }
    if !runtime.exposed_ports.is_empty() {
        config.insert("ExposedPorts".into(), set(&runtime.exposed_ports));
    }
    if !runtime.volumes.is_empty() {
        config.insert("Volumes".into(), set(&runtime.volumes));
    }
    if let Some(s) = &runtime.stop_signal {
        config.insert("StopSignal".into(), json!(s));
    }
    let image_config = json!({
        "created": created,
        "architecture": architecture,
        "os": "linux",
        "config": Value::Object(config),
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        "history": history.iter().map(|h| json!({"created": created, "created_by": h})).collect::<Vec<_>>(),
    });
    let config_bytes = serde_json::to_vec(&image_config).unwrap_or_default();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(&config_bytes),
            "size": config_bytes.len(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": l.digest,
            "size": l.blob.len(),
        })).collect::<Vec<_>>(),
    });
    Image {
        layers,
        config: config_bytes,
        manifest: serde_json::to_vec(&manifest).unwrap_or_default(),
    }
}

/// Days-from-civil (Howard Hinnant's algorithm) for a UTC timestamp.
fn rfc3339(epoch: u64) -> String {
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

/// Write `image` as an archive `docker load` reads (Docker's `manifest.json`
/// with `RepoTags`) that is also an OCI image layout (`oci-layout`,
/// `index.json` naming the tag), written atomically. Entries are sorted and
/// timestamps fixed, so the archive is reproducible too.
pub fn write_archive(image: &Image, tag: &str, out: &Path) -> Result<(), String> {
    let blob_path = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    files.insert(blob_path(&image.config_digest()), image.config.clone());
    files.insert(blob_path(&image.digest()), image.manifest.clone());
    for layer in &image.layers {
        files.insert(blob_path(&layer.digest), layer.blob.clone());
    }
    let ref_name = tag.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.digest(),
            "size": image.manifest.len(),
            "annotations": {
                "io.containerd.image.name": tag,
                "org.opencontainers.image.ref.name": ref_name,
            },
        }],
    });
    files.insert(
        "index.json".into(),
        serde_json::to_vec(&index).unwrap_or_default(),
    );
    let docker_manifest = json!([{
        "Config": blob_path(&image.config_digest()),
        "RepoTags": [tag],
        "Layers": image.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
    }]);
    files.insert(
        "manifest.json".into(),
        serde_json::to_vec(&docker_manifest).unwrap_or_default(),
    );

    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = vec!["blobs/".to_string(), "blobs/sha256/".to_string()];
    dirs.sort();
    for d in &dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_size(0);
        builder
            .append_data(&mut h, d, std::io::empty())
            .map_err(|e| e.to_string())?;
    }
    for (path, data) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        builder
            .append_data(&mut h, path, data.as_slice())
            .map_err(|e| e.to_string())?;
    }
    let bytes = builder.into_inner().map_err(|e| e.to_string())?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile_in(dir)?;
    temp.1
        .write_all(&bytes)
        .and_then(|()| temp.1.sync_all())
        .map_err(|e| format!("writing {}: {e}", out.display()))?;
    std::fs::rename(&temp.0, out).map_err(|e| format!("writing {}: {e}", out.display()))?;
    temp.0 = std::path::PathBuf::new();
    Ok(())
}

/// A temp file beside the output, removed on drop unless renamed.
struct Temp(std::path::PathBuf, std::fs::File);

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn tempfile_in(dir: &Path) -> Result<Temp, String> {
    for n in 0..100u32 {
        let path = dir.join(format!(".kiln-oci-{}-{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok(Temp(path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(format!(
                    "creating a temporary file in {}: {e}",
                    dir.display()
                ))
            }
        }
    }
    Err(format!("no temporary file name free in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &str) -> LayerFile {
        LayerFile {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn layers_are_reproducible_and_order_free() {
        let a = layer(&[file("b/x", "1"), file("a", "2")], 0).expect("layer");
        let b = layer(&[file("a", "2"), file("b/x", "1")], 0).expect("layer");
        assert_eq!(a, b);
        let c = layer(&[file("a", "2"), file("b/x", "changed")], 0).expect("layer");
        assert_ne!(a.digest, c.digest);
        // Parent directories are added; headers carry what was asked.
        let tar_bytes = layer_tar(&[file("b/c/x", "1")], 7).expect("tar");
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
    fn timestamps_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn the_same_inputs_give_the_same_digest() {
        let build = || {
            let l = layer(&[file("app/hello.txt", "hi")], 0).expect("layer");
            let runtime = RuntimeConfig {
                env: vec!["A=1".into()],
                cmd: Some(vec!["cat".into(), "/app/hello.txt".into()]),
                ..Default::default()
            };
            assemble(
                &runtime,
                vec![l],
                &["COPY hello.txt /app/".into()],
                0,
                "amd64",
            )
        };
        assert_eq!(build().digest(), build().digest());
        let dir = tempfile::tempdir().expect("tempdir");
        let one = dir.path().join("one.tar");
        let two = dir.path().join("two.tar");
        write_archive(&build(), "x:1", &one).expect("write");
        write_archive(&build(), "x:1", &two).expect("write");
        assert_eq!(
            std::fs::read(one).expect("read"),
            std::fs::read(two).expect("read")
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(names.len(), 2, "no temporary files left");
    }
}
