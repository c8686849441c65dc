//! The registry a build or push goes through, constructed (real builds
//! only): the loopback rule, membership of every image, the existence
//! check. `kiln build` and `kiln push` share it.

use std::sync::Arc;

use kiln_distribution::{is_loopback, split_tag, Platform};
use kiln_plugin_api::{
    client::{RegistryCalls, RegistryHandle},
    ErrorKind, Existence,
};

use super::{
    checks::{CheckAnswer, Recorded},
    naming::{TagInputs, INPUTS_LABEL},
};
use crate::{
    components::ResolvedComponent,
    error::{Error, Result},
    plugins::Catalog,
    session::Session,
};

/// A registry given on the command line, no project needed: `flavor`
/// (default `default`) with `config` (a JSON object) whose `uri` defaults
/// to the host of `image`, so that Docker's own credentials for that host
/// apply (`kiln image exists`, `kiln build --push`).
pub fn inline(
    catalog: &Catalog,
    flavor: Option<&str>,
    config: Option<&str>,
    image: &str,
) -> Result<ResolvedComponent> {
    let flavor = catalog.find(
        Some(kiln_plugin_api::ComponentType::CONTAINER_REGISTRY),
        flavor.unwrap_or("default"),
    )?;
    let mut config = match config {
        Some(text) => super::options::json_object("--registry-config", text)?,
        None => serde_json::Map::new(),
    };
    if !config.contains_key("uri") {
        let host = kiln_distribution::names::parse(image)
            .map_err(|e| Error::BadArgument(format!("{image}: {e}")))?
            .registry()
            .to_string();
        config.insert("uri".into(), serde_json::Value::String(host));
    }
    ResolvedComponent::from_flavor(flavor.clone(), config)
}

/// A constructed registry and the component it came from.
pub struct Connected<'c> {
    /// The plugin's registry object.
    pub handle: Arc<RegistryHandle>,
    /// The component.
    pub component: &'c ResolvedComponent,
}

impl<'c> Connected<'c> {
    /// Construct `component` with its secrets resolved. A builder that does
    /// not build on this machine (`builds_locally` false) cannot reach a
    /// registry on a loopback address: refused, naming `builder`.
    pub fn connect(
        session: &Session<'_>,
        component: &'c ResolvedComponent,
        builder: &str,
        builds_locally: bool,
    ) -> Result<Self> {
        let handle = component
            .flavor
            .plugin
            .construct_registry(
                component.flavor.name(),
                &component.resolved_config(session)?,
            )
            .map(Arc::new)
            .map_err(|e| Error::from_plugin("construct", component, e))?;
        let uri = handle
            .uri()
            .map_err(|e| Error::from_plugin("uri", component, e))?;
        let host = uri.split('/').next().unwrap_or("");
        if !builds_locally && is_loopback(host) {
            return Err(Error::BadArgument(format!(
                "builder {builder} does not build on this machine, so it cannot reach registry {} \
                 at {host} (a loopback address); use a registry it can reach",
                component.label
            )));
        }
        Ok(Self { handle, component })
    }

    /// Every image must belong to the registry (exit 2 otherwise).
    pub fn check_members(&self, images: &[String]) -> Result<()> {
        for image in images {
            let owned = self
                .handle
                .owns_image(image)
                .map_err(|e| Error::from_plugin("owns_image", self.component, e))?;
            if !owned {
                let uri = self
                    .handle
                    .uri()
                    .map_err(|e| Error::from_plugin("uri", self.component, e))?;
                return Err(Error::BadArgument(format!(
                    "image {image} does not belong to registry {} ({uri}); name it {uri}/...",
                    self.component.label,
                )));
            }
        }
        Ok(())
    }

    /// Whether `image` exists for every one of `platforms` (any when
    /// empty), as a named answer. Refused
    /// credentials are an error (exit 7); anything else the registry
    /// cannot answer is `Unknown`.
    pub fn exists(&self, image: &str, platforms: &[Platform]) -> Result<(String, CheckAnswer)> {
        let (repo, tag) = split_tag(image);
        let platforms: Vec<String> = platforms.iter().map(Platform::to_string).collect();
        let answer = match self
            .handle
            .image_exists(repo, tag.unwrap_or("latest"), &platforms)
        {
            Ok(found) => match found.state {
                Existence::EXISTS => CheckAnswer::Exists(found.detail),
                Existence::ABSENT => CheckAnswer::Absent,
                _ => CheckAnswer::Unknown(found.detail),
            },
            Err(e) if e.kind == ErrorKind::AUTH => {
                return Err(Error::from_plugin("image_exists", self.component, e))
            }
            Err(e) => CheckAnswer::Unknown(e.message),
        };
        Ok((format!("registry {}", self.component.label), answer))
    }

    /// What the image `image`, found as `found` (`uri@sha256:...`),
    /// records of the inputs it was built from (its config's
    /// [`INPUTS_LABEL`], for `platform`), next to `inputs`. Read with the
    /// registry's credentials, over plain HTTP for loopback hosts, hosts
    /// in `insecure` and a registry whose config says `insecure`.
    pub fn recorded(
        &self,
        image: &str,
        found: &str,
        platform: &Platform,
        insecure: &[String],
        inputs: &TagInputs,
    ) -> Recorded {
        let reference = match kiln_distribution::names::parse(image) {
            Ok(r) => r,
            Err(e) => return Recorded::Unreadable(e),
        };
        let host = reference.registry().to_string();
        let repo = reference.repository().to_string();
        // The digest the check found, so that what is read is what was found.
        let wanted = found
            .rsplit_once('@')
            .map(|(_, d)| d)
            .filter(|d| kiln_distribution::client::is_digest(d))
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let credentials = match self.handle.auth() {
            Ok(auth) => auth.map(|a| kiln_distribution::Credentials {
                username: a.username,
                password: a.secret,
            }),
            Err(e) => return Recorded::Unreadable(e.message),
        };
        let mut insecure = insecure.to_vec();
        if self.component.config.get("insecure") == Some(&serde_json::Value::Bool(true)) {
            insecure.push(host.clone());
        }
        let config = (|| {
            let (client, runtime) = super::bases::client_for(
                &host,
                &insecure,
                credentials,
                super::bases::RESOLVE_TIMEOUT,
            )?;
            runtime
                .block_on(client.image_config(&repo, &wanted, platform))
                .map_err(|e| e.to_string())
        })();
        let config = match config {
            Ok(Some(config)) => config,
            Ok(None) => {
                return Recorded::Unreadable(format!("{host} no longer has {repo}@{wanted}"))
            }
            Err(why) => return Recorded::Unreadable(why),
        };
        let label = config
            .get("config")
            .and_then(|c| c.get("Labels"))
            .and_then(|l| l.get(INPUTS_LABEL));
        match label {
            None | Some(serde_json::Value::Null) => Recorded::Nothing,
            Some(value) => match value.as_str().and_then(TagInputs::from_label) {
                Some(before) => {
                    let changed = inputs.changed_since(&before);
                    if changed.is_empty() {
                        Recorded::Same
                    } else {
                        Recorded::Changed(changed)
                    }
                }
                None => {
                    Recorded::Unreadable(format!("its label {INPUTS_LABEL} is not kiln's record"))
                }
            },
        }
    }
}
