//! Base images pulled from a registry over the distribution API, for the
//! requested platform, with the build registry's credentials for images it
//! owns and Docker's config for the rest.

use std::{collections::BTreeMap, time::Duration};

use kiln_distribution::{dockercfg, names, CallError, Credentials, RegistryClient, Retry};
use kiln_plugin_api::author::{Events, HostRegistry, RegistryCalls};
use serde_json::Value;

use crate::{
    data::Data,
    image::{Incoming, Platform},
    store::Store,
};

use super::{from_manifest, Base};

/// Everything needed to fetch bases.
pub struct Sources<'a> {
    /// The blob cache.
    pub store: &'a Store,
    /// The platform to pick from multi-platform indexes.
    pub platform: &'a Platform,
    /// The build's registry: its credentials serve images it owns.
    pub registry: Option<&'a HostRegistry>,
    /// Hosts spoken to over plain HTTP (loopback always is).
    pub insecure: &'a [String],
    /// Bounds each request.
    pub timeout: Duration,
    /// How 429 and 5xx answers are retried.
    pub retry: Retry,
    /// Progress.
    pub events: &'a Events,
}

impl Sources<'_> {
    /// Pull `image` (Docker's reference grammar) from its registry.
    pub fn pull(&self, image: &str) -> Result<Base, CallError> {
        let reference = names::parse(image).map_err(CallError::Failed)?;
        let host = reference.registry().to_string();
        let repo = reference.repository().to_string();
        let wanted = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let credentials =
            credentials(self.registry, image, &host, self.timeout).map_err(CallError::Denied)?;
        let client =
            RegistryClient::for_host(&host, self.insecure, credentials, self.timeout, self.retry)
                .map_err(CallError::Unavailable)?;
        self.events
            .info(format!("pulling {image} for {}", self.platform));
        kiln_plugin_api::author::block_on(async {
            let doc = client
                .platform_manifest(&repo, &wanted, self.platform, image)
                .await?
                .ok_or_else(|| client.no_such_image(&repo, &wanted))?;
            let mut blobs: BTreeMap<String, Data> = BTreeMap::new();
            let needed: Vec<String> = doc
                .get("config")
                .into_iter()
                .chain(
                    doc.get("layers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten(),
                )
                .filter_map(|d| d.get("digest").and_then(Value::as_str).map(str::to_string))
                .collect();
            // What each blob's descriptor says it weighs (for progress only:
            // the digest is what is checked).
            let sizes: BTreeMap<String, u64> = doc
                .get("layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .chain(doc.get("config"))
                .filter_map(|d| {
                    Some((
                        d.get("digest")?.as_str()?.to_string(),
                        d.get("size")?.as_u64()?,
                    ))
                })
                .collect();
            for digest in needed {
                let blob = match self.store.blob(&digest) {
                    Some(b) => b,
                    None => {
                        // Streamed into the cache, checked on the way.
                        let into = self
                            .store
                            .incoming()
                            .or_else(|_| Incoming::anonymous())
                            .map_err(CallError::Failed)?;
                        let short = digest.get(7..19).unwrap_or(&digest);
                        let mut meter = crate::meter::Meter::new(
                            self.events,
                            format!("pulling {short}"),
                            sizes.get(&digest).copied().unwrap_or(0),
                        );
                        let mut out =
                            kiln_archive::pipeline::Tee::new(into.writer(), |d: &[u8]| {
                                meter.add(d.len() as u64)
                            });
                        let size = client.get_blob_to(&repo, &digest, &mut out).await;
                        meter.finish();
                        let size = size?;
                        into.keep(&digest, size)
                            .map_err(|e| CallError::Failed(format!("keeping blob {digest}: {e}")))?
                    }
                };
                blobs.insert(digest, blob);
            }
            from_manifest(image, &doc, |d| {
                blobs
                    .get(d)
                    .cloned()
                    .ok_or_else(|| format!("{image}: blob {d} missing"))
            })
            .map_err(CallError::Failed)
        })
    }
}

/// The build registry's credentials for an image it owns, else Docker's
/// config for the host (as `docker pull` would use).
pub fn credentials(
    registry: Option<&HostRegistry>,
    image: &str,
    host: &str,
    timeout: Duration,
) -> Result<Option<Credentials>, String> {
    if let Some(registry) = registry {
        if registry.owns_image(image).unwrap_or(false) {
            if let Ok(Some(auth)) = registry.auth() {
                return Ok(Some(Credentials {
                    username: auth.username,
                    password: auth.secret,
                }));
            }
        }
    }
    dockercfg::lookup(host, timeout)
}
