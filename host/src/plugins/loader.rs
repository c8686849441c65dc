//! Opening one plugin library and reading its flavors.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};
use kiln_plugin_api::{
    client::{self, incompatible_message, HandshakeError, Observer, Plugin},
    protocol::compatibility,
    BuildRequest, ContextFile, ErrorKind, FlavorDescriptor, PartyInfo, PluginModuleRef,
    PLUGIN_API_VERSION,
};

/// A plugin library that loaded, shook hands and described itself.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The name it gives itself.
    pub name: String,
    /// Its own version (its crate's).
    pub version: String,
    /// The plugin-api release (protocol version) it was built against.
    pub api_version: String,
    /// The optional protocol features it implements.
    pub features: Vec<String>,
    /// The handshaken plugin; the constructors are called only at build time.
    pub plugin: Plugin,
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

/// Open `path`, check it against this host's plugin-api, shake hands and
/// read its flavors.
///
/// The library stays loaded (libraries are never unloaded). A plugin that
/// panics while loading or describing itself is reported, not propagated.
pub fn load_plugin(path: &Path) -> Result<LoadedPlugin, Problem> {
    let problem = |reason: String| Problem {
        path: path.to_owned(),
        reason,
    };
    let header = lib_header_from_path(path).map_err(|e| problem(library_error_reason(&e)))?;
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| problem(library_error_reason(&e)))?;
    let host = PartyInfo {
        name: "kiln".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let plugin = Plugin::handshake(module, host).map_err(|e| match e {
        HandshakeError::Incompatible { .. } => problem(e.to_string()),
        HandshakeError::Unreadable(_) => problem(format!("not a kiln plugin: {e}")),
    })?;
    let flavors = match plugin.describe() {
        Ok(f) => f,
        Err(e) if e.kind == ErrorKind::PANICKED => {
            return Err(problem(format!(
                "panicked while describing itself: {}",
                e.message
            )))
        }
        Err(e) => return Err(problem(format!("failed to describe itself: {}", e.message))),
    };
    let hello = plugin.hello().clone();
    Ok(LoadedPlugin {
        path: path.to_owned(),
        name: hello.plugin.name,
        version: hello.plugin.version,
        api_version: hello.protocol.version,
        features: hello.protocol.features,
        plugin,
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
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            incompatible_message(&actual_version.to_string())
        }
        LibraryError::ParseVersionError(e) => format!("not a kiln plugin: unreadable plugin-api version ({e})"),
        LibraryError::RootModule { err, .. } => match err {
            RootModuleError::Unwound => "panicked while loading its root module".to_owned(),
            RootModuleError::Returned(e) => format!("failed while loading its root module: {e}"),
        },
        LibraryError::AbiInstability(e) => {
            let text = e.to_string();
            tracing::debug!(target: "kiln::plugins", "layout check failed:\n{text}");
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
    format!("{}.x", compatibility(PLUGIN_API_VERSION))
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
    ) -> Result<client::BuilderHandle, kiln_plugin_api::PluginError> {
        self.plugin.construct_builder(flavor, &config_json(config))
    }

    /// Construct the container registry of `flavor` from resolved config.
    pub fn construct_registry(
        &self,
        flavor: &str,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<client::RegistryHandle, kiln_plugin_api::PluginError> {
        self.plugin.construct_registry(flavor, &config_json(config))
    }

    /// Run the builder flavor's context hook; a plugin without the hook
    /// adds no files.
    pub fn customize_context(
        &self,
        flavor: &str,
        config: &serde_json::Map<String, serde_json::Value>,
        request: &BuildRequest,
        observer: std::sync::Arc<dyn Observer>,
    ) -> Result<Vec<ContextFile>, kiln_plugin_api::PluginError> {
        self.plugin
            .customize_context(flavor, &config_json(config), request, observer)
    }

    /// Whether the plugin answers the context hook (protocol feature
    /// `context-hook`).
    pub fn has_context_hook(&self) -> bool {
        self.plugin.has_context_hook()
    }
}
