//! Opening one plugin library and reading its flavors.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use kiln_plugin_api::{ErrorKind, FlavorDescriptor, PluginModuleRef, PLUGIN_API_VERSION};

/// A plugin library that loaded and described itself.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The name it gives itself.
    pub name: String,
    /// The plugin-api version it was built against (from its library header).
    pub api_version: String,
    /// Its root module; the constructors are called only at build time.
    pub module: PluginModuleRef,
    /// The flavors it offers.
    pub flavors: Vec<FlavorDescriptor>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("flavors", &self.flavors.len())
            .finish()
    }
}

/// A file that could not be used, and why in plain words.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file (or folder).
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// Open `path`, check it against this host's plugin-api and read its flavors.
///
/// The library stays loaded (libraries are never unloaded). A plugin that
/// panics while loading or describing itself is reported, not propagated.
pub fn load_plugin(path: &Path) -> Result<LoadedPlugin, Problem> {
    let problem = |reason: String| Problem {
        path: path.to_owned(),
        reason,
    };
    let header = lib_header_from_path(path).map_err(|e| problem(library_error_reason(&e)))?;
    let api_version = header.version_strings().version.to_string();
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| problem(library_error_reason(&e)))?;
    let name = module.plugin_name()().into_string();
    let flavors = match module.describe()().into_result() {
        Ok(f) => f.into_vec(),
        Err(e) if e.kind == ErrorKind::PANICKED => {
            return Err(problem(format!(
                "panicked while describing itself: {}",
                e.message
            )))
        }
        Err(e) => return Err(problem(format!("failed to describe itself: {}", e.message))),
    };
    Ok(LoadedPlugin {
        path: path.to_owned(),
        name,
        api_version,
        module,
        flavors,
    })
}

fn library_error_reason(e: &LibraryError) -> String {
    match e {
        LibraryError::OpenError { err, .. } => {
            format!("not a loadable dynamic library: {}", first_line(&err.to_string()))
        }
        LibraryError::GetSymbolError { .. } => {
            "not a kiln plugin: the library exports no abi_stable root module".to_owned()
        }
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => format!(
            "built against an incompatible plugin-api: the plugin uses {actual_version}, this kiln uses {PLUGIN_API_VERSION} (rebuild the plugin against plugin-api {})",
            compatible_range()
        ),
        LibraryError::ParseVersionError(e) => format!("not a kiln plugin: unreadable plugin-api version ({e})"),
        LibraryError::RootModule { err, .. } => match err {
            RootModuleError::Unwound => "panicked while loading its root module".to_owned(),
            RootModuleError::Returned(e) => format!("failed while loading its root module: {e}"),
        },
        LibraryError::AbiInstability(e) => {
            let text = e.to_string();
            tracing::debug!(target: "kiln::plugins", "layout check failed:\n{text}");
            if text.contains("type:PluginModule") && text.contains("too many fields") {
                return format!(
                    "built against an older plugin-api layout: its root module lacks functions this kiln (plugin-api {PLUGIN_API_VERSION}) needs; rebuild it against plugin-api {}",
                    compatible_range()
                );
            }
            let summary = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("layout mismatch");
            format!(
                "not a kiln plugin, or built against an incompatible plugin-api layout (this kiln uses {PLUGIN_API_VERSION}): {summary}"
            )
        }
        LibraryError::InvalidAbiHeader(h) => format!(
            "built with an incompatible abi_stable version (library header {}.{}); rebuild it against plugin-api {}",
            h.abi_major,
            h.abi_minor,
            compatible_range()
        ),
        other => first_line(&other.to_string()).to_owned(),
    }
}

fn compatible_range() -> String {
    let mut parts = PLUGIN_API_VERSION.split('.');
    match (parts.next(), parts.next()) {
        (Some("0"), Some(minor)) => format!("0.{minor}.x"),
        (Some(major), _) => format!("{major}.x"),
        _ => PLUGIN_API_VERSION.to_owned(),
    }
}

fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(s)
}

fn config_json(config: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::to_string(config).unwrap_or_else(|e| unreachable!("a JSON map serialises: {e}"))
}

/// The instantiate stage. Only `kiln build` and `kiln push` call these, after
/// the config was validated and its references resolved.
impl LoadedPlugin {
    /// Construct the image builder of `flavor` from resolved config.
    pub fn construct_builder(
        &self,
        flavor: &str,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<kiln_plugin_api::ImageBuilderBox, kiln_plugin_api::PluginError> {
        let json = config_json(config);
        self.module.construct_builder()(flavor.into(), json.as_str().into()).into_result()
    }

    /// Construct the container registry of `flavor` from resolved config.
    pub fn construct_registry(
        &self,
        flavor: &str,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<kiln_plugin_api::ContainerRegistryBox, kiln_plugin_api::PluginError> {
        let json = config_json(config);
        self.module.construct_registry()(flavor.into(), json.as_str().into()).into_result()
    }

    /// Run the builder flavor's context hook. A root module without the hook
    /// adds no files (abi_stable refuses such plugins at load time today, see
    /// `PluginModule`, so this is the fallback the accessor requires).
    pub fn customize_context(
        &self,
        flavor: &str,
        config: &serde_json::Map<String, serde_json::Value>,
        request: &kiln_plugin_api::BuildRequest,
    ) -> Result<Vec<kiln_plugin_api::ContextFile>, kiln_plugin_api::PluginError> {
        let Some(hook) = self.module.customize_context() else {
            return Ok(Vec::new());
        };
        let json = config_json(config);
        hook(flavor.into(), json.as_str().into(), request)
            .into_result()
            .map(|files| files.into_vec())
    }

    /// Whether the plugin was built with the context hook in its root module.
    pub fn has_context_hook(&self) -> bool {
        self.module.customize_context().is_some()
    }
}
