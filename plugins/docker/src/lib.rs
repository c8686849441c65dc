//! kiln's Docker Engine builder: image-builder flavor `local` (ZenML's name).
//!
//! It streams the context archive the host made to a Docker daemon's
//! classic builder (`POST /build`, made in `request.rs` so that limits go at
//! 64 bits; bollard for the rest), streams the daemon's output to the host
//! as it arrives, and declares success only when the daemon has sent the
//! image ID.
//! Intermediate containers are always removed (`rm` and `forcerm`), so a
//! failed or cancelled build leaves none behind.

use std::{collections::HashMap, time::Duration};

use bollard::{
    errors::Error as DockerError,
    models::BuildInfo,
    query_parameters::{BuildImageOptions, TagImageOptions},
    Docker, API_DEFAULT_VERSION,
};
use futures_util::StreamExt;
use kiln_plugin_api::{
    author::{
        block_on, Builder, BuilderFlavor, Cancel, Events, Flavor, HostRegistry, RegistryCalls,
    },
    capability, BuildContext, BuildOutput, BuildRequest, ErrorKind, PluginError,
};
use tokio::io::AsyncReadExt;

mod request;

/// Resolves, with the error to give, once the host has cancelled the build
/// or it has run past `deadline` (`limit` seconds; looked at every 100 ms).
async fn stopped(
    cancel: &Cancel,
    deadline: Option<tokio::time::Instant>,
    limit: u64,
) -> PluginError {
    loop {
        if cancel.is_cancelled() {
            return PluginError::new(
                ErrorKind::CANCELLED,
                "build cancelled; the daemon stops it and removes its containers",
            );
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return PluginError::new(
                ErrorKind::BUILD_FAILED,
                format!(
                    "the build took longer than build_timeout_seconds ({limit} s) and was stopped"
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The socket used when neither the config nor `DOCKER_HOST` names a daemon.
pub use kiln_distribution::engine::DEFAULT_DOCKER_HOST as DEFAULT_HOST;

/// Config of the `local` builder.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The Docker daemon: `unix:///path/to/docker.sock` or `tcp://host:port`.
    /// Default: `DOCKER_HOST`, then `unix:///var/run/docker.sock`.
    #[schemars(regex(pattern = r"^(unix|tcp|http)://.+$"))]
    pub docker_host: Option<String>,
    /// Seconds to wait for the daemon to answer before giving up (connect and ping).
    #[serde(default = "default_connect_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub connect_timeout_seconds: u64,
    /// Seconds a whole build may take before kiln stops it; 0 means no limit.
    #[serde(default)]
    pub build_timeout_seconds: u64,
    /// Network mode for `RUN` instructions (`docker build --network`): `default`, `host`, `none`, ...
    pub network_mode: Option<String>,
    /// Extra `/etc/hosts` entries (`docker build --add-host`), as `host:ip`.
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// Further `docker build` options passed to the daemon as they are
    /// (ZenML's `docker_build_options`).
    #[serde(default)]
    pub docker_build_options: BuildOptions,
}

fn default_connect_timeout() -> u64 {
    10
}

/// The other options of the Engine API's `/build`.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildOptions {
    /// Memory limit for `RUN` containers, in bytes (`--memory`; 64-bit, as
    /// the Engine API takes it).
    #[schemars(range(min = 0, max = i64::MAX))]
    pub memory: Option<i64>,
    /// Memory plus swap, in bytes; -1 for unlimited swap (`--memory-swap`).
    #[schemars(range(min = -1, max = i64::MAX))]
    pub memswap: Option<i64>,
    /// CPU shares (`--cpu-shares`).
    pub cpushares: Option<i32>,
    /// CPUs to run on, e.g. `0-3` (`--cpuset-cpus`).
    pub cpusetcpus: Option<String>,
    /// CFS period in microseconds (`--cpu-period`).
    pub cpuperiod: Option<i32>,
    /// CFS quota in microseconds (`--cpu-quota`).
    pub cpuquota: Option<i32>,
    /// Size of `/dev/shm` in bytes (`--shm-size`).
    #[schemars(range(min = 0, max = i64::MAX))]
    pub shmsize: Option<i64>,
    /// Images to use as cache sources (`--cache-from`).
    pub cachefrom: Option<Vec<String>>,
    /// Squash the new layers into one (experimental daemons only).
    pub squash: Option<bool>,
}

/// The `local` flavor.
pub struct LocalFlavor;

impl Flavor for LocalFlavor {
    type Config = LocalConfig;
    const NAME: &'static str = "local";
    const DESCRIPTION: &'static str =
        "Builds with a Docker Engine (local or tcp://) through its classic builder";
    const CAPABILITIES: &'static [&'static str] = &[
        capability::BUILDS_LOCALLY,
        capability::BASES_FROM_DOCKER_ENGINE,
    ];
}

impl BuilderFlavor for LocalFlavor {
    type Builder = LocalBuilder;
    fn construct(config: LocalConfig) -> Result<LocalBuilder, PluginError> {
        let host = kiln_distribution::engine::docker_host(config.docker_host.as_deref());
        Ok(LocalBuilder { config, host })
    }
}

/// A constructed `local` builder.
pub struct LocalBuilder {
    config: LocalConfig,
    host: String,
}

fn unavailable(message: String) -> PluginError {
    PluginError::new(ErrorKind::UNAVAILABLE, message)
}

/// The first `std::io::Error` in an error's source chain.
fn io_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

impl LocalBuilder {
    /// The daemon address this builder uses.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Connect and ping: one clear error for each way this fails, naming the host.
    pub async fn connect(&self) -> Result<Docker, PluginError> {
        let timeout = self.config.connect_timeout_seconds;
        // bollard applies its timeout to every request, the whole build
        // stream included: give requests the build's limit (or a week), and
        // bound the ping separately with the connect timeout.
        let request_timeout = match self.config.build_timeout_seconds {
            0 => 7 * 24 * 3600,
            n => n + timeout,
        };
        let host = self.host.as_str();
        use kiln_distribution::engine::{endpoint, Endpoint};
        let docker = match endpoint(host) {
            Ok(Endpoint::Unix(path)) => match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(unavailable(format!(
                        "the Docker socket {path} does not exist: is the Docker daemon installed \
                         and running? Start it (`sudo systemctl start docker`, or `dockerd`), or \
                         set docker_host / DOCKER_HOST to where it listens"
                    )))
                }
                _ => Docker::connect_with_unix(host, request_timeout, API_DEFAULT_VERSION),
            },
            Ok(Endpoint::Tcp(_)) => {
                Docker::connect_with_http(host, request_timeout, API_DEFAULT_VERSION)
            }
            Err(e) => {
                return Err(PluginError::new(
                    ErrorKind::INVALID_CONFIG,
                    format!("docker_host {e}"),
                ))
            }
        }
        .map_err(|e| unavailable(format!("cannot use the Docker daemon at {host}: {e}")))?;

        let ping = tokio::time::timeout(Duration::from_secs(timeout), docker.ping()).await;
        match ping {
            Err(_) => Err(unavailable(format!(
                "the Docker daemon at {host} did not answer within {timeout} s; check that it is \
                 running and reachable"
            ))),
            Ok(Err(e)) => Err(unavailable(self.explain(&e))),
            Ok(Ok(_)) => docker
                .negotiate_version()
                .await
                .map_err(|e| unavailable(format!("negotiating the API version with {host}: {e}"))),
        }
    }

    fn explain(&self, error: &DockerError) -> String {
        let host = &self.host;
        match io_cause(error).map(std::io::Error::kind) {
            Some(std::io::ErrorKind::PermissionDenied) => format!(
                "permission denied on the Docker daemon at {host}: add your user to the `docker` \
                 group (then log in again) or run kiln with access to the socket"
            ),
            Some(std::io::ErrorKind::ConnectionRefused) | Some(std::io::ErrorKind::NotFound) => {
                format!(
                    "cannot connect to the Docker daemon at {host}: is it running? Start it \
                     (`sudo systemctl start docker`, or `dockerd`)"
                )
            }
            _ => format!("the Docker daemon at {host} is not usable: {error}"),
        }
    }

    fn options(&self, request: &BuildRequest) -> BuildImageOptions {
        let pairs = |v: &[(String, String)]| v.iter().cloned().collect::<HashMap<String, String>>();
        let extra = &self.config.docker_build_options;
        BuildImageOptions {
            dockerfile: request.dockerfile.to_string(),
            t: request.tags.first().map(|t| t.to_string()),
            extrahosts: (!self.config.extra_hosts.is_empty())
                .then(|| self.config.extra_hosts.join(",")),
            nocache: request.no_cache,
            pull: request.pull.then(|| "1".to_string()),
            rm: true,
            forcerm: true,
            buildargs: Some(pairs(&request.build_args)),
            labels: Some(pairs(&request.labels)),
            networkmode: self.config.network_mode.clone(),
            platform: request
                .platform
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            target: request
                .target
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            // Sent at full width by `request::query`.
            memory: None,
            memswap: None,
            cpushares: extra.cpushares,
            cpusetcpus: extra.cpusetcpus.clone(),
            cpuperiod: extra.cpuperiod,
            cpuquota: extra.cpuquota,
            shmsize: None,
            cachefrom: extra.cachefrom.clone(),
            squash: extra.squash,
            ..Default::default()
        }
    }

    async fn run_build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: Option<&HostRegistry>,
        events: &Events,
        cancel: &Cancel,
    ) -> Result<BuildOutput, PluginError> {
        if !request.secrets.is_empty() {
            return Err(PluginError::new(
                ErrorKind::INVALID_INPUT,
                "the local builder (the Docker Engine's classic builder) cannot hand secrets to \
                 RUN; --secret is for the oci builder",
            ));
        }
        if !request.cache_from.is_empty() || !request.cache_to.is_empty() {
            return Err(PluginError::new(
                ErrorKind::INVALID_INPUT,
                "the local builder (the Docker Engine's classic builder) keeps no cache in a \
                 registry; --cache-from and --cache-to are for the oci builder",
            ));
        }
        if !request.platforms.is_empty() {
            return Err(PluginError::new(
                ErrorKind::INVALID_INPUT,
                format!(
                    "--platform {}: the local builder (the Docker Engine's classic builder) \
                     builds one platform per run; several platforms in one image index are \
                     for the oci builder",
                    request.platforms.join(",")
                ),
            ));
        }
        if request.output.is_some() {
            return Err(PluginError::new(
                ErrorKind::INVALID_INPUT,
                "the local builder leaves the image in the Docker daemon; --output is for the oci builder",
            ));
        }
        let docker = self.connect().await?;
        let file = tokio::fs::File::open(context.archive_path.as_str())
            .await
            .map_err(|e| {
                PluginError::new(
                    ErrorKind::INVALID_INPUT,
                    format!(
                        "cannot open the build context {}: {e}",
                        context.archive_path
                    ),
                )
            })?;
        let body = futures_util::stream::unfold(file, |mut file| async move {
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(buf.into()), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        let extra = &self.config.docker_build_options;
        let query = request::query(
            &self.options(request),
            request::Limits {
                memory: extra.memory,
                memswap: extra.memswap,
                shmsize: extra.shmsize,
            },
        );
        let version = docker.client_version();
        let deadline = (self.config.build_timeout_seconds > 0).then(|| {
            tokio::time::Instant::now() + Duration::from_secs(self.config.build_timeout_seconds)
        });
        let stop = stopped(cancel, deadline, self.config.build_timeout_seconds);
        tokio::pin!(stop);
        let started = tokio::select! {
            started = request::build(&self.host, &version, &query, body) => started,
            error = &mut stop => return Err(error),
        };
        let mut stream = started.map_err(|e| self.stream_error(e))?;
        let mut image_id = None;
        loop {
            let next = tokio::select! {
                item = stream.next() => item,
                // Dropping the stream closes the connection; the daemon then
                // stops the build and (forcerm) removes its container.
                error = &mut stop => return Err(error),
            };
            let Some(item) = next else { break };
            let info = item.map_err(|e| self.stream_error(e))?;
            if let Some(id) = handle(&info, events)? {
                image_id = Some(id);
            }
        }
        let Some(id) = image_id else {
            return Err(PluginError::new(
                ErrorKind::BUILD_FAILED,
                format!(
                    "the Docker daemon at {} ended the build without sending an image ID",
                    self.host
                ),
            ));
        };
        for tag in request.tags.iter().skip(1) {
            let (repo, tag_part) = split_tag(tag);
            docker
                .tag_image(
                    &id,
                    Some(TagImageOptions {
                        repo: Some(repo.to_string()),
                        tag: Some(tag_part.to_string()),
                    }),
                )
                .await
                .map_err(|e| {
                    PluginError::new(
                        ErrorKind::BUILD_FAILED,
                        format!("tagging {id} as {tag}: {e}"),
                    )
                })?;
        }
        events.info(format!("image {id}"));
        let image = request.tags.first().cloned().unwrap_or_else(|| id.clone());
        // With a registry: push each name through this builder's daemon with
        // the registry's credentials, then have the registry confirm the
        // digest (ZenML's LocalImageBuilder pushes after building, too).
        let mut digest = None;
        if let Some(registry) = registry {
            let auth = registry.auth()?;
            for tag in request.tags.iter() {
                registry.prepare_image_push(tag)?;
                let pushed = match self.push(&docker, tag, auth.as_ref(), events, cancel).await {
                    Ok(pushed) => pushed,
                    // Whether it was the credentials, the registry says by
                    // its status code, not the daemon by its wording.
                    Err(e) if e.kind == ErrorKind::UNAVAILABLE => {
                        return Err(match registry.prepare_image_push(tag) {
                            Err(check) if check.kind == ErrorKind::AUTH => {
                                PluginError::new(ErrorKind::AUTH, e.message)
                            }
                            _ => e,
                        })
                    }
                    Err(e) => return Err(e),
                };
                let (repo, tag_part) = split_tag(tag);
                let found = registry.image_exists(repo, tag_part, &[])?;
                if found.state != kiln_plugin_api::Existence::EXISTS
                    || !found.detail.ends_with(pushed.as_str())
                {
                    return Err(PluginError::new(
                        ErrorKind::UNAVAILABLE,
                        format!(
                            "pushed {tag} as {pushed}, but the registry reports {:?}",
                            found.detail
                        ),
                    ));
                }
                digest.get_or_insert(format!("{}@{pushed}", repo));
            }
        }
        // Not pushed: the protocol's digest is the local image ID.
        Ok(BuildOutput {
            image,
            digest: digest.or(Some(id)),
        })
    }

    /// Push `image` through the daemon; the digest comes only in the status
    /// text (`<tag>: digest: sha256:... size: N`).
    async fn push(
        &self,
        docker: &Docker,
        image: &str,
        auth: Option<&kiln_plugin_api::RegistryAuth>,
        events: &Events,
        cancel: &Cancel,
    ) -> Result<String, PluginError> {
        let (repo, tag) = split_tag(image);
        let credentials = auth.map(|a| bollard::auth::DockerCredentials {
            username: Some(a.username.to_string()),
            password: Some(a.secret.to_string()),
            serveraddress: Some(a.server.to_string()),
            ..Default::default()
        });
        let options = bollard::query_parameters::PushImageOptions {
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let mut stream = docker.push_image(repo, Some(options), credentials);
        let mut digest = None;
        while let Some(item) = stream.next().await {
            if cancel.is_cancelled() {
                return Err(PluginError::new(ErrorKind::CANCELLED, "push cancelled"));
            }
            let info = item.map_err(|e| push_failed(image, e.to_string()))?;
            if let Some(message) = info.error_detail.and_then(|d| d.message) {
                return Err(push_failed(image, message));
            }
            if let Some(status) = info.status {
                if let Some(rest) = status.split("digest: ").nth(1) {
                    digest = rest.split_whitespace().next().map(str::to_string);
                }
                if info.progress.is_none() {
                    events.info(format!("push: {status}"));
                }
            }
        }
        digest.ok_or_else(|| push_failed(image, "the daemon reported no digest".into()))
    }

    fn stream_error(&self, error: DockerError) -> PluginError {
        match error {
            DockerError::DockerStreamError { error } => {
                PluginError::new(ErrorKind::BUILD_FAILED, error)
            }
            DockerError::DockerResponseServerError {
                status_code,
                message,
            } if status_code < 500 => PluginError::new(
                ErrorKind::BUILD_FAILED,
                format!(
                    "the Docker daemon at {} refused the build: {message}",
                    self.host
                ),
            ),
            other => unavailable(self.explain(&other)),
        }
    }
}

/// A daemon push that failed; the caller asks the registry whether the
/// credentials were the cause.
fn push_failed(image: &str, message: String) -> PluginError {
    PluginError::new(
        ErrorKind::UNAVAILABLE,
        format!("pushing {image}: {message}"),
    )
}

/// `repo[:tag]` split at the tag's colon (not a registry port's), with
/// Docker's implied `latest`.
fn split_tag(reference: &str) -> (&str, &str) {
    let (repo, tag) = kiln_distribution::split_tag(reference);
    (repo, tag.unwrap_or("latest"))
}

/// Forward one frame of the daemon's stream; an error frame fails the build.
/// Returns the image ID when the frame carries it.
fn handle(info: &BuildInfo, events: &Events) -> Result<Option<String>, PluginError> {
    if let Some(detail) = &info.error_detail {
        let message = detail
            .message
            .clone()
            .or_else(|| info.error.clone())
            .unwrap_or_else(|| "the build failed".into());
        let mut error = PluginError::new(ErrorKind::BUILD_FAILED, message);
        if let Some(code) = detail.code {
            error.details = serde_json::json!({ "code": code });
        }
        return Err(error);
    }
    if let Some(message) = &info.error {
        return Err(PluginError::new(ErrorKind::BUILD_FAILED, message.clone()));
    }
    if let Some(text) = &info.stream {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if line.starts_with("Step ") {
                events.step(line);
            } else {
                events.output(line);
            }
        }
    }
    if let Some(status) = &info.status {
        let progress = info.progress.as_deref().unwrap_or("");
        events.info(format!("{status} {progress}").trim_end());
    }
    if let Some(id) = info.aux.as_ref().and_then(|image| image.id.as_ref()) {
        return Ok(Some(id.clone()));
    }
    Ok(None)
}

impl Builder for LocalBuilder {
    fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: Option<&HostRegistry>,
        events: &Events,
        cancel: &Cancel,
    ) -> Result<BuildOutput, PluginError> {
        block_on(self.run_build(request, context, registry, events, cancel))
    }
}

kiln_plugin_api::export_plugin! {
    name: "kiln-docker",
    builders: [LocalFlavor],
    registries: [],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_at_the_tag_colon_not_the_port() {
        assert_eq!(split_tag("app:1"), ("app", "1"));
        assert_eq!(
            split_tag("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_tag("localhost:5000/app:v2"),
            ("localhost:5000/app", "v2")
        );
    }
}
