//! kiln's container registry: flavor `default`, for any registry that speaks
//! the OCI distribution API (HTTP API v2).
//!
//! - Image membership follows Docker's reference grammar (`kiln_distribution::names`).
//! - "Does this image exist?" is answered over the HTTP API, no daemon
//!   needed (`kiln_distribution`): exists (`uri@digest`), absent, or unknown (why).
//! - Builders that push through a daemon get the credentials from
//!   [`Registry::auth`]; `push_image` pushes through the Docker daemon at
//!   `DOCKER_HOST` (default socket) itself.

use std::time::Duration;

use futures_util::StreamExt;
use kiln_plugin_api::{
    author::{block_on, Cancel, Events, Flavor, Registry, RegistryFlavor, Secret},
    capability, ErrorKind, Existence, ImageExistence, PluginError, RegistryAuth,
};

use kiln_distribution::{
    dockercfg, names, names::RegistryUri, CallError, Credentials, Platform, RegistryClient, Retry,
};

/// Config of the `default` registry.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultConfig {
    /// `host[:port][/namespace]`; a scheme and trailing `/` are stripped, a tag
    /// or digest is refused.
    #[schemars(length(min = 1))]
    pub uri: String,
    /// User name for the registry. Without `username` and `password`, kiln
    /// uses Docker's own config (`$DOCKER_CONFIG/config.json`: `credHelpers`,
    /// `credsStore`, `auths`), as the Docker CLI does.
    pub username: Option<String>,
    /// Password or token; a literal (kept in .kiln/secrets.json) or `${env:NAME}`.
    pub password: Option<Secret>,
    /// Repository `kiln build --registry` names the image with when no `-t` is
    /// given (`<uri>/<default_repository>:<derived tag>`); default: the
    /// context folder's name.
    #[schemars(regex(
        pattern = r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
    ))]
    pub default_repository: Option<String>,
    /// Talk plain HTTP to this registry. Loopback hosts (127.0.0.0/8,
    /// localhost) always use plain HTTP, as the Docker daemon does.
    #[serde(default)]
    pub insecure: bool,
    /// Seconds per HTTP request.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: u64,
    /// Retries of a request the registry answers with 429 or 5xx.
    #[serde(default = "default_retries")]
    #[schemars(range(max = 10))]
    pub retries: u32,
    /// Milliseconds before the first retry; each later wait doubles (up to
    /// 32 times this).
    #[serde(default = "default_backoff")]
    #[schemars(range(max = 60000))]
    pub retry_backoff_ms: u64,
}

fn default_backoff() -> u64 {
    200
}

fn default_timeout() -> u64 {
    15
}

fn default_retries() -> u32 {
    3
}

/// The `default` flavor.
pub struct DefaultFlavor;

impl Flavor for DefaultFlavor {
    type Config = DefaultConfig;
    const NAME: &'static str = "default";
    const DESCRIPTION: &'static str =
        "Any OCI distribution registry: membership, existence checks over HTTP API v2, pushes";
    const CAPABILITIES: &'static [&'static str] = &[capability::CHECKS_EXISTENCE];
}

impl RegistryFlavor for DefaultFlavor {
    type Registry = DefaultRegistry;
    fn construct(config: DefaultConfig) -> Result<DefaultRegistry, PluginError> {
        let uri = RegistryUri::parse(&config.uri)
            .map_err(|e| PluginError::new(ErrorKind::INVALID_CONFIG, e))?;
        let credentials = match (&config.username, &config.password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: p.expose().to_string(),
            }),
            // As the Docker CLI: credential helpers, then config.json auths.
            (None, None) => {
                dockercfg::lookup(&uri.host, Duration::from_secs(config.timeout_seconds))
                    .map_err(|e| PluginError::new(ErrorKind::AUTH, e))?
            }
            _ => {
                return Err(PluginError::new(
                    ErrorKind::INVALID_CONFIG,
                    "set both username and password, or neither",
                ))
            }
        };
        let scheme = if uri.plain_http(config.insecure) {
            "http"
        } else {
            "https"
        };
        let client = RegistryClient::new(
            format!("{scheme}://{}", uri.api_host()),
            credentials.clone(),
            Duration::from_secs(config.timeout_seconds),
            Retry::with_backoff_ms(config.retries, config.retry_backoff_ms),
        )
        .map_err(|e| PluginError::new(ErrorKind::UNAVAILABLE, e))?;
        Ok(DefaultRegistry {
            uri,
            credentials,
            client,
        })
    }
}

/// A constructed `default` registry.
pub struct DefaultRegistry {
    uri: RegistryUri,
    credentials: Option<Credentials>,
    client: RegistryClient,
}

fn invalid(message: String) -> PluginError {
    PluginError::new(ErrorKind::INVALID_INPUT, message)
}

/// `[os, architecture, variant]` of one index entry or image config.
fn platform_of(value: &serde_json::Value) -> [String; 3] {
    ["os", "architecture", "variant"].map(|k| {
        value
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    })
}

/// Whether an image of platform `have` serves `want` (`os/arch[/variant]`):
/// `linux/arm64` is served by `linux/arm64/v8`; a variant asked for must match.
fn platform_matches(have: &[String; 3], want: &str) -> bool {
    let [os, arch, variant] = have;
    Platform::parse(want)
        .is_ok_and(|p| p.accepts(os, arch, Some(variant.as_str()).filter(|v| !v.is_empty())))
}

impl DefaultRegistry {
    /// Whether `repo:tag` exists (for each of `platforms`, when given): only
    /// a checked manifest counts (its digest the registry's and the
    /// content's own, see [`RegistryClient::resolve`]); anything else is
    /// unknown, never "exists".
    async fn exists(&self, repo: &str, tag: &str, platforms: &[String]) -> Answer {
        let manifest = match self.client.resolve(repo, tag).await {
            Ok(Some(m)) => m,
            Ok(None) => return Answer::Absent,
            Err(CallError::Denied(why)) => return Answer::Denied(why),
            Err(CallError::Unavailable(why) | CallError::Failed(why)) => {
                return Answer::Unknown(why)
            }
        };
        let found = format!("{}/{repo}@{}", self.uri.host, manifest.digest);
        if platforms.is_empty() {
            return Answer::Exists(found);
        }
        // Per platform: an index lists its platforms; a single manifest's
        // platform is in its config blob.
        let body: serde_json::Value = match serde_json::from_slice(&manifest.bytes) {
            Ok(v) => v,
            Err(e) => return Answer::Unknown(format!("manifest of {repo}:{tag} is not JSON: {e}")),
        };
        let have: Vec<[String; 3]> = if let Some(list) =
            body.get("manifests").and_then(|m| m.as_array())
        {
            list.iter()
                .filter_map(|m| m.get("platform"))
                .map(platform_of)
                .collect()
        } else {
            let Some(config) = body.pointer("/config/digest").and_then(|d| d.as_str()) else {
                return Answer::Unknown(format!("manifest of {repo}:{tag} has no config"));
            };
            match self.client.get_blob(repo, config).await {
                Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                    Ok(v) => vec![platform_of(&v)],
                    Err(e) => return Answer::Unknown(format!("image config of {repo}:{tag}: {e}")),
                },
                Err(CallError::Denied(why)) => return Answer::Denied(why),
                Err(CallError::Unavailable(why) | CallError::Failed(why)) => {
                    return Answer::Unknown(format!("image config of {repo}:{tag}: {why}"))
                }
            }
        };
        let missing: Vec<&String> = platforms
            .iter()
            .filter(|want| !have.iter().any(|h| platform_matches(h, want)))
            .collect();
        if missing.is_empty() {
            Answer::Exists(found)
        } else {
            Answer::Absent
        }
    }

    /// Whether these credentials may push `image`, asked of the registry
    /// itself with this flavor's retries and backoff (an upload started and
    /// abandoned): before a daemon pushes, whose own retries of a failing
    /// registry last about a minute, and after a failed push, to say by the
    /// registry's status code (not the daemon's wording) whether it was
    /// the credentials.
    async fn ready(&self, image: &str) -> Result<(), PluginError> {
        let reference = names::parse(image).map_err(invalid)?;
        self.client
            .can_push(reference.repository())
            .await
            .map_err(|e| match e {
                CallError::Denied(why) => {
                    PluginError::new(ErrorKind::AUTH, format!("pushing {image}: {why}"))
                }
                CallError::Unavailable(why) | CallError::Failed(why) => {
                    PluginError::new(ErrorKind::UNAVAILABLE, format!("pushing {image}: {why}"))
                }
            })
    }

    /// A daemon push of `image` failed with `message`: the registry says
    /// whether it was the credentials (exit 7) or not (exit 5).
    async fn push_failed(&self, image: &str, message: String) -> PluginError {
        match self.ready(image).await {
            Err(e) if e.kind == ErrorKind::AUTH => {
                PluginError::new(ErrorKind::AUTH, format!("pushing {image}: {message}"))
            }
            _ => PluginError::new(
                ErrorKind::UNAVAILABLE,
                format!("pushing {image}: {message}"),
            ),
        }
    }

    async fn push(
        &self,
        image: &str,
        events: &Events,
        cancel: &Cancel,
    ) -> Result<String, PluginError> {
        let reference = names::parse(image).map_err(invalid)?;
        let Some(tag) = reference.tag().map(str::to_string) else {
            return Err(invalid(format!(
                "{image}: push an explicit tag, not a digest"
            )));
        };
        let repo_full = image.rsplit_once(':').map_or(image, |(r, _)| r).to_string();
        self.ready(image).await?;
        let docker = bollard::Docker::connect_with_defaults()
            .map_err(|e| PluginError::new(ErrorKind::UNAVAILABLE, format!("Docker daemon: {e}")))?;
        let credentials = self
            .credentials
            .as_ref()
            .map(|c| bollard::auth::DockerCredentials {
                username: Some(c.username.clone()),
                password: Some(c.password.clone()),
                serveraddress: Some(self.uri.host.clone()),
                ..Default::default()
            });
        let mut stream = docker.push_image(
            &repo_full,
            Some(bollard::query_parameters::PushImageOptions {
                tag: Some(tag.clone()),
                ..Default::default()
            }),
            credentials,
        );
        let mut digest = None;
        while let Some(item) = stream.next().await {
            if cancel.is_cancelled() {
                return Err(PluginError::new(ErrorKind::CANCELLED, "push cancelled"));
            }
            let info = match item {
                Ok(info) => info,
                Err(e) => return Err(self.push_failed(image, e.to_string()).await),
            };
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(self.push_failed(image, detail).await);
            }
            if let Some(status) = info.status {
                if let Some(d) = status.split("digest: ").nth(1) {
                    digest = d.split_whitespace().next().map(str::to_string);
                }
                events.info(status);
            }
        }
        let digest = match digest {
            Some(d) => d,
            None => {
                return Err(PluginError::new(
                    ErrorKind::UNAVAILABLE,
                    format!("pushing {image}: the daemon reported no digest"),
                ))
            }
        };
        // Verify against the registry itself.
        match self.exists(reference.repository(), &tag, &[]).await {
            Answer::Exists(found) if found.ends_with(&digest) => Ok(digest),
            Answer::Exists(found) => Err(PluginError::new(
                ErrorKind::UNAVAILABLE,
                format!("pushing {image}: the daemon pushed {digest} but the registry has {found}"),
            )),
            Answer::Denied(why) => Err(PluginError::new(
                ErrorKind::AUTH,
                format!("pushing {image}: {why}"),
            )),
            other => Err(PluginError::new(
                ErrorKind::UNAVAILABLE,
                format!("pushing {image}: not found after the push: {other:?}"),
            )),
        }
    }
}

/// An existence answer inside the plugin.
#[derive(Debug)]
enum Answer {
    Exists(String),
    Absent,
    Unknown(String),
    Denied(String),
}

impl Registry for DefaultRegistry {
    fn uri(&self) -> String {
        self.uri.display()
    }

    fn owns_image(&self, image: &str) -> Result<bool, PluginError> {
        self.uri.owns(image).map_err(invalid)
    }

    fn prepare_image_push(&self, image: &str) -> Result<(), PluginError> {
        block_on(self.ready(image))
    }

    fn push_image(
        &self,
        image: &str,
        events: &Events,
        cancel: &Cancel,
    ) -> Result<String, PluginError> {
        block_on(self.push(image, events, cancel))
    }

    fn image_exists(
        &self,
        repository: &str,
        tag: &str,
        platforms: &[String],
    ) -> Result<ImageExistence, PluginError> {
        let reference = names::parse(&format!("{repository}:{tag}")).map_err(invalid)?;
        if reference.registry() != self.uri.host {
            return Err(invalid(format!(
                "{repository} is not in registry {}",
                self.uri.display()
            )));
        }
        let answer = block_on(self.exists(reference.repository(), tag, platforms));
        let (state, detail) = match answer {
            Answer::Exists(found) => (Existence::EXISTS, found),
            Answer::Absent => (Existence::ABSENT, String::new()),
            Answer::Unknown(why) => (Existence::UNKNOWN, why),
            Answer::Denied(why) => return Err(PluginError::new(ErrorKind::AUTH, why)),
        };
        Ok(ImageExistence { state, detail })
    }

    fn auth(&self) -> Result<Option<RegistryAuth>, PluginError> {
        Ok(self.credentials.as_ref().map(|c| RegistryAuth {
            server: self.uri.host.as_str().into(),
            username: c.username.as_str().into(),
            secret: c.password.as_str().into(),
        }))
    }
}

kiln_plugin_api::export_plugin! {
    name: "kiln-registry",
    builders: [],
    registries: [DefaultFlavor],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_match_with_and_without_variants() {
        let p = |s: &str| {
            let mut parts = s.split('/').map(str::to_string);
            [(); 3].map(|_| parts.next().unwrap_or_default())
        };
        assert!(platform_matches(&p("linux/amd64"), "linux/amd64"));
        assert!(platform_matches(&p("linux/arm64/v8"), "linux/arm64"));
        assert!(!platform_matches(&p("linux/arm64"), "linux/arm64/v8"));
        assert!(!platform_matches(&p("linux/amd64"), "linux/arm64"));
    }
}
