//! Pushing a built image over the distribution API: each blob the registry
//! does not have yet is uploaded (a `HEAD` first, so unchanged layers and
//! base layers cost one request), then the manifest is `PUT` under every
//! tag. For an image index, each platform's manifest is `PUT` by its digest
//! first, then the index under every tag. The documents are kiln's own
//! bytes, so the pushed digest is the archive's digest.

use std::{collections::BTreeSet, time::Duration};

use kiln_distribution::{names, CallError, Credentials, RegistryClient, Retry};
use kiln_plugin_api::{
    author::{block_on, Cancel, Events, HostRegistry, RegistryCalls},
    ErrorKind, PluginError,
};

use crate::{
    data::Data,
    image::{media, Artifact},
};

/// The most of a blob held in memory while pushing it.
const UPLOAD_PIECE: usize = 8 << 20;

/// A registry call's error as the plugin's, with its kind.
pub fn plugin_error(e: CallError) -> PluginError {
    match e {
        CallError::Denied(m) => PluginError::new(ErrorKind::AUTH, m),
        CallError::Unavailable(m) => PluginError::new(ErrorKind::UNAVAILABLE, m),
        CallError::Failed(m) => PluginError::other(m),
    }
}

/// How registries are spoken to.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// Hosts spoken to over plain HTTP (loopback always is).
    pub insecure: &'a [String],
    /// Bounds each request.
    pub timeout: Duration,
    /// How 429 and 5xx answers are retried.
    pub retry: Retry,
}

/// Push `artifact` under each of `tags` (all of `registry`'s); returns
/// `host/repo@digest` of the first tag.
pub fn push(
    artifact: &Artifact,
    tags: &[String],
    registry: &HostRegistry,
    connection: Connection<'_>,
    events: &Events,
    cancel: &Cancel,
) -> Result<String, PluginError> {
    let credentials = registry.auth()?.map(|a| Credentials {
        username: a.username,
        password: a.secret,
    });
    let mut first = None;
    let mut done_repos: BTreeSet<String> = BTreeSet::new();
    for tag in tags {
        registry.prepare_image_push(tag)?;
        let reference =
            names::parse(tag).map_err(|e| PluginError::new(ErrorKind::INVALID_INPUT, e))?;
        let host = reference.registry().to_string();
        let repo = reference.repository().to_string();
        let Some(tag_name) = reference.tag().map(str::to_string) else {
            return Err(PluginError::new(
                ErrorKind::INVALID_INPUT,
                format!("{tag}: push needs an explicit tag"),
            ));
        };
        let client = RegistryClient::for_host(
            &host,
            connection.insecure,
            credentials.clone(),
            connection.timeout,
            connection.retry,
        )
        .map_err(|e| PluginError::new(ErrorKind::UNAVAILABLE, e))?;
        let pushed = block_on(async {
            if done_repos.insert(format!("{host}/{repo}")) {
                let mut blobs: Vec<(String, Data)> = Vec::new();
                for image in artifact.images() {
                    let layers = image
                        .layers
                        .iter()
                        .map(|l| (l.digest.clone(), l.blob.clone()));
                    let config = (image.config_digest(), Data::from(image.config.clone()));
                    for (digest, data) in layers.chain(std::iter::once(config)) {
                        if !blobs.iter().any(|(d, _)| *d == digest) {
                            blobs.push((digest, data));
                        }
                    }
                }
                push_blobs(&client, &host, &repo, blobs, events, cancel).await?;
                if let Artifact::Index { images, .. } = artifact {
                    for image in images {
                        let digest = image.digest();
                        let put = client
                            .put_manifest(&repo, &digest, media::MANIFEST, image.manifest.clone())
                            .await
                            .map_err(plugin_error)?;
                        if put != digest {
                            return Err(PluginError::other(format!(
                                "{host}/{repo}: the registry reports digest {put} for the \
                                 manifest kiln pushed as {digest}"
                            )));
                        }
                    }
                }
            }
            client
                .put_manifest(
                    &repo,
                    &tag_name,
                    artifact.media_type(),
                    artifact.manifest().to_vec(),
                )
                .await
                .map_err(plugin_error)
        })?;
        if pushed != artifact.digest() {
            return Err(PluginError::other(format!(
                "{tag}: the registry reports digest {pushed}, kiln pushed {}",
                artifact.digest()
            )));
        }
        events.output(format!("{tag}: digest: {pushed}"));
        first.get_or_insert(format!("{host}/{repo}@{pushed}"));
    }
    first.ok_or_else(|| PluginError::new(ErrorKind::INVALID_INPUT, "no tag to push"))
}

/// Upload each of `blobs` that `host/repo` does not have yet (a `HEAD`
/// first), read from the cache a piece at a time, never whole.
pub async fn push_blobs(
    client: &RegistryClient,
    host: &str,
    repo: &str,
    blobs: Vec<(String, Data)>,
    events: &Events,
    cancel: &Cancel,
) -> Result<(), PluginError> {
    for (digest, data) in blobs {
        if cancel.is_cancelled() {
            return Err(PluginError::new(ErrorKind::CANCELLED, "cancelled"));
        }
        let short = digest.get(7..19).unwrap_or(&digest);
        if client
            .blob_exists(repo, &digest)
            .await
            .map_err(plugin_error)?
        {
            events.output(format!("{short}: already in {host}/{repo}"));
            continue;
        }
        let size = data.len();
        let mut meter = crate::meter::Meter::new(events, format!("pushing {short}"), size);
        let mut read = |at: u64, len: usize| {
            let bytes = data.slice(at, len as u64).bytes();
            meter.set(at + len as u64);
            bytes
        };
        let uploaded = client
            .upload_blob_from(repo, &digest, size, UPLOAD_PIECE, &mut read)
            .await;
        meter.finish();
        uploaded.map_err(plugin_error)?;
        events.output(format!("{short}: pushed ({size} bytes)"));
    }
    Ok(())
}
