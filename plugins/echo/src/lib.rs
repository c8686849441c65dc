//! An example kiln plugin, the one in kiln-plugin-api's crate docs: an
//! image builder that logs what it was asked to build instead of building.

use kiln_plugin_api::author::{Builder, BuilderFlavor, Events, Flavor, Secret};
use kiln_plugin_api::{
    capability, BuildContext, BuildOutput, BuildRequest, CancellationBox, ContainerRegistryBox,
    ErrorKind, PluginError,
};

/// Settings of the `echo` builder.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    /// Text prefixed to every log line.
    #[serde(default)]
    pub prefix: String,
    /// A token; masked by the host and accepted as `${env:NAME}`.
    pub token: Option<Secret>,
}

pub struct EchoFlavor;

impl Flavor for EchoFlavor {
    type Config = EchoConfig;
    const NAME: &'static str = "echo";
    const DESCRIPTION: &'static str = "Logs the request instead of building";
    const CAPABILITIES: &'static [&'static str] = &[capability::BUILDS_LOCALLY];
}

impl BuilderFlavor for EchoFlavor {
    type Builder = Echo;
    fn construct(config: EchoConfig) -> Result<Echo, PluginError> {
        Ok(Echo {
            prefix: config.prefix,
        })
    }
}

pub struct Echo {
    prefix: String,
}

impl Builder for Echo {
    fn is_building_locally(&self) -> bool {
        true
    }
    fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        _registry: Option<&ContainerRegistryBox>,
        events: &Events,
        cancel: &CancellationBox,
    ) -> Result<BuildOutput, PluginError> {
        if cancel.is_cancelled() {
            return Err(PluginError::new(ErrorKind::CANCELLED, "cancelled"));
        }
        events.info(format!(
            "{}context {} ({} bytes)",
            self.prefix, context.sha1, context.size
        ));
        let image = request.tags.first().cloned().unwrap_or_default();
        Ok(BuildOutput {
            image,
            digest: None.into(),
        })
    }
}

kiln_plugin_api::export_plugin! {
    name: "kiln-echo",
    builders: [EchoFlavor],
    registries: [],
}
