//! A component (or a flavor with inline config) picked for a command: its
//! flavor, compiled schema and validated config. `kiln build`, `kiln push`
//! and `kiln context --builder` share it, so each reads the state and
//! compiles the schema once.

use kiln_plugin_api::{BuildRequest, ComponentType, PluginError};
use serde_json::{Map, Value};

use super::Session;
use crate::{
    config::{resolve_references, validate_component, CompiledSchema},
    context::ExtraFile,
    error::{Error, Result},
    plugins::{Catalog, Flavor},
    state::ComponentStore,
};

/// A flavor and its validated (not yet resolved) config.
pub(crate) struct Chosen {
    /// The component name, or `flavor <name>` for an inline config.
    pub(crate) label: String,
    /// The component name, when one was named.
    pub(crate) component: Option<String>,
    pub(crate) flavor: Flavor,
    schema: CompiledSchema,
    pub(crate) config: Map<String, Value>,
}

impl Chosen {
    /// The registered component `name`, which must be of type `t`.
    pub(crate) fn stored(
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
        })
    }

    /// `flavor` with a config given on the command line.
    pub(crate) fn inline(flavor: Flavor, config: Map<String, Value>) -> Result<Self> {
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
        })
    }

    /// The config with `${env:NAME}` references resolved, for construction
    /// and the context hook. Never print it.
    pub(crate) fn resolved_config(&self) -> Result<Map<String, Value>> {
        resolve_references(&self.label, &self.config, self.schema.secrets(), |n| {
            std::env::var(n).ok()
        })
    }

    /// A plugin failure in `call`, naming the plugin and flavor.
    pub(crate) fn plugin_error(&self, call: &'static str, e: PluginError) -> Error {
        Error::Plugin {
            plugin: self.flavor.plugin.path.clone(),
            flavor: self.flavor.name().to_owned(),
            call,
            message: e.message.to_string(),
        }
    }

    /// The files the builder's context hook adds (ZenML's
    /// `build_context_class`); none when the plugin has no hook. The builder
    /// itself is not constructed.
    pub(crate) fn context_files(&self, request: &BuildRequest) -> Result<Vec<ExtraFile>> {
        if !self.flavor.plugin.has_context_hook() {
            return Ok(Vec::new());
        }
        let files = self
            .flavor
            .plugin
            .customize_context(self.flavor.name(), &self.resolved_config()?, request)
            .map_err(|e| self.plugin_error("customize_context", e))?;
        Ok(files
            .into_iter()
            .map(|f| ExtraFile {
                path: f.path.into_string(),
                contents: f.contents.into_vec(),
                mode: f.mode,
            })
            .collect())
    }
}
