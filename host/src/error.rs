//! The host library's error type and the exit codes it maps to.

use std::path::PathBuf;

use kiln_plugin_api::{ComponentType, ErrorKind, PluginError};
use thiserror::Error;

use crate::components::ResolvedComponent;

/// Process exit codes, documented in the README.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// An unexpected failure.
    pub const FAILURE: i32 = 1;
    /// Bad usage or config: unknown flavor or component, invalid config, bad arguments.
    pub const USAGE: i32 = 2;
    /// A plugin could not be loaded or returned an error.
    pub const PLUGIN: i32 = 3;
    /// The project state could not be read or written.
    pub const STATE: i32 = 4;
    /// The builder's daemon (or other backend) is unreachable or unusable.
    pub const DAEMON: i32 = 5;
    /// The build itself failed (a failing `RUN`, a bad Dockerfile).
    pub const BUILD_FAILED: i32 = 6;
    /// A registry refused us (auth) or could not be used.
    pub const REGISTRY: i32 = 7;
    /// Interrupted (Ctrl-C), as shells report SIGINT.
    pub const INTERRUPTED: i32 = 130;
}

/// Everything the host library can fail with. Each variant names what it touched.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A command needs a project and none was found.
    #[error("no kiln project found in {start} or any parent folder; run `kiln init` there, or pass --project DIR")]
    NoProject {
        /// Where the search started.
        start: PathBuf,
    },
    /// No loaded plugin offers the flavor.
    #[error("no {component_type} flavor named {name:?} is offered by the loaded plugins{hint}")]
    UnknownFlavor {
        /// `image-builder` or `container-registry`.
        component_type: String,
        /// The flavor asked for.
        name: String,
        /// Extra advice (other types with that name, problems seen while loading).
        hint: String,
    },
    /// The flavor name exists under several types and `--type` was not given.
    #[error("flavor {name:?} is offered as {types}; pass --type to choose")]
    AmbiguousFlavor {
        /// The flavor asked for.
        name: String,
        /// The types offering it.
        types: String,
    },
    /// No component of that name exists.
    #[error("no component named {0:?}; `kiln component list` shows the registered ones")]
    UnknownComponent(String),
    /// A component of that name exists already.
    #[error(
        "a component named {0:?} exists already; use `kiln component update` or pick another name"
    )]
    ComponentExists(String),
    /// A component name that cannot be used.
    #[error("invalid component name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The config did not validate against the flavor's schema.
    #[error("invalid config for component {component:?} (flavor {component_type}/{flavor}):\n{}", problems.join("\n"))]
    InvalidConfig {
        /// The component being registered or updated.
        component: String,
        /// Its type.
        component_type: String,
        /// Its flavor.
        flavor: String,
        /// One line per problem: `  /pointer: message`.
        problems: Vec<String>,
    },
    /// A flavor published a schema that is not a valid JSON Schema.
    #[error("plugin {plugin} publishes an invalid config schema for flavor {flavor}: {message}")]
    BadSchema {
        /// The plugin's path.
        plugin: PathBuf,
        /// The flavor.
        flavor: String,
        /// What the schema compiler said.
        message: String,
    },
    /// A `--set`, `--unset` or `--config` argument could not be used.
    #[error("{0}")]
    BadArgument(String),
    /// A secret reference could not be resolved at instantiation.
    #[error("component {component:?}: {pointer}: {message}")]
    Secret {
        /// The component.
        component: String,
        /// The config field, as a JSON pointer.
        pointer: String,
        /// What is missing.
        message: String,
    },
    /// A state file exists but cannot be parsed; kiln will not overwrite it.
    #[error("state file {path} is corrupt ({message}); kiln will not overwrite it: fix it by hand or move it away")]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What kiln was doing (`reading`, `writing`, `locking`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A plugin call returned an error (or panicked, caught by its guard).
    #[error("plugin {plugin} ({flavor}) failed in {call}: {message}")]
    Plugin {
        /// The plugin's path.
        plugin: PathBuf,
        /// The flavor called.
        flavor: String,
        /// The call (`customize_context`, `build`, ...).
        call: &'static str,
        /// The plugin's message.
        message: String,
    },
    /// A build did not succeed; `code` is one of the build exit codes.
    #[error("{builder}: {message}")]
    Build {
        /// The builder component (or `flavor NAME`).
        builder: String,
        /// What the builder said.
        message: String,
        /// The exit code.
        code: i32,
    },
    /// A registry refused or failed a call; `code` is the exit code its
    /// kind means.
    #[error("registry {registry}: {message}")]
    Registry {
        /// The registry component.
        registry: String,
        /// What the registry plugin said.
        message: String,
        /// The exit code.
        code: i32,
    },
    /// A plugin took its worker process down (abort, segfault, exit).
    #[error("plugin {plugin} ({}) crashed during {stage}: {how}; kiln is unharmed, the plugin needs fixing", path.display())]
    PluginCrashed {
        /// The plugin's name.
        plugin: String,
        /// Its library.
        path: PathBuf,
        /// What it was doing (`registry checks`, `build`).
        stage: String,
        /// `signal 6 (SIGABRT)`, `it exited with status 1`.
        how: String,
    },
    /// An error a worker process reported, with its exit code.
    #[error("{message}")]
    Reported {
        /// The message, as kiln prints it.
        message: String,
        /// The exit code.
        code: i32,
    },
    /// The build context could not be made.
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    /// One or more plugin files could not be loaded (`plugin check`, `--strict`).
    #[error("{count} plugin problem(s) found")]
    PluginProblems {
        /// How many.
        count: usize,
    },
}

impl Error {
    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoProject { .. }
            | Error::UnknownFlavor { .. }
            | Error::AmbiguousFlavor { .. }
            | Error::UnknownComponent(_)
            | Error::ComponentExists(_)
            | Error::InvalidName { .. }
            | Error::InvalidConfig { .. }
            | Error::BadArgument(_)
            | Error::Secret { .. } => exit::USAGE,
            Error::BadSchema { .. } | Error::PluginProblems { .. } | Error::Plugin { .. } => {
                exit::PLUGIN
            }
            Error::Build { code, .. }
            | Error::Registry { code, .. }
            | Error::Reported { code, .. } => *code,
            Error::PluginCrashed { .. } => exit::PLUGIN,
            Error::Context(e) if e.is_storage_full() => exit::STATE,
            Error::Context(e) if e.is_input_error() => exit::USAGE,
            Error::Context(_) => exit::FAILURE,
            Error::CorruptState { .. } | Error::Io { .. } => exit::STATE,
        }
    }

    /// A plugin's error from `call` on `component`, with the exit code its
    /// kind means. This is the one mapping from plugin errors to exit codes:
    ///
    /// | kind | exit |
    /// |---|---|
    /// | `CANCELLED` | 130 |
    /// | `AUTH` | 7 |
    /// | `UNAVAILABLE` | 5 |
    /// | `BUILD_FAILED` | 6 |
    /// | `INVALID_CONFIG`, `INVALID_INPUT` | 2 |
    /// | `STORAGE` (a full disk) | 4 |
    /// | anything else (a panic, `OTHER`) | 3, naming the plugin file |
    pub fn from_plugin(call: &'static str, component: &ResolvedComponent, e: PluginError) -> Self {
        let code = match e.kind {
            ErrorKind::CANCELLED => exit::INTERRUPTED,
            ErrorKind::AUTH => exit::REGISTRY,
            ErrorKind::UNAVAILABLE => exit::DAEMON,
            ErrorKind::BUILD_FAILED => exit::BUILD_FAILED,
            ErrorKind::INVALID_CONFIG | ErrorKind::INVALID_INPUT => exit::USAGE,
            ErrorKind::STORAGE => exit::STATE,
            _ => {
                return Error::Plugin {
                    plugin: component.flavor.plugin.path.clone(),
                    flavor: component.flavor.name().to_owned(),
                    call,
                    message: e.message.to_string(),
                }
            }
        };
        let message = e.message.to_string();
        if component.flavor.component_type() == ComponentType::CONTAINER_REGISTRY {
            Error::Registry {
                registry: component.label.clone(),
                message,
                code,
            }
        } else {
            Error::Build {
                builder: component.label.clone(),
                message,
                code,
            }
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the host library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
