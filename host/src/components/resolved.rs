//! A component (or a flavor with inline config) picked for a command: its
//! flavor, compiled schema and validated config. `kiln build`, `kiln push`
//! and `kiln context --builder` share it, so each reads the state and
//! compiles the schema once.

use kiln_distribution::RegistryUri;
use kiln_plugin_api::{BuildRequest, Capability, ComponentType, ContextFile};
use serde_json::{Map, Value};

use crate::{
    config::{resolve_references, validate_component, CompiledSchema},
    context::ExtraFile,
    error::{Error, Result},
    plugins::{CancelFlag, Catalog, Flavor},
    session::Session,
    state::ComponentStore,
};

/// A flavor and its validated (not yet resolved) config.
pub struct ResolvedComponent {
    /// The component name, or `flavor <name>` for an inline config.
    pub label: String,
    /// The component name, when one was named.
    pub component: Option<String>,
    /// The flavor.
    pub flavor: Flavor,
    schema: CompiledSchema,
    /// The validated config: secret references unresolved, unless
    /// `secrets_resolved`.
    pub config: Map<String, Value>,
    /// Whether `config` already holds resolved secrets (a worker's copy):
    /// resolving again would read a secret's value as a reference.
    secrets_resolved: bool,
}

impl std::fmt::Debug for ResolvedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config may hold literal secrets: never shown.
        f.debug_struct("ResolvedComponent")
            .field("label", &self.label)
            .field("flavor", &self.flavor.name())
            .finish_non_exhaustive()
    }
}

/// Where a registry component puts images: its normalised address and the
/// repository used when no name is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAddress {
    /// `host[:port][/namespace]`, normalised.
    pub uri: RegistryUri,
    /// `default_repository`, when the flavor has one and it is set.
    pub default_repository: Option<String>,
}

impl ResolvedComponent {
    /// The registered component `name`, which must be of type `t`.
    pub fn from_component(
        session: &Session<'_>,
        catalog: &Catalog,
        name: &str,
        t: ComponentType,
    ) -> Result<Self> {
        let project = session.require_project()?;
        let state = ComponentStore::new(&project).read()?;
        let stored = state.get(name)?;
        if stored.component_type != t.as_str() {
            let article = if t == ComponentType::IMAGE_BUILDER {
                "an"
            } else {
                "a"
            };
            return Err(Error::BadArgument(format!(
                "component {name:?} is a {}, not {article} {t}",
                stored.component_type
            )));
        }
        let flavor = catalog.find(Some(t), &stored.flavor)?.clone();
        let schema = flavor.schema()?;
        let config = state.full_config(name)?;
        validate_component(name, t.as_str(), flavor.name(), &schema, &config)?;
        Ok(Self {
            label: name.to_owned(),
            component: Some(name.to_owned()),
            flavor,
            schema,
            config,
            secrets_resolved: false,
        })
    }

    /// `flavor` with a config another kiln process validated and resolved
    /// (a worker's view of the host's component): neither validated nor
    /// resolved again.
    pub fn from_resolved(
        flavor: Flavor,
        config: Map<String, Value>,
        label: String,
        component: Option<String>,
    ) -> Result<Self> {
        Ok(Self {
            label,
            component,
            schema: flavor.schema()?,
            flavor,
            config,
            secrets_resolved: true,
        })
    }

    /// `flavor` with a config given on the command line.
    pub fn from_flavor(flavor: Flavor, config: Map<String, Value>) -> Result<Self> {
        let schema = flavor.schema()?;
        let label = format!("flavor {}", flavor.name());
        let t = flavor.component_type();
        validate_component(&label, t.as_str(), flavor.name(), &schema, &config)?;
        Ok(Self {
            label,
            component: None,
            flavor,
            schema,
            config,
            secrets_resolved: false,
        })
    }

    /// `component NAME (flavor F)` or `flavor F`, for messages.
    pub fn describe(&self) -> String {
        match &self.component {
            Some(c) => format!("component {c} (flavor {})", self.flavor.name()),
            None => self.label.clone(),
        }
    }

    /// Whether the flavor says it builds on this machine.
    pub fn builds_locally(&self) -> bool {
        self.flavor
            .descriptor
            .has(&kiln_plugin_api::Capability::BuildsLocally)
    }

    /// Whether the flavor declares capability `name` (known to this kiln or
    /// not).
    pub fn declares(&self, name: &str) -> bool {
        self.flavor
            .descriptor
            .capabilities
            .iter()
            .any(|c| c.as_str() == name)
    }

    /// The config with `${env:NAME}` references resolved, for construction
    /// and the context hook. Never print it.
    pub fn resolved_config(&self, session: &Session<'_>) -> Result<Map<String, Value>> {
        if self.secrets_resolved {
            return Ok(self.config.clone());
        }
        resolve_references(&self.label, &self.config, self.schema.secrets(), |n| {
            session.env.var(n)
        })
    }

    /// The config without its secret fields (neither values nor
    /// references): what may be hashed into a tag or recorded.
    pub fn public_config(&self) -> Map<String, Value> {
        let mut config = self.config.clone();
        for pointer in self.schema.secrets().iter() {
            if let Some(slot) = crate::config::pointer_mut(&mut config, pointer) {
                *slot = Value::Null;
            }
        }
        config
    }

    /// A registry component's address: every registry flavor's config has
    /// `uri` (ZenML's `BaseContainerRegistryConfig`), read through the one
    /// normalisation ([`RegistryUri::parse`]), never used raw.
    pub fn registry_address(&self) -> Result<RegistryAddress> {
        let uri = self
            .config
            .get("uri")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::BadArgument(format!(
                    "registry {}: its config has no `uri`, so kiln cannot name images in it",
                    self.label
                ))
            })?;
        let uri = RegistryUri::parse(uri)
            .map_err(|e| Error::BadArgument(format!("registry {}: {e}", self.label)))?;
        let default_repository = self
            .config
            .get("default_repository")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(RegistryAddress {
            uri,
            default_repository,
        })
    }

    /// The files the builder's context hook adds (ZenML's
    /// `build_context_class`), run in a worker process; none when the flavor
    /// does not declare `customizes-context` or its plugin does not speak the
    /// hook. The builder itself is not constructed.
    pub fn context_files(
        &self,
        session: &Session<'_>,
        request: &BuildRequest,
    ) -> Result<Vec<ExtraFile>> {
        let declared = self.flavor.descriptor.has(&Capability::CustomizesContext);
        if !declared || !self.flavor.plugin.has_context_hook() {
            return Ok(Vec::new());
        }
        let files = crate::build::worker::context_hook_in_worker(session, self, request)?;
        Ok(files
            .into_iter()
            .map(|f| ExtraFile {
                path: f.path,
                contents: f.contents,
                mode: f.mode,
            })
            .collect())
    }

    /// Call the context hook in this process (the worker does).
    pub fn run_context_hook(
        &self,
        session: &Session<'_>,
        request: &BuildRequest,
    ) -> Result<Vec<ContextFile>> {
        let observer = crate::plugins::log_sink(&self.flavor.plugin.name, &CancelFlag::new());
        self.flavor
            .plugin
            .customize_context(
                self.flavor.name(),
                &self.resolved_config(session)?,
                request,
                observer,
            )
            .map_err(|e| Error::from_plugin("customize_context", self, e))
    }
}
