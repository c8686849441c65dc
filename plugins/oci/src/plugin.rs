//! The `oci` image-builder flavor: builds without a daemon and writes the
//! image as an archive (`kiln build ... --output type=oci,dest=FILE`).
//! Pushing straight to a registry is not done yet; with a registry the
//! build is refused with that reason.

use std::{collections::BTreeMap, io::Read, path::PathBuf};

use kiln_plugin_api::{
    author::{Builder, BuilderFlavor, Events, Flavor},
    capability, BuildContext, BuildOutput, BuildRequest, CancellationBox, ContainerRegistryBox,
    ErrorKind, PluginError,
};

use crate::{build, image};

/// Config of the `oci` builder.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OciConfig {
    /// Epoch second recorded as the image's creation time; the default uses
    /// `SOURCE_DATE_EPOCH` when set, else 0, so images are reproducible.
    pub created: Option<u64>,
    /// Image architecture (`amd64`, `arm64`, ...); default: this machine's.
    pub architecture: Option<String>,
}

/// The `oci` flavor.
pub struct OciFlavor;

impl Flavor for OciFlavor {
    type Config = OciConfig;
    const NAME: &'static str = "oci";
    const DESCRIPTION: &'static str =
        "Builds OCI images without a daemon (COPY-only Dockerfiles; in progress)";
    const CAPABILITIES: &'static [&'static str] = &[capability::BUILDS_LOCALLY];
}

impl BuilderFlavor for OciFlavor {
    type Builder = OciBuilder;
    fn construct(config: OciConfig) -> Result<OciBuilder, PluginError> {
        let created = config.created.unwrap_or_else(|| {
            std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        });
        let architecture = config.architecture.unwrap_or_else(|| {
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            }
            .to_string()
        });
        Ok(OciBuilder {
            created,
            architecture,
        })
    }
}

/// A constructed `oci` builder.
pub struct OciBuilder {
    created: u64,
    architecture: String,
}

fn invalid(message: String) -> PluginError {
    PluginError::new(ErrorKind::INVALID_INPUT, message)
}

/// The Dockerfile's text from the context archive.
fn dockerfile_text(context: &BuildContext, path: &str) -> Result<String, PluginError> {
    let file = std::fs::File::open(context.archive_path.as_str())
        .map_err(|e| invalid(format!("opening the build context: {e}")))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive
        .entries()
        .map_err(|e| invalid(format!("reading the build context: {e}")))?
    {
        let mut entry = entry.map_err(|e| invalid(format!("reading the build context: {e}")))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == path {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| invalid(format!("reading {path}: {e}")))?;
            return Ok(text);
        }
    }
    Err(invalid(format!("{path} is not in the build context")))
}

impl Builder for OciBuilder {
    fn is_building_locally(&self) -> bool {
        true
    }

    fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: Option<&ContainerRegistryBox>,
        events: &Events,
        cancel: &CancellationBox,
    ) -> Result<BuildOutput, PluginError> {
        let extra: serde_json::Value =
            serde_json::from_str(request.extra_json.as_str()).unwrap_or_default();
        let dest = extra
            .pointer("/output/dest")
            .and_then(|d| d.as_str())
            .map(PathBuf::from);
        if registry.is_some() {
            return Err(PluginError::new(
                ErrorKind::UNSUPPORTED,
                "the oci builder cannot push to a registry yet; write an archive with \
                 --output type=oci,dest=FILE, or build with the local builder",
            ));
        }
        let Some(dest) = dest else {
            return Err(invalid(
                "the oci builder writes an archive: pass --output type=oci,dest=FILE".into(),
            ));
        };
        if context.gzip {
            return Err(invalid(
                "the oci builder needs an uncompressed context".into(),
            ));
        }
        let text = dockerfile_text(context, request.dockerfile.as_str())?;
        let build_args: BTreeMap<String, String> = request
            .build_args
            .iter()
            .map(|p| (p.0.to_string(), p.1.to_string()))
            .collect();
        if cancel.is_cancelled() {
            return Err(PluginError::new(ErrorKind::CANCELLED, "cancelled"));
        }
        let built = build::build(&build::BuildInput {
            dockerfile: &text,
            context: std::path::Path::new(context.archive_path.as_str()),
            build_args,
            target: request.target.as_ref().map(|t| t.as_str()).into(),
            labels: request
                .labels
                .iter()
                .map(|p| (p.0.to_string(), p.1.to_string()))
                .collect(),
            created: self.created,
            architecture: &self.architecture,
        })
        .map_err(|e| invalid(e.to_string()))?;
        let tag = request
            .tags
            .first()
            .map(|t| t.to_string())
            .unwrap_or_default();
        image::write_archive(&built, &tag, &dest)
            .map_err(|e| PluginError::new(ErrorKind::OTHER, e))?;
        events.info(format!(
            "wrote {} ({} layers) to {}",
            built.digest(),
            built.layers.len(),
            dest.display()
        ));
        Ok(BuildOutput {
            image: tag.into(),
            digest: Some(built.digest().into()).into(),
        })
    }
}

kiln_plugin_api::export_plugin! {
    name: "kiln-oci",
    builders: [OciFlavor],
    registries: [],
}
