//! Plain data that crosses the plugin boundary: flavor descriptors, errors,
//! events, and the inputs and outputs of builds, pushes and existence checks.
//!
//! Every type here is `#[repr(C)]` and `StableAbi`. Where a type may need more
//! fields later it carries an `extra_json` string, so it can grow without a new
//! layout; enumerations are newtypes over integers with associated constants,
//! so a newer host or plugin can add values an older one reports as unknown.

use std::fmt;

use abi_stable::{
    std_types::{ROption, RString, RVec, Tuple2},
    StableAbi,
};

/// The kind of component a flavor provides.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentType(pub u8);

impl ComponentType {
    /// Builds container images (ZenML's `BaseImageBuilder`).
    pub const IMAGE_BUILDER: Self = Self(1);
    /// Stores container images (ZenML's `BaseContainerRegistry`).
    pub const CONTAINER_REGISTRY: Self = Self(2);

    /// The name users type on the command line: `image-builder` or `container-registry`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IMAGE_BUILDER => "image-builder",
            Self::CONTAINER_REGISTRY => "container-registry",
            _ => "unknown",
        }
    }

    /// Parses the command-line name of a component type.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "image-builder" => Some(Self::IMAGE_BUILDER),
            "container-registry" => Some(Self::CONTAINER_REGISTRY),
            _ => None,
        }
    }
}

impl fmt::Display for ComponentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Well-known capability names a flavor may declare in [`FlavorDescriptor::capabilities`].
///
/// Capabilities are strings so that new ones need no ABI change; a host ignores
/// the ones it does not know.
pub mod capability {
    /// An image builder that builds on this machine (needs no artifact store).
    pub const BUILDS_LOCALLY: &str = "builds-locally";
    /// An image builder that builds elsewhere; the host uploads the context first.
    pub const BUILDS_REMOTELY: &str = "builds-remotely";
    /// An image builder that changes the build context through `customize_context`.
    pub const CUSTOMIZES_CONTEXT: &str = "customizes-context";
    /// A registry that can answer "does this image exist?".
    pub const CHECKS_EXISTENCE: &str = "checks-existence";
    /// A registry that images can be pushed to.
    pub const PUSHES: &str = "pushes";
}

/// A capability, typed. On the wire capabilities are strings; one a newer
/// plugin declares and this crate does not know is kept as
/// [`Capability::Unknown`], never an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// [`capability::BUILDS_LOCALLY`].
    BuildsLocally,
    /// [`capability::BUILDS_REMOTELY`].
    BuildsRemotely,
    /// [`capability::CUSTOMIZES_CONTEXT`].
    CustomizesContext,
    /// [`capability::CHECKS_EXISTENCE`].
    ChecksExistence,
    /// [`capability::PUSHES`].
    Pushes,
    /// A capability this crate does not know, as declared.
    Unknown(String),
}

impl Capability {
    /// The capability named `name`.
    pub fn parse(name: &str) -> Self {
        match name {
            capability::BUILDS_LOCALLY => Self::BuildsLocally,
            capability::BUILDS_REMOTELY => Self::BuildsRemotely,
            capability::CUSTOMIZES_CONTEXT => Self::CustomizesContext,
            capability::CHECKS_EXISTENCE => Self::ChecksExistence,
            capability::PUSHES => Self::Pushes,
            other => Self::Unknown(other.to_string()),
        }
    }

    /// Its name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BuildsLocally => capability::BUILDS_LOCALLY,
            Self::BuildsRemotely => capability::BUILDS_REMOTELY,
            Self::CustomizesContext => capability::CUSTOMIZES_CONTEXT,
            Self::ChecksExistence => capability::CHECKS_EXISTENCE,
            Self::Pushes => capability::PUSHES,
            Self::Unknown(name) => name,
        }
    }
}

/// Static, construction-free description of one flavor.
///
/// Produced by a plugin's `describe` function; reading it never constructs an
/// implementation, starts a runtime or touches the network.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct FlavorDescriptor {
    /// Image builder or container registry.
    pub component_type: ComponentType,
    /// Flavor name, unique per component type across all loaded plugins (`local`, `default`, `oci`).
    pub name: RString,
    /// One line for listings.
    pub description: RString,
    /// Where users read about configuring this flavor.
    pub docs_url: RString,
    /// Where plugin authors read about the implementation.
    pub sdk_docs_url: RString,
    /// A logo for UIs.
    pub logo_url: RString,
    /// JSON Schema of the flavor's config, as a JSON document.
    ///
    /// Fields with `"writeOnly": true` or `"x-kiln-secret": true` are secrets:
    /// the host masks them everywhere and accepts `${env:NAME}` references.
    pub config_schema_json: RString,
    /// Capability names; see [`capability`].
    pub capabilities: RVec<RString>,
    /// A JSON object for fields added after this layout; `{}` when empty.
    pub extra_json: RString,
}

impl FlavorDescriptor {
    /// The declared capabilities, typed (unknown ones kept as such).
    pub fn capability_set(&self) -> Vec<Capability> {
        self.capabilities
            .iter()
            .map(|c| Capability::parse(c.as_str()))
            .collect()
    }

    /// Whether it declares `capability`.
    pub fn has(&self, capability: &Capability) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.as_str() == capability.as_str())
    }
}

#[cfg(test)]
mod capability_tests {
    use super::*;

    #[test]
    fn known_names_round_trip_and_unknown_ones_are_kept() {
        for name in [
            capability::BUILDS_LOCALLY,
            capability::BUILDS_REMOTELY,
            capability::CUSTOMIZES_CONTEXT,
            capability::CHECKS_EXISTENCE,
            capability::PUSHES,
        ] {
            let c = Capability::parse(name);
            assert!(!matches!(c, Capability::Unknown(_)), "{name}");
            assert_eq!(c.as_str(), name);
        }
        assert_eq!(
            Capability::parse("gpu-builds"),
            Capability::Unknown("gpu-builds".into())
        );
        assert_eq!(Capability::parse("gpu-builds").as_str(), "gpu-builds");
    }
}

/// What kind of failure a [`PluginError`] reports. The host maps kinds to exit codes.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(pub u32);

impl ErrorKind {
    /// Anything not covered by a more precise kind.
    pub const OTHER: Self = Self(0);
    /// The plugin panicked; the panic was caught at the boundary.
    pub const PANICKED: Self = Self(1);
    /// The config was rejected by the plugin itself (after the host's schema check).
    pub const INVALID_CONFIG: Self = Self(2);
    /// The host asked for a flavor this plugin does not offer.
    pub const UNKNOWN_FLAVOR: Self = Self(3);
    /// A required service (Docker daemon, registry) could not be reached.
    pub const UNAVAILABLE: Self = Self(4);
    /// Credentials were missing or refused.
    pub const AUTH: Self = Self(5);
    /// The build ran and failed (a `RUN` step, a Dockerfile error).
    pub const BUILD_FAILED: Self = Self(6);
    /// The operation was cancelled through the host's cancellation token.
    pub const CANCELLED: Self = Self(7);
    /// The input (image name, Dockerfile, request) was invalid.
    pub const INVALID_INPUT: Self = Self(8);
    /// The plugin does not implement this operation.
    pub const UNSUPPORTED: Self = Self(9);

    /// A short lowercase name for messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OTHER => "other",
            Self::PANICKED => "panicked",
            Self::INVALID_CONFIG => "invalid-config",
            Self::UNKNOWN_FLAVOR => "unknown-flavor",
            Self::UNAVAILABLE => "unavailable",
            Self::AUTH => "auth",
            Self::BUILD_FAILED => "build-failed",
            Self::CANCELLED => "cancelled",
            Self::INVALID_INPUT => "invalid-input",
            Self::UNSUPPORTED => "unsupported",
            _ => "unknown",
        }
    }
}

/// The one error type that crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PluginError {
    /// What went wrong, coarsely.
    pub kind: ErrorKind,
    /// A message for users. Must not contain secrets.
    pub message: RString,
    /// A JSON object with structured details (`{}` when none).
    pub details_json: RString,
}

impl PluginError {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
            details_json: RString::from("{}"),
        }
    }

    /// An [`ErrorKind::OTHER`] error.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OTHER, message)
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

/// Severity of an [`Event`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(pub u8);

impl Level {
    /// Detail for `-v`.
    pub const DEBUG: Self = Self(1);
    /// Normal progress and build output.
    pub const INFO: Self = Self(2);
    /// Something the user should know about.
    pub const WARN: Self = Self(3);
    /// A failure being reported (the returned error still decides the outcome).
    pub const ERROR: Self = Self(4);
}

/// One log line or progress report sent to the host's [`EventSink`](crate::EventSink).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Event {
    /// Severity.
    pub level: Level,
    /// `log`, `step` (a Dockerfile step started), `output` (build output), `progress`.
    pub kind: RString,
    /// The text. Must not contain secrets.
    pub message: RString,
    /// Progress done so far, in `unit`s (0 when not a progress event).
    pub current: u64,
    /// Progress total (0 when unknown).
    pub total: u64,
}

impl Event {
    /// A log event.
    pub fn log(level: Level, message: impl Into<String>) -> Self {
        Self::new(level, "log", message)
    }

    /// An event of any kind, without progress figures.
    pub fn new(level: Level, kind: &str, message: impl Into<String>) -> Self {
        Self {
            level,
            kind: RString::from(kind),
            message: RString::from(message.into()),
            current: 0,
            total: 0,
        }
    }
}

/// A file the host or a builder adds to the build context from memory.
///
/// Such files are never subject to the user's `.dockerignore`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ContextFile {
    /// `/`-separated path relative to the context root.
    pub path: RString,
    /// File contents.
    pub contents: RVec<u8>,
    /// Unix permission bits (`0o644` for ordinary files).
    pub mode: u32,
}

/// What the user asked to build. Everything a `docker build` user would set.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct BuildRequest {
    /// Full image references to tag the result with (`registry/repo:tag`); at least one.
    pub tags: RVec<RString>,
    /// Dockerfile path relative to the context root.
    pub dockerfile: RString,
    /// `--build-arg` pairs, in the order given.
    pub build_args: RVec<Tuple2<RString, RString>>,
    /// `--label` pairs.
    pub labels: RVec<Tuple2<RString, RString>>,
    /// `--target` stage.
    pub target: ROption<RString>,
    /// `--platform` (`linux/amd64`).
    pub platform: ROption<RString>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// A JSON object with options added after this layout; `{}` when empty.
    pub extra_json: RString,
}

/// The build context the host made: a deterministic tar archive and its hash.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct BuildContext {
    /// Local path of the archive.
    pub archive_path: RString,
    /// Whether the archive is gzip-compressed.
    pub gzip: bool,
    /// SHA-1 of the archive bytes, lowercase hex.
    pub sha1: RString,
    /// Archive size in bytes.
    pub size: u64,
    /// Where the archive was uploaded for builders that do not build locally.
    pub uploaded_uri: ROption<RString>,
}

/// What a successful build produced.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct BuildOutput {
    /// The image reference that was built (and pushed, when a registry was given).
    pub image: RString,
    /// The image digest (`sha256:...`): the registry's manifest digest after a
    /// push, else the local image ID.
    pub digest: ROption<RString>,
}

/// The answer of an existence check.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existence(pub u8);

impl Existence {
    /// The image exists; `ImageExistence::detail` holds `uri@digest`.
    pub const EXISTS: Self = Self(1);
    /// The image does not exist.
    pub const ABSENT: Self = Self(2);
    /// The checker could not tell; `ImageExistence::detail` holds the reason.
    pub const UNKNOWN: Self = Self(3);
}

/// Result of `ContainerRegistry::image_exists` (Flyte's `ImageChecker`).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ImageExistence {
    /// Exists, absent or unknown.
    pub state: Existence,
    /// `uri@digest` when it exists, the reason when unknown, empty when absent.
    pub detail: RString,
}

/// Credentials a registry hands to a builder that pushes or pulls by itself.
///
/// The host never prints this; plugins must not log it.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq)]
pub struct RegistryAuth {
    /// Registry host (`127.0.0.1:5000`, `docker.io`).
    pub server: RString,
    /// User name, empty for token auth.
    pub username: RString,
    /// Password or identity token.
    pub secret: RString,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("secret", &"********")
            .finish()
    }
}
