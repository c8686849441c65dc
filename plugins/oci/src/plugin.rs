//! The `oci` image-builder flavor: builds without a daemon, then pushes the
//! image over the distribution API to the build's registry (`--registry`)
//! and/or writes it as an archive (`kiln build ... --output
//! type=oci,dest=FILE`), whichever were asked for.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use kiln_plugin_api::{
    author::{Builder, BuilderFlavor, Cancel, Events, Flavor, HostRegistry},
    capability, BuildContext, BuildOutput, BuildRequest, ErrorKind, PluginError,
};

use kiln_distribution::Retry;

use crate::{dispatch, image, registry_cache, sources, store::Store};

/// Config of the `oci` builder.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OciConfig {
    /// Epoch second recorded as the image's creation time; the default uses
    /// `SOURCE_DATE_EPOCH` when set, else 0, so images are reproducible.
    pub created: Option<u64>,
    /// Image architecture (`amd64`, `arm64`, ...) when `--platform` is not
    /// given; default: this machine's.
    pub architecture: Option<String>,
    /// The layer and base-image cache; default `$KILN_CACHE_DIR/oci`, else
    /// `~/.cache/kiln/oci`.
    pub cache_dir: Option<String>,
    /// Registry hosts (`host[:port]`) spoken to over plain HTTP; loopback
    /// hosts always are, as the Docker daemon treats them.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// The Docker Engine whose images `FROM` may use before pulling (as
    /// Docker's builder does; `--pull` skips it): default `DOCKER_HOST`, then
    /// `unix:///var/run/docker.sock`. No engine needed: without one, bases
    /// come from registries.
    pub docker_host: Option<String>,
    /// Bound on each registry request, in seconds (a blob upload or
    /// download is one request).
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: u64,
    /// Retries of a registry request answered with 429 or 5xx.
    #[serde(default = "default_retries")]
    #[schemars(range(max = 10))]
    pub retries: u32,
    /// Milliseconds before the first retry; each later wait doubles (up to
    /// 32 times this).
    #[serde(default = "default_backoff")]
    #[schemars(range(max = 60000))]
    pub retry_backoff_ms: u64,
    /// The OCI runtime `RUN` uses: `auto` (the default: `runc`, else `crun`,
    /// found on `PATH`), a name on `PATH`, or a path.
    pub runtime: Option<String>,
    /// How `RUN` puts a stage's files on disk (BuildKit's names):
    /// `overlayfs` mounts the image's layers, unpacked once into the cache,
    /// under a folder that catches the command's changes (the kernel's
    /// overlay filesystem; needs root); `native` writes the files out for
    /// each stage; `auto` (the default) is `overlayfs` where it works, else
    /// `native`. Both give the same layers.
    #[serde(default)]
    pub snapshotter: SnapshotterChoice,
}

/// The `snapshotter` config key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotterChoice {
    /// `overlayfs` where it works, else `native`.
    #[default]
    Auto,
    /// The kernel's overlay filesystem.
    Overlayfs,
    /// A copy of the files.
    Native,
}

fn default_timeout() -> u64 {
    300
}

fn default_retries() -> u32 {
    3
}

fn default_backoff() -> u64 {
    200
}

/// The `oci` flavor.
pub struct OciFlavor;

impl Flavor for OciFlavor {
    type Config = OciConfig;
    const NAME: &'static str = "oci";
    const DESCRIPTION: &'static str =
        "Builds OCI images without a daemon (RUN through crun or runc); pushes them or writes an archive";
    const CAPABILITIES: &'static [&'static str] = &[
        capability::BUILDS_LOCALLY,
        capability::NAMED_CONTEXTS,
        capability::BASES_FROM_DOCKER_ENGINE,
    ];
}

impl BuilderFlavor for OciFlavor {
    type Builder = OciBuilder;
    #[allow(clippy::disallowed_methods)] // SOURCE_DATE_EPOCH (`created`) and PATH (`runtime`)
    fn construct(config: OciConfig) -> Result<OciBuilder, PluginError> {
        let created = config.created.unwrap_or_else(|| {
            std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        });
        let architecture = config
            .architecture
            .unwrap_or_else(|| image::host_architecture().to_string());
        let runtime = crate::runtime::Runtime::find(
            config.runtime.as_deref().unwrap_or("auto"),
            std::env::var_os("PATH").as_deref(),
        );
        Ok(OciBuilder {
            runtime,
            snapshotter: match config.snapshotter {
                SnapshotterChoice::Auto => dispatch::Snapshotter::Auto,
                SnapshotterChoice::Overlayfs => dispatch::Snapshotter::Overlayfs,
                SnapshotterChoice::Native => dispatch::Snapshotter::Native,
            },
            created,
            architecture,
            cache_dir: config
                .cache_dir
                .map(PathBuf::from)
                .unwrap_or_else(Store::default_root),
            insecure: config.insecure_registries,
            engine: crate::sources::engine::engine_host(config.docker_host.as_deref()),
            timeout: Duration::from_secs(config.timeout_seconds.max(1)),
            retry: Retry::with_backoff_ms(config.retries, config.retry_backoff_ms),
        })
    }
}

/// A constructed `oci` builder.
pub struct OciBuilder {
    runtime: Result<crate::runtime::Runtime, String>,
    snapshotter: dispatch::Snapshotter,
    created: u64,
    architecture: String,
    cache_dir: PathBuf,
    insecure: Vec<String>,
    engine: String,
    timeout: Duration,
    retry: Retry,
}

fn invalid(message: String) -> PluginError {
    PluginError::new(ErrorKind::INVALID_INPUT, message)
}

/// A build's error as the plugin's, with its kind.
fn build_error(e: crate::error::BuildError) -> PluginError {
    let kind = match e.cause {
        crate::error::Cause::Input => ErrorKind::INVALID_INPUT,
        crate::error::Cause::Auth => ErrorKind::AUTH,
        crate::error::Cause::Unavailable => ErrorKind::UNAVAILABLE,
        crate::error::Cause::BuildFailed => ErrorKind::BUILD_FAILED,
        crate::error::Cause::Cancelled => ErrorKind::CANCELLED,
        crate::error::Cause::Storage => ErrorKind::STORAGE,
    };
    PluginError::new(kind, e.to_string())
}

impl Builder for OciBuilder {
    fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: Option<&HostRegistry>,
        events: &Events,
        cancel: &Cancel,
    ) -> Result<BuildOutput, PluginError> {
        let dest = request.output.as_ref().map(|o| PathBuf::from(&o.dest));
        let kind = request.output.as_ref().map_or("", |o| o.kind.as_str());
        if !matches!(kind, "" | "oci" | "docker" | "local" | "tar") {
            return Err(invalid(format!(
                "--output type={kind}: the oci builder writes type=oci, docker, local or tar"
            )));
        }
        if registry.is_none() && dest.is_none() {
            return Err(invalid(
                "the oci builder keeps no local image store: give --registry COMPONENT to push \
                 the image, or --output type=oci,dest=FILE to write an archive (`docker load -i \
                 FILE` loads it)"
                    .into(),
            ));
        }
        if context.gzip {
            return Err(invalid(
                "the oci builder needs an uncompressed context".into(),
            ));
        }
        let contexts: BTreeMap<String, String> = request
            .build_contexts
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect();
        let platforms: Vec<image::Platform> = if request.platforms.is_empty() {
            vec![match request.platform.as_deref() {
                Some(p) => image::Platform::parse(p).map_err(invalid)?,
                None => image::Platform {
                    os: "linux".into(),
                    architecture: self.architecture.clone(),
                    variant: None,
                },
            }]
        } else {
            request
                .platforms
                .iter()
                .map(|p| image::Platform::parse(p).map_err(invalid))
                .collect::<Result<_, _>>()?
        };
        let files =
            crate::context::ContextFiles::open(std::path::Path::new(context.archive_path.as_str()))
                .map_err(|e| invalid(e.to_string()))?;
        let dockerfile = request.dockerfile.as_str();
        let text = files
            .text(dockerfile)
            .ok_or_else(|| invalid(format!("{dockerfile} is not in the build context")))?;
        let build_args: BTreeMap<String, String> = request
            .build_args
            .iter()
            .map(|p| (p.0.to_string(), p.1.to_string()))
            .collect();
        if cancel.is_cancelled() {
            return Err(PluginError::new(ErrorKind::CANCELLED, "cancelled"));
        }
        for spec in &request.cache_from {
            registry_cache::check_kind("--cache-from", spec)?;
        }
        for spec in &request.cache_to {
            registry_cache::check_kind("--cache-to", spec)?;
        }
        let connection = crate::outputs::registry::Connection {
            insecure: &self.insecure,
            timeout: self.timeout,
            retry: self.retry,
        };
        let mut store = match Store::open(&self.cache_dir) {
            Ok(s) => Some(s),
            Err(e) => {
                events.warn(format!("{e}; building without the layer cache"));
                None
            }
        };
        // `--cache-from`: looked in after the local cache (not with
        // --no-cache); a cache that cannot be read is a warning.
        if let Some(store) = store.as_mut().filter(|_| !request.no_cache) {
            for spec in &request.cache_from {
                match registry_cache::import(spec, connection, registry) {
                    Ok(Some(cache)) => {
                        events.info(format!(
                            "--cache-from {}: {} recipes",
                            spec.reference,
                            cache.recipes()
                        ));
                        store.add_remote(Box::new(cache));
                    }
                    Ok(None) => events.info(format!(
                        "--cache-from {}: no cache there yet",
                        spec.reference
                    )),
                    Err(e) => events.warn(format!("--cache-from: {e}")),
                }
            }
        }
        let store = store;
        let pull = |name: &str, platform: &image::Platform| {
            let Some(store) = &store else {
                return Err(kiln_distribution::CallError::Failed(format!(
                    "{name}: pulling base images needs the cache folder"
                )));
            };
            if !request.pull {
                if let Some(found) =
                    crate::sources::engine::local_image(&self.engine, name, platform, store)
                {
                    let base = found.map_err(kiln_distribution::CallError::Failed)?;
                    events.info(format!(
                        "using {name} from the Docker Engine at {} (--pull asks the registry)",
                        self.engine
                    ));
                    return Ok(base);
                }
            }
            sources::Sources {
                store,
                platform,
                registry,
                insecure: &self.insecure,
                timeout: self.timeout,
                retry: self.retry,
                events,
            }
            .pull(name)
        };
        crate::runtime::rootfs::remove_stale(&self.cache_dir.join("run"));
        let runner = dispatch::Runner {
            runtime: self.runtime.clone(),
            work_dir: self.cache_dir.join("run"),
            output: &|line: &str| events.output(line),
            step: &|text: &str| events.step(text),
            cancelled: &|| cancel.is_cancelled(),
            secrets: &request.secrets,
            cache_mounts: self.cache_dir.join("mounts"),
            snapshotter: self.snapshotter,
            snapshots: crate::runtime::overlay::Snapshots::open(&self.cache_dir).ok(),
        };
        let inputs: Vec<dispatch::BuildInput<'_>> = platforms
            .iter()
            .map(|platform| dispatch::BuildInput {
                dockerfile: &text,
                context: &files,
                context_sha1: Some(context.sha1.as_str()).filter(|s| !s.is_empty()),
                build_args: build_args.clone(),
                target: request.target.as_deref(),
                labels: request
                    .labels
                    .iter()
                    .map(|p| (p.0.to_string(), p.1.to_string()))
                    .collect(),
                created: self.created,
                platform: platform.clone(),
                contexts: contexts.clone(),
                no_cache: request.no_cache,
                store: store.as_ref(),
                pull: &pull,
                runner: Some(&runner),
                events: Some(events),
            })
            .collect();
        // Every platform RUN needs checked before any work.
        for input in &inputs {
            for (line, platform) in dispatch::run_platforms(input).map_err(build_error)? {
                crate::runtime::emulation::check(
                    &platform,
                    std::path::Path::new(crate::runtime::emulation::BINFMT_DIR),
                )
                .map_err(|e| build_error(crate::error::failed(line, e)))?;
            }
        }
        let mut images = Vec::new();
        for input in &inputs {
            if inputs.len() > 1 {
                events.info(format!("building for {}", input.platform));
            }
            let built = dispatch::build(input);
            for warning in store.iter().flat_map(Store::take_warnings) {
                events.warn(format!("--cache-from: {warning}; the step is built here"));
            }
            let built = built.map_err(build_error)?;
            if images.is_empty() && !built.unused_args.is_empty() {
                events.warn(format!(
                    "build args not consumed by the Dockerfile (no ARG declares them): {}",
                    built.unused_args.join(", ")
                ));
            }
            events.info(format!(
                "built {}{} ({} layers; {} made by this build, {} of them from the cache)",
                built.image.digest(),
                if inputs.len() > 1 {
                    format!(" for {}", input.platform)
                } else {
                    String::new()
                },
                built.image.layers.len(),
                built.layers_made,
                built.layers_cached
            ));
            images.push(built.image);
        }
        let image = match images.len() {
            1 => image::Artifact::Image(images.remove(0)),
            _ => {
                let index = image::Artifact::index(images).map_err(PluginError::other)?;
                events.info(format!(
                    "made the image index {} over {}",
                    index.digest(),
                    request.platforms.join(", ")
                ));
                index
            }
        };
        let tags: Vec<String> = request.tags.iter().map(|t| t.to_string()).collect();
        if cancel.is_cancelled() {
            return Err(PluginError::new(ErrorKind::CANCELLED, "cancelled"));
        }
        let output_error = |e: crate::outputs::archive::WriteError, dest: &std::path::Path| {
            use crate::outputs::archive::WriteError;
            let kind = match e {
                WriteError::Cancelled => {
                    return PluginError::new(ErrorKind::CANCELLED, "cancelled")
                }
                WriteError::Full(_) => ErrorKind::STORAGE,
                WriteError::Other(_) => ErrorKind::INVALID_INPUT,
            };
            PluginError::new(kind, format!("--output dest={}: {e}", dest.display()))
        };
        if let (Some(dest), "local" | "tar") = (&dest, kind) {
            let cancelled = || cancel.is_cancelled();
            if kind == "local" {
                crate::outputs::filesystem::write_local(&image, dest, &cancelled)
            } else {
                crate::outputs::filesystem::write_tar(&image, dest, self.created, &cancelled)
            }
            .map_err(|e| output_error(e, dest))?;
            events.info(format!(
                "wrote the filesystem of {} to {}",
                image.digest(),
                dest.display()
            ));
        } else if let Some(dest) = &dest {
            let wrote = crate::outputs::archive::write_archive_unless_there(
                &image,
                &tags,
                dest,
                &self.cache_dir.join("outputs"),
                &|| cancel.is_cancelled(),
            )
            .map_err(|e| output_error(e, dest))?;
            events.info(if wrote {
                format!("wrote {} to {}", image.digest(), dest.display())
            } else {
                format!(
                    "{} already holds {} (written by an earlier build, untouched since)",
                    dest.display(),
                    image.digest()
                )
            });
        }
        let digest = match registry {
            Some(r) => {
                crate::outputs::registry::push(&image, &tags, r, connection, events, cancel)?
            }
            None => image.digest(),
        };
        if !request.cache_to.is_empty() {
            let Some(store) = &store else {
                return Err(PluginError::new(
                    ErrorKind::STORAGE,
                    "--cache-to needs the cache folder, which could not be opened",
                ));
            };
            let used = store.used_recipes();
            let in_image: std::collections::BTreeSet<String> = image
                .images()
                .iter()
                .flat_map(|i| i.layers.iter().map(|l| l.diff_id.clone()))
                .collect();
            for spec in &request.cache_to {
                let mode = spec.effective_mode();
                let recipes = registry_cache::chosen(mode, &used, &in_image);
                let (recipes, layers) = registry_cache::export(
                    spec, store, &recipes, connection, registry, events, cancel,
                )?;
                events.info(format!(
                    "--cache-to {} (mode={mode}): {recipes} recipes, {layers} layers",
                    spec.reference
                ));
            }
        }
        Ok(BuildOutput {
            image: tags.first().cloned().unwrap_or_default(),
            digest: Some(digest),
        })
    }
}

kiln_plugin_api::export_plugin! {
    name: "kiln-oci",
    builders: [OciFlavor],
    registries: [],
}
