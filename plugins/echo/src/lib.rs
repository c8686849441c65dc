//! An example kiln plugin, the one in kiln-plugin-api's crate docs: an
//! image builder that logs what it was asked to build instead of building.

use kiln_plugin_api::author::{
    Builder, BuilderFlavor, Cancel, Events, Flavor, HostRegistry, Secret,
};
use kiln_plugin_api::{
    capability, BuildContext, BuildOutput, BuildRequest, ErrorKind, PluginError,
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
    fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        _registry: Option<&HostRegistry>,
        events: &Events,
        cancel: &Cancel,
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
            digest: None,
        })
    }
}

kiln_plugin_api::export_plugin! {
    name: "kiln-echo",
    builders: [EchoFlavor],
    registries: [],
}

/// The flavor exercised in-process with kiln-plugin-api's test harness, as
/// a plugin author would test theirs.
#[cfg(test)]
mod tests {
    use kiln_plugin_api::{testing::BuilderHarness, BuildContext, BuildRequest, ErrorKind};

    use super::EchoFlavor;

    fn context() -> BuildContext {
        BuildContext {
            archive_path: "/nonexistent/context.tar".into(),
            gzip: false,
            sha1: "abc".into(),
            size: 3,
            uploaded_uri: None,
        }
    }

    #[test]
    fn the_echo_flavor_describes_builds_and_stops_when_cancelled() {
        let d = BuilderHarness::<EchoFlavor>::descriptor();
        assert_eq!(d.name, "echo");
        assert!(d.config_schema["properties"]["prefix"].is_object());

        let h = BuilderHarness::<EchoFlavor>::new(serde_json::json!({"prefix": "t-"}))
            .expect("construct");
        let request = BuildRequest {
            tags: vec!["app:1".into()],
            ..BuildRequest::default()
        };
        let out = h.build(&request, &context()).expect("build");
        assert_eq!(out.image, "app:1");
        assert_eq!(h.messages(), ["t-context abc (3 bytes)"]);

        h.cancel();
        let e = h.build(&request, &context()).expect_err("cancelled");
        assert_eq!(e.kind, ErrorKind::CANCELLED);

        let bad = BuilderHarness::<EchoFlavor>::new(serde_json::json!({"prefx": "x"}));
        assert!(bad.is_err(), "unknown keys are refused");
    }
}
