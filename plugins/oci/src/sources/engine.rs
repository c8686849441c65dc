//! Base images from the local Docker Engine's image store, which Docker's
//! own builder uses before pulling: when an engine answers (`docker_host`,
//! else `DOCKER_HOST`, else the default socket) and has the image for the
//! platform, `FROM name` takes it from there (`GET /images/{name}/get`)
//! instead of the registry. `--pull` skips this. No engine, or no such
//! image, and the registry is asked as before.
//!
//! `docker save` writes Docker's archive (`manifest.json`, a config, one
//! uncompressed `layer.tar` each) on engines before 25, an OCI layout after;
//! both are read. Layers are compressed like the builder's own (through the
//! layer cache), and each is checked against the config's `diff_ids`.

use std::time::Duration;

use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use serde_json::Value;

use crate::{
    data::Data,
    image::{Incoming, Layer, Platform},
    sources::{self, Base},
    store::Store,
};

/// Where the engine listens: `docker_host`, else `DOCKER_HOST`, else the
/// default socket.
pub fn engine_host(configured: Option<&str>) -> String {
    kiln_distribution::engine::docker_host(configured)
}

fn connect(host: &str, timeout: Duration) -> Option<Docker> {
    let secs = timeout.as_secs().max(1);
    if let Some(path) = host.strip_prefix("unix://") {
        if !std::path::Path::new(path).exists() {
            return None;
        }
        return Docker::connect_with_unix(host, secs, API_DEFAULT_VERSION).ok();
    }
    if host.starts_with("tcp://") || host.starts_with("http://") {
        return Docker::connect_with_http(host, secs, API_DEFAULT_VERSION).ok();
    }
    None
}

/// The engine's copy of `name` for `platform`: `None` when no engine
/// answers or it has no such image (then the registry is asked).
pub fn local_image(
    host: &str,
    name: &str,
    platform: &Platform,
    store: &Store,
) -> Option<Result<Base, String>> {
    let docker = connect(host, Duration::from_secs(5))?;
    let archive = kiln_plugin_api::author::block_on(async {
        tokio::time::timeout(Duration::from_secs(2), docker.ping())
            .await
            .ok()?
            .ok()?;
        let inspect = docker.inspect_image(name).await.ok()?;
        let os = inspect.os.as_deref().unwrap_or("linux");
        let arch = inspect.architecture.as_deref().unwrap_or("");
        if os != platform.os || arch != platform.architecture {
            return None;
        }
        // Written to an unnamed scratch file as it comes, never held whole.
        let mut file = match crate::store::scratch_file() {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        let mut stream = docker.export_image(name);
        while let Some(chunk) = stream.next().await {
            let wrote = match chunk {
                Ok(c) => std::io::Write::write_all(&mut file, &c).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = wrote {
                return Some(Err(format!(
                    "exporting {name} from the engine at {host}: {e}"
                )));
            }
        }
        Some(Data::whole(file).map_err(|e| format!("exporting {name}: {e}")))
    })?;
    Some(archive.and_then(|data| read_save(&data, name, platform, store)))
}

/// A base from what `docker save` wrote.
fn read_save(data: &Data, name: &str, platform: &Platform, store: &Store) -> Result<Base, String> {
    let what = format!("{name} (from the local Docker Engine)");
    let files = sources::archive_files(data).map_err(|e| format!("{what}: {e}"))?;
    let Some(manifest) = files.get("manifest.json") else {
        return sources::from_layout_files(files, None, platform, &what);
    };
    let manifest: Value = serde_json::from_slice(&sources::layout::document(manifest, &what)?)
        .map_err(|e| format!("{what}: manifest.json is not JSON: {e}"))?;
    let entry = manifest
        .get(0)
        .ok_or_else(|| format!("{what}: manifest.json lists no image"))?;
    let file = |key: &str| -> Result<&Data, String> {
        files
            .get(key)
            .ok_or_else(|| format!("{what}: {key} is missing from the saved image"))
    };
    let config_name = entry
        .get("Config")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what}: manifest.json names no config"))?;
    let config: Value =
        serde_json::from_slice(&sources::layout::document(file(config_name)?, &what)?)
            .map_err(|e| format!("{what}: the image config is not JSON: {e}"))?;
    let diff_ids: Vec<&str> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let layer_files: Vec<&str> = entry
        .get("Layers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if layer_files.len() != diff_ids.len() {
        return Err(format!(
            "{what}: {} layers but {} diff_ids",
            layer_files.len(),
            diff_ids.len()
        ));
    }
    let mut layers = Vec::new();
    for (path, diff_id) in layer_files.iter().zip(&diff_ids) {
        let tar = file(path)?;
        let layer = match store.layer(diff_id) {
            Some(l) => l,
            None => {
                let into = store.incoming().or_else(|_| Incoming::anonymous())?;
                // Recorded in the cache as it is kept (the cache is an
                // optimisation: a full disk must not fail the build).
                Layer::from_tar(tar, diff_id, into).map_err(|e| format!("{what}: {path}: {e}"))?
            }
        };
        layers.push(layer);
    }
    Ok(Base {
        name: what,
        config,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sha256;

    #[test]
    fn a_docker_save_archive_is_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let layer_tar = {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, "hi", &b"hi"[..]).expect("append");
            b.into_inner().expect("tar")
        };
        let save = |diff_id: &str| {
            let config = serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            });
            let manifest = serde_json::json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]);
            let mut b = tar::Builder::new(Vec::new());
            for (path, data) in [
                ("manifest.json", manifest.to_string().into_bytes()),
                ("c.json", config.to_string().into_bytes()),
                ("l/layer.tar", layer_tar.clone()),
            ] {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, path, data.as_slice())
                    .expect("append");
            }
            Data::from(b.into_inner().expect("tar"))
        };
        let platform = Platform::parse("linux/amd64").expect("platform");
        let good = read_save(&save(&sha256(&layer_tar)), "x:1", &platform, &store).expect("read");
        assert_eq!(good.layers.len(), 1);
        assert_eq!(good.layers[0].diff_id, sha256(&layer_tar));
        let fs = crate::fs::overlay::filesystem(&good.layers).expect("fs");
        assert!(fs.contains_key("hi"));
        let bad = read_save(&save(&sha256(b"other")), "x:1", &platform, &store);
        assert!(bad.expect_err("mismatch").contains("does not match"));
    }
}
