//! A plugin written against the first release of the plugin contract
//! (plugin-api 0.2.0, the frozen copy beside it): a builder flavor `first`
//! and a registry flavor `first-registry`. The compatibility tests load it
//! in the current kiln and list, describe, register, build (with its context
//! hook and through a registry) and push with it.
//!
//! The registry stores nothing: it answers a push with a digest derived
//! from the image name, so a test can tell which plugin answered.

use std::hash::{DefaultHasher, Hash, Hasher};

use kiln_plugin_api::author::{
    Builder, BuilderFlavor, Cancel, Events, Flavor, HostRegistry, Registry, RegistryCalls,
    RegistryFlavor, Secret,
};
use kiln_plugin_api::{
    capability, BuildContext, BuildOutput, BuildRequest, ContextFile, ErrorKind, Existence,
    ImageExistence, PluginError,
};

/// Settings of the `first` builder.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstConfig {
    /// Text prefixed to every log line.
    #[serde(default)]
    pub prefix: String,
    /// A token; masked by the host and accepted as `${env:NAME}`.
    pub token: Option<Secret>,
}

/// The `first` builder flavor.
pub struct FirstFlavor;

impl Flavor for FirstFlavor {
    type Config = FirstConfig;
    const NAME: &'static str = "first";
    const DESCRIPTION: &'static str = "Built against the first plugin contract";
    const CAPABILITIES: &'static [&'static str] =
        &[capability::BUILDS_LOCALLY, capability::CUSTOMIZES_CONTEXT];
}

impl BuilderFlavor for FirstFlavor {
    type Builder = First;
    fn construct(config: FirstConfig) -> Result<First, PluginError> {
        Ok(First {
            prefix: config.prefix,
            token_len: config.token.map_or(0, |t| t.expose().len()),
        })
    }
    fn customize_context(
        config: &FirstConfig,
        request: &BuildRequest,
    ) -> Result<Vec<ContextFile>, PluginError> {
        Ok(vec![ContextFile {
            path: "first.txt".into(),
            contents: format!("{}dockerfile={}\n", config.prefix, request.dockerfile).into_bytes(),
            mode: 0o644,
        }])
    }
}

/// The `first` builder.
pub struct First {
    prefix: String,
    token_len: usize,
}

impl Builder for First {
    fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: Option<&HostRegistry>,
        events: &Events,
        cancel: &Cancel,
    ) -> Result<BuildOutput, PluginError> {
        if cancel.is_cancelled() {
            return Err(PluginError::new(ErrorKind::CANCELLED, "cancelled"));
        }
        let archive = std::fs::read(&context.archive_path).map_err(|e| {
            PluginError::new(ErrorKind::INVALID_INPUT, format!("reading the context: {e}"))
        })?;
        let hooked = archive.windows(9).any(|w| w == b"first.txt");
        events.info(format!(
            "{}context {} bytes, hook file {}, token of {} bytes",
            self.prefix,
            context.size,
            if hooked { "present" } else { "missing" },
            self.token_len
        ));
        let image = request.tags.first().cloned().unwrap_or_default();
        let mut digest = None;
        if let Some(registry) = registry {
            for tag in &request.tags {
                registry.prepare_image_push(tag)?;
                let pushed = registry.push_image(tag)?;
                digest.get_or_insert(pushed);
            }
        }
        Ok(BuildOutput { image, digest })
    }
}

/// Settings of the `first-registry` registry.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstRegistryConfig {
    /// `host[:port][/namespace]`.
    pub uri: String,
}

/// The `first-registry` flavor.
pub struct FirstRegistryFlavor;

impl Flavor for FirstRegistryFlavor {
    type Config = FirstRegistryConfig;
    const NAME: &'static str = "first-registry";
    const DESCRIPTION: &'static str = "A registry built against the first plugin contract";
    const CAPABILITIES: &'static [&'static str] =
        &[capability::CHECKS_EXISTENCE, capability::PUSHES];
}

impl RegistryFlavor for FirstRegistryFlavor {
    type Registry = FirstRegistry;
    fn construct(config: FirstRegistryConfig) -> Result<FirstRegistry, PluginError> {
        Ok(FirstRegistry { uri: config.uri })
    }
}

/// The `first-registry` registry.
pub struct FirstRegistry {
    uri: String,
}

/// The digest this registry answers for `image`.
fn digest_of(image: &str) -> String {
    let mut h = DefaultHasher::new();
    image.hash(&mut h);
    format!("sha256:{:016x}{}", h.finish(), "0".repeat(48))
}

impl Registry for FirstRegistry {
    fn uri(&self) -> String {
        self.uri.clone()
    }
    fn owns_image(&self, image: &str) -> Result<bool, PluginError> {
        Ok(image.starts_with(&format!("{}/", self.uri)))
    }
    fn push_image(&self, image: &str, events: &Events, _: &Cancel) -> Result<String, PluginError> {
        events.info(format!("first-registry: stored {image}"));
        Ok(digest_of(image))
    }
    fn image_exists(
        &self,
        _repository: &str,
        _tag: &str,
        _platforms: &[String],
    ) -> Result<ImageExistence, PluginError> {
        Ok(ImageExistence {
            state: Existence::ABSENT,
            detail: String::new(),
        })
    }
}

kiln_plugin_api::export_plugin! {
    name: "fixture-first-release",
    builders: [FirstFlavor],
    registries: [FirstRegistryFlavor],
}
