//! The protocol: what crosses the frozen ABI ([`crate::abi`]) as JSON.
//!
//! Every type here is a plain serde type. Reading is tolerant in both
//! directions: unknown fields are ignored, a missing field takes its
//! default, and an enumeration value this crate does not know is kept as
//! "unknown" (or a stated fallback), never an error. So a plugin built
//! against an older or newer protocol of the same ABI talks to this host,
//! and behaviour that needs something newer asks [`ProtocolInfo::has`]
//! first.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::abi::PLUGIN_API_VERSION;

/// Which protocol a side speaks: its plugin-api release and the optional
/// protocol features it implements (nushell's `ProtocolInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ProtocolInfo {
    /// The plugin-api release (`0.2.0`).
    pub version: String,
    /// Optional parts of the protocol this side implements ([`feature`]).
    pub features: Vec<String>,
}

impl ProtocolInfo {
    /// The protocol this crate speaks, with every feature it implements.
    pub fn current() -> Self {
        Self {
            version: PLUGIN_API_VERSION.to_owned(),
            features: feature::ALL.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    /// Whether this side implements `feature`.
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// The part of the version that must match: `0.2` while `0.x`, else the major.
    pub fn compatibility(&self) -> String {
        compatibility(&self.version)
    }
}

/// `0.2.7` → `0.2`, `1.4.0` → `1`: the part of a version two sides must share.
pub fn compatibility(version: &str) -> String {
    let mut parts = version.trim().split('.');
    match (parts.next(), parts.next()) {
        (Some("0"), Some(minor)) => format!("0.{minor}"),
        (Some(major), _) => major.to_owned(),
        _ => version.to_owned(),
    }
}

/// Optional protocol features. A side lists the ones it implements in its
/// [`ProtocolInfo`]; the other side checks before relying on one, and
/// ignores names it does not know.
pub mod feature {
    /// The builder accepts the context hook's call
    /// ([`method::CUSTOMIZE_CONTEXT`](super::method::CUSTOMIZE_CONTEXT)).
    pub const CONTEXT_HOOK: &str = "context-hook";
    /// The host answers a builder's calls to the build's registry
    /// ([`method::host`](super::method::host)).
    pub const HOST_REGISTRY: &str = "host-registry";
    /// (0.2.1) The builder takes [`BuildRequest::secrets`](super::BuildRequest::secrets);
    /// the host sends secrets only to a builder that says so.
    pub const SECRETS: &str = "secrets";
    /// (0.2.2) The builder reads [`BuildRequest::platforms`](super::BuildRequest::platforms);
    /// the host asks for several platforms in one build only of a builder that says so.
    pub const MULTI_PLATFORM: &str = "multi-platform";
    /// (0.2.3) The builder reads [`BuildRequest::cache_from`](super::BuildRequest::cache_from)
    /// and [`BuildRequest::cache_to`](super::BuildRequest::cache_to); the host
    /// passes `--cache-from`/`--cache-to` only to a builder that says so.
    pub const REGISTRY_CACHE: &str = "registry-cache";
    /// (0.2.4) The builder reads [`OutputSpec::kind`](super::OutputSpec::kind)
    /// `local` (the image's filesystem written into the folder `dest`) and
    /// `tar` (that filesystem as a tar at `dest`), buildx's exporters; the
    /// host asks for them only of a builder that says so (one that cannot
    /// write them refuses).
    pub const FILESYSTEM_OUTPUT: &str = "filesystem-output";
    /// (0.2.4) The host draws [`Event`](super::Event)s of kind `progress`
    /// (`current` of `total` bytes, by their `message`) as progress bars;
    /// a plugin sends them only to a host that says so (an older one would
    /// print each as a line).
    pub const BYTE_PROGRESS: &str = "byte-progress";

    /// Every feature this release implements.
    pub const ALL: &[&str] = &[
        CONTEXT_HOOK,
        HOST_REGISTRY,
        SECRETS,
        MULTI_PLATFORM,
        REGISTRY_CACHE,
        FILESYSTEM_OUTPUT,
        BYTE_PROGRESS,
    ];
}

/// Who is speaking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PartyInfo {
    /// `kiln`, or the plugin's name (`kiln-docker`).
    pub name: String,
    /// Its own version (the plugin crate's, or kiln's).
    pub version: String,
}

/// The handshake each side sends once: who it is and what it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Hello {
    /// The plugin (or the host).
    #[serde(alias = "host")]
    pub plugin: PartyInfo,
    /// Its protocol.
    pub protocol: ProtocolInfo,
}

/// Method names. Inputs and answers are the types named with each.
pub mod method {
    /// Builder: [`BuildCall`](super::BuildCall) → [`BuildOutput`](super::BuildOutput).
    pub const BUILD: &str = "build";
    /// Registry: `{}` → the normalised URI (a JSON string).
    pub const URI: &str = "uri";
    /// Registry: [`ImageCall`](super::ImageCall) → whether the image belongs to it (bool).
    pub const OWNS_IMAGE: &str = "owns_image";
    /// Registry: [`ImageCall`](super::ImageCall) → `null`, before a push.
    pub const PREPARE_IMAGE_PUSH: &str = "prepare_image_push";
    /// Registry: [`ImageCall`](super::ImageCall) → the pushed digest (a JSON string).
    pub const PUSH_IMAGE: &str = "push_image";
    /// Registry: [`ExistsCall`](super::ExistsCall) → [`ImageExistence`](super::ImageExistence).
    pub const IMAGE_EXISTS: &str = "image_exists";
    /// Registry: `{}` → [`RegistryAuth`](super::RegistryAuth) or `null`.
    pub const AUTH: &str = "auth";
    /// Module level, for a builder flavor and its config:
    /// [`ContextCall`](super::ContextCall) → a list of [`ContextFile`](super::ContextFile).
    pub const CUSTOMIZE_CONTEXT: &str = "customize_context";

    /// Calls a builder makes back to the host: the registry methods above,
    /// answered by the build's registry, as `registry/<method>`.
    pub mod host {
        /// The prefix of a registry call through the host.
        pub const REGISTRY: &str = "registry/";
    }
}

/// Defines a newtype over a number with named values that crosses as its
/// name; a name this crate does not know reads as `$fallback`.
macro_rules! named_values {
    (
        $(#[$meta:meta])*
        $name:ident($repr:ty), fallback $fallback:ident {
            $( $(#[$vmeta:meta])* $value:ident = $n:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $repr);

        impl $name {
            $( $(#[$vmeta])* pub const $value: Self = Self($n); )*

            /// Its name on the wire and in messages.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$value => $text, )*
                    _ => "unknown",
                }
            }

            /// The value named `name`, or the fallback.
            pub fn parse(name: &str) -> Self {
                match name {
                    $( $text => Self::$value, )*
                    _ => Self::$fallback,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(|s| Self::parse(&s))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::$fallback
            }
        }
    };
}

named_values! {
    /// The kind of component a flavor provides.
    ComponentType(u8), fallback UNKNOWN {
        /// A type this crate does not know.
        UNKNOWN = 0 => "unknown",
        /// Builds container images (ZenML's `BaseImageBuilder`).
        IMAGE_BUILDER = 1 => "image-builder",
        /// Stores container images (ZenML's `BaseContainerRegistry`).
        CONTAINER_REGISTRY = 2 => "container-registry",
    }
}

impl ComponentType {
    /// The command-line name of a component type, when it is one.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(Self::parse(s)).filter(|t| *t != Self::UNKNOWN)
    }
}

named_values! {
    /// What kind of failure a [`PluginError`] reports. The host maps kinds
    /// to exit codes; an unknown kind reads as `other`.
    ErrorKind(u32), fallback OTHER {
        /// Anything not covered by a more precise kind.
        OTHER = 0 => "other",
        /// The plugin panicked; the panic was caught at the boundary.
        PANICKED = 1 => "panicked",
        /// The config was rejected by the plugin itself (after the host's schema check).
        INVALID_CONFIG = 2 => "invalid-config",
        /// The host asked for a flavor this plugin does not offer.
        UNKNOWN_FLAVOR = 3 => "unknown-flavor",
        /// A required service (Docker daemon, registry) could not be reached.
        UNAVAILABLE = 4 => "unavailable",
        /// Credentials were missing or refused.
        AUTH = 5 => "auth",
        /// The build ran and failed (a `RUN` step, a Dockerfile error).
        BUILD_FAILED = 6 => "build-failed",
        /// The operation was cancelled through the host's cancellation.
        CANCELLED = 7 => "cancelled",
        /// The input (image name, Dockerfile, request) was invalid.
        INVALID_INPUT = 8 => "invalid-input",
        /// The plugin does not implement this operation or method.
        UNSUPPORTED = 9 => "unsupported",
        /// (0.2.3) A local disk could not take what was written (no space
        /// left, quota exceeded): an output, a cache. Hosts before 0.2.3
        /// read it as `other`.
        STORAGE = 10 => "storage",
    }
}

named_values! {
    /// Severity of an [`Event`]; an unknown one reads as `info`.
    Level(u8), fallback INFO {
        /// Detail for `-v`.
        DEBUG = 1 => "debug",
        /// Normal progress and build output.
        INFO = 2 => "info",
        /// Something the user should know about.
        WARN = 3 => "warn",
        /// A failure being reported (the returned error still decides the outcome).
        ERROR = 4 => "error",
    }
}

named_values! {
    /// The answer of an existence check; an unknown answer reads as `unknown`.
    Existence(u8), fallback UNKNOWN {
        /// The image exists; [`ImageExistence::detail`] holds `uri@digest`.
        EXISTS = 1 => "exists",
        /// The image does not exist.
        ABSENT = 2 => "absent",
        /// The checker could not tell; [`ImageExistence::detail`] holds the reason.
        UNKNOWN = 3 => "unknown",
    }
}

/// Well-known capability names a flavor may declare in [`FlavorDescriptor::capabilities`].
pub mod capability {
    /// An image builder that builds on this machine (needs no artifact store).
    pub const BUILDS_LOCALLY: &str = "builds-locally";
    /// An image builder that builds elsewhere; the host uploads the context first.
    pub const BUILDS_REMOTELY: &str = "builds-remotely";
    /// An image builder that changes the build context through the context hook.
    pub const CUSTOMIZES_CONTEXT: &str = "customizes-context";
    /// A registry that can answer "does this image exist?".
    pub const CHECKS_EXISTENCE: &str = "checks-existence";
    /// A registry that images can be pushed to.
    pub const PUSHES: &str = "pushes";
    /// (0.2.3) An image builder whose `FROM` images come from the local
    /// Docker Engine's image store when it has them (the classic builder;
    /// the `oci` builder unless `--pull`): the host resolves bases there
    /// first to decide whether a skip is safe.
    pub const BASES_FROM_DOCKER_ENGINE: &str = "bases-from-docker-engine";
    /// (0.2.4) An image builder that takes buildx's named contexts
    /// ([`BuildRequest::build_contexts`](super::BuildRequest::build_contexts):
    /// `docker-image://REF` and `oci-layout://PATH` standing for an image
    /// the Dockerfile names). The host refuses `--build-context` for a
    /// builder without it, and gives one with it each base it resolved from
    /// a registry as `docker-image://REPO@DIGEST`, so that the image is
    /// built from exactly what its derived tag was computed from.
    pub const NAMED_CONTEXTS: &str = "named-contexts";
}

/// A capability, typed. On the wire capabilities are strings; one a newer
/// plugin declares and this crate does not know is kept as
/// [`Capability::Unknown`], never an error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
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

impl From<String> for Capability {
    fn from(s: String) -> Self {
        Self::parse(&s)
    }
}

impl From<Capability> for String {
    fn from(c: Capability) -> Self {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Static, construction-free description of one flavor.
///
/// Reading it never constructs an implementation, starts a runtime or
/// touches the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FlavorDescriptor {
    /// Image builder or container registry.
    pub component_type: ComponentType,
    /// Flavor name, unique per component type across all loaded plugins (`local`, `default`, `oci`).
    pub name: String,
    /// One line for listings.
    pub description: String,
    /// Where users read about configuring this flavor.
    pub docs_url: String,
    /// Where plugin authors read about the implementation.
    pub sdk_docs_url: String,
    /// A logo for UIs.
    pub logo_url: String,
    /// JSON Schema of the flavor's config.
    ///
    /// Fields with `"writeOnly": true` or `"x-kiln-secret": true` are secrets:
    /// the host masks them everywhere and accepts `${env:NAME}` references.
    pub config_schema: serde_json::Value,
    /// What the flavor does; see [`capability`].
    pub capabilities: Vec<Capability>,
}

impl FlavorDescriptor {
    /// Whether it declares `capability`.
    pub fn has(&self, capability: &Capability) -> bool {
        self.capabilities.contains(capability)
    }
}

/// The one error type that crosses the boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PluginError {
    /// What went wrong, coarsely.
    pub kind: ErrorKind,
    /// A message for users. Must not contain secrets.
    pub message: String,
    /// Structured details (`null` when none).
    pub details: serde_json::Value,
}

impl PluginError {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    /// An [`ErrorKind::OTHER`] error.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OTHER, message)
    }

    /// `ErrorKind::UNSUPPORTED` for a method or operation not provided.
    pub fn unsupported(what: &str) -> Self {
        Self::new(
            ErrorKind::UNSUPPORTED,
            format!("{what} is not supported by this plugin"),
        )
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

/// One log line or progress report a plugin sends to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Event {
    /// Severity.
    pub level: Level,
    /// `log`, `step` (a Dockerfile step started), `output` (build output),
    /// `progress`; a kind the host does not know is shown as a log line.
    pub kind: String,
    /// The text. Must not contain secrets.
    pub message: String,
    /// Progress done so far (0 when not a progress event).
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
            kind: kind.to_owned(),
            message: message.into(),
            current: 0,
            total: 0,
        }
    }
}

/// A file the host or a builder adds to the build context from memory.
/// Such files are never subject to the user's `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ContextFile {
    /// `/`-separated path relative to the context root.
    pub path: String,
    /// File contents (base64 on the wire).
    #[serde(with = "base64_bytes")]
    pub contents: Vec<u8>,
    /// Unix permission bits (`0o644` for ordinary files).
    pub mode: u32,
}

mod base64_bytes {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// `--output type=...,dest=...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct OutputSpec {
    /// `oci` or `docker` (an archive); (0.2.4, feature
    /// `filesystem-output`) `local` or `tar` (the image's filesystem).
    #[serde(rename = "type")]
    pub kind: String,
    /// The archive's path (a folder for `local`).
    pub dest: String,
}

/// What the user asked to build. Everything a `docker build` user would set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BuildRequest {
    /// Full image references to tag the result with (`registry/repo:tag`); at least one.
    pub tags: Vec<String>,
    /// Dockerfile path relative to the context root.
    pub dockerfile: String,
    /// `--build-arg` pairs, in the order given.
    pub build_args: Vec<(String, String)>,
    /// `--label` pairs.
    pub labels: Vec<(String, String)>,
    /// `--target` stage.
    pub target: Option<String>,
    /// `--platform` (`linux/amd64`), when one platform is asked for.
    pub platform: Option<String>,
    /// (0.2.2, feature `multi-platform`) When several platforms are asked
    /// for (`--platform linux/amd64,linux/arm64`): all of them, in order,
    /// and `platform` is `None`. The builder builds one image per platform
    /// and an OCI image index over them, and returns the index's digest; a
    /// builder that cannot, refuses. Empty otherwise.
    pub platforms: Vec<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// `--output`, when given.
    pub output: Option<OutputSpec>,
    /// `--build-context NAME=VALUE`, names lowercased.
    pub build_contexts: BTreeMap<String, String>,
    /// (0.2.1, feature `secrets`) `--secret`s, with their values: for
    /// `RUN --mount=type=secret`. Never log, store or cache them.
    pub secrets: Vec<BuildSecret>,
    /// (0.2.3, feature `registry-cache`) `--cache-from`: where earlier
    /// builds' layers and `RUN` results may be found.
    pub cache_from: Vec<CacheSpec>,
    /// (0.2.3, feature `registry-cache`) `--cache-to`: where this build's
    /// layers and `RUN` results are stored for other machines.
    pub cache_to: Vec<CacheSpec>,
}

/// One `--cache-from` or `--cache-to` (buildx's spelling:
/// `type=registry,ref=REF[,mode=max]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CacheSpec {
    /// `registry`, the one kind kiln has.
    #[serde(rename = "type")]
    pub kind: String,
    /// The image reference the cache is stored under (`host/repo:tag`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// `min` (the layers of the exported image) or `max` (every stage's),
    /// for `--cache-to`; empty means `min`.
    pub mode: String,
}

impl CacheSpec {
    /// [`Self::mode`], with its default: `min` or `max`.
    pub fn effective_mode(&self) -> &str {
        if self.mode.is_empty() {
            "min"
        } else {
            &self.mode
        }
    }
}

/// One `--secret`: its id and value. `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BuildSecret {
    /// The id `RUN --mount=type=secret,id=ID` names.
    pub id: String,
    /// The value (base64 on the wire).
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
}

impl fmt::Debug for BuildSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildSecret")
            .field("id", &self.id)
            .field("value", &"********")
            .finish()
    }
}

/// The build context the host made: a deterministic tar archive and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BuildContext {
    /// Local path of the archive.
    pub archive_path: String,
    /// Whether the archive is gzip-compressed.
    pub gzip: bool,
    /// SHA-1 of the archive bytes, lowercase hex.
    pub sha1: String,
    /// Archive size in bytes.
    pub size: u64,
    /// Where the archive was uploaded for builders that do not build locally.
    pub uploaded_uri: Option<String>,
}

/// What a successful build produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BuildOutput {
    /// The image reference that was built (and pushed, when a registry was given).
    pub image: String,
    /// The image digest (`sha256:...`): the registry's manifest digest after a
    /// push, else the local image ID.
    pub digest: Option<String>,
}

/// The input of [`method::BUILD`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct BuildCall {
    /// What to build.
    pub request: BuildRequest,
    /// From which context.
    pub context: BuildContext,
    /// Whether the host answers `registry/...` calls for this build: the
    /// builder pushes every tag through that registry.
    pub registry: bool,
}

/// The input of the registry methods that take one image reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ImageCall {
    /// A full reference with an explicit tag.
    pub image: String,
}

/// The input of [`method::IMAGE_EXISTS`] (Flyte's `ImageChecker`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ExistsCall {
    /// `registry/repo`.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// Every platform that must be present (`linux/amd64`); none means any.
    pub platforms: Vec<String>,
}

/// The input of [`method::CUSTOMIZE_CONTEXT`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ContextCall {
    /// The build the context is for.
    pub request: BuildRequest,
}

/// Result of [`method::IMAGE_EXISTS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ImageExistence {
    /// Exists, absent or unknown.
    pub state: Existence,
    /// `uri@digest` when it exists, the reason when unknown, empty when absent.
    pub detail: String,
}

/// Credentials a registry hands to a builder that pushes or pulls by itself.
/// Never printed; `Debug` masks the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RegistryAuth {
    /// Registry host (`127.0.0.1:5000`, `docker.io`).
    pub server: String,
    /// User name, empty for token auth.
    pub username: String,
    /// Password or identity token.
    pub secret: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_capabilities_round_trip_and_unknown_ones_are_kept() {
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
        let c: Vec<Capability> = serde_json::from_str(r#"["pushes","gpu-builds"]"#).expect("valid");
        assert_eq!(
            c,
            [Capability::Pushes, Capability::Unknown("gpu-builds".into())]
        );
        assert_eq!(
            serde_json::to_string(&c).expect("valid"),
            r#"["pushes","gpu-builds"]"#
        );
    }

    #[test]
    fn reading_tolerates_unknown_fields_missing_fields_and_unknown_values() {
        let e: Event = serde_json::from_str(
            r#"{"level":"loud","kind":"hologram","message":"hi","colour":"blue"}"#,
        )
        .expect("valid");
        assert_eq!(
            (e.level, e.kind.as_str(), e.total),
            (Level::INFO, "hologram", 0)
        );
        let err: PluginError =
            serde_json::from_str(r#"{"kind":"quota-exceeded","message":"m","retry_in":3}"#)
                .expect("valid");
        assert_eq!(err.kind, ErrorKind::OTHER);
        let out: BuildOutput = serde_json::from_str(r#"{"image":"a:1","sbom":{}}"#).expect("valid");
        assert_eq!(out.digest, None);
        let hello: Hello = serde_json::from_str(
            r#"{"plugin":{"name":"p","version":"1.2.3","vendor":"x"},
                "protocol":{"version":"0.2.9","features":["context-hook","frobnicate"]},
                "since":"2027"}"#,
        )
        .expect("valid");
        assert!(hello.protocol.has("frobnicate") && hello.protocol.has(feature::CONTEXT_HOOK));
        assert_eq!(hello.protocol.compatibility(), "0.2");
    }

    #[test]
    fn compatibility_is_the_minor_while_0x_and_the_major_after() {
        assert_eq!(compatibility("0.2.7"), "0.2");
        assert_eq!(compatibility("1.4.0"), "1");
        assert_ne!(compatibility("0.1.0"), compatibility("0.2.0"));
    }

    #[test]
    fn context_files_cross_as_base64_and_auth_debug_hides_the_secret() {
        let f = ContextFile {
            path: "a".into(),
            contents: vec![0, 159, 146, 150],
            mode: 0o644,
        };
        let text = serde_json::to_string(&f).expect("valid");
        assert!(text.contains("AJ+Slg=="), "{text}");
        assert_eq!(
            serde_json::from_str::<ContextFile>(&text).expect("valid"),
            f
        );
        let auth = RegistryAuth {
            server: "s".into(),
            username: "u".into(),
            secret: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
