//! The host's side of the protocol, typed: the handshake, listing,
//! construction and every call, encoded and decoded in one place. kiln uses
//! it, and so does the [`testing`](crate::testing) harness, so a plugin's
//! tests take the same path as a real build.

use std::sync::Arc;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RResult, RStr, RString},
};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    abi::{ComponentBox, Host, HostBox, Host_TO, PluginModuleRef, PLUGIN_API_VERSION},
    protocol::{
        compatibility, feature, method, BuildCall, BuildContext, BuildOutput, BuildRequest,
        ComponentType, ContextCall, ContextFile, ErrorKind, Event, ExistsCall, FlavorDescriptor,
        Hello, ImageCall, ImageExistence, Level, PartyInfo, PluginError, ProtocolInfo,
        RegistryAuth,
    },
};

/// Where a plugin's events go and whether the user asked it to stop.
pub trait Observer: Send + Sync + 'static {
    /// One event from the plugin.
    fn event(&self, event: Event);
    /// Whether the user pressed Ctrl-C.
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// An observer that drops events and never cancels, for quick calls
/// (`uri`, `auth`, existence checks).
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event) {}
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The answer is not a [`Hello`].
    Unreadable(String),
    /// The plugin speaks a protocol of another major (minor, while `0.x`).
    Incompatible {
        /// The plugin's protocol version.
        plugin: String,
    },
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(e) => write!(f, "its handshake is not a kiln plugin hello ({e})"),
            Self::Incompatible { plugin } => f.write_str(&incompatible_message(plugin)),
        }
    }
}

/// The one message for a plugin built against another plugin-api
/// (`version`): both versions and what to do.
pub fn incompatible_message(version: &str) -> String {
    let ours = compatibility(PLUGIN_API_VERSION);
    let older = version_key(version) < version_key(PLUGIN_API_VERSION);
    let what = if older {
        format!("rebuild the plugin against plugin-api {ours}.x")
    } else {
        format!(
            "use a kiln that speaks plugin-api {}.x, or a build of the plugin for plugin-api {ours}.x",
            compatibility(version)
        )
    };
    format!(
        "built against plugin-api {version}, which this kiln (plugin-api {PLUGIN_API_VERSION}) cannot load: {what}"
    )
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// A plugin library after the handshake.
#[derive(Clone)]
pub struct Plugin {
    module: PluginModuleRef,
    hello: Hello,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("hello", &self.hello)
            .finish()
    }
}

impl Plugin {
    /// Exchange hellos with a loaded root module. `host` names the host
    /// (`kiln` and its version).
    pub fn handshake(module: PluginModuleRef, host: PartyInfo) -> Result<Self, HandshakeError> {
        let ours = Hello {
            plugin: host,
            protocol: ProtocolInfo::current(),
        };
        let answer = module.hello()(RStr::from_str(&encode(&ours)));
        let hello: Hello = serde_json::from_str(answer.as_str())
            .map_err(|e| HandshakeError::Unreadable(e.to_string()))?;
        if hello.protocol.compatibility() != compatibility(PLUGIN_API_VERSION) {
            return Err(HandshakeError::Incompatible {
                plugin: hello.protocol.version,
            });
        }
        Ok(Self { module, hello })
    }

    /// What the plugin said about itself.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Its flavors. Constructs nothing.
    pub fn describe(&self) -> Result<Vec<FlavorDescriptor>, PluginError> {
        decode("describe", self.module.describe()())
    }

    /// Construct the image builder of `flavor` from resolved config JSON.
    pub fn construct_builder(
        &self,
        flavor: &str,
        config_json: &str,
    ) -> Result<BuilderHandle, PluginError> {
        self.construct(ComponentType::IMAGE_BUILDER, flavor, config_json)
            .map(BuilderHandle)
    }

    /// Construct the container registry of `flavor` from resolved config JSON.
    pub fn construct_registry(
        &self,
        flavor: &str,
        config_json: &str,
    ) -> Result<RegistryHandle, PluginError> {
        self.construct(ComponentType::CONTAINER_REGISTRY, flavor, config_json)
            .map(RegistryHandle)
    }

    fn construct(
        &self,
        component_type: ComponentType,
        flavor: &str,
        config_json: &str,
    ) -> Result<ComponentBox, PluginError> {
        match self.module.construct()(
            component_type.as_str().into(),
            flavor.into(),
            config_json.into(),
        ) {
            RResult::ROk(c) => Ok(c),
            RResult::RErr(e) => Err(decode_error(&e)),
        }
    }

    /// Whether the plugin answers the context hook.
    pub fn has_context_hook(&self) -> bool {
        self.hello.protocol.has(feature::CONTEXT_HOOK)
    }

    /// The builder flavor's context hook: files to add to or replace in the
    /// context. A plugin without the hook adds none.
    pub fn customize_context(
        &self,
        flavor: &str,
        config_json: &str,
        request: &BuildRequest,
        observer: Arc<dyn Observer>,
    ) -> Result<Vec<ContextFile>, PluginError> {
        if !self.has_context_hook() {
            return Ok(Vec::new());
        }
        let input = encode(&ContextCall {
            request: request.clone(),
        });
        decode(
            method::CUSTOMIZE_CONTEXT,
            self.module.call()(
                method::CUSTOMIZE_CONTEXT.into(),
                flavor.into(),
                config_json.into(),
                input.as_str().into(),
                host(observer, None),
            ),
        )
    }
}

/// A constructed image builder.
pub struct BuilderHandle(ComponentBox);

impl BuilderHandle {
    /// Wrap a component constructed in-process (the testing harness).
    pub fn from_component(component: ComponentBox) -> Self {
        Self(component)
    }

    /// Build `request` from `context`; with `registry`, push every tag
    /// through it. Events go to `observer`, which also says when to stop.
    pub fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: Option<Arc<RegistryHandle>>,
        observer: Arc<dyn Observer>,
    ) -> Result<BuildOutput, PluginError> {
        let input = BuildCall {
            request: request.clone(),
            context: context.clone(),
            registry: registry.is_some(),
        };
        call(&self.0, method::BUILD, &input, host(observer, registry))
    }
}

/// The registry methods, typed, in one place, over whatever carries a
/// call: a constructed registry on kiln's side ([`RegistryHandle`],
/// [`Observed`]), the host on a builder's side (`author::HostRegistry`).
pub trait RegistryCalls {
    /// Carry `method` with its JSON input; the JSON answer, or a JSON
    /// [`PluginError`].
    fn send(&self, method: &str, input_json: &str) -> RResult<RString, RString>;

    /// The normalised registry URI (`host[:port][/namespace]`).
    fn uri(&self) -> Result<String, PluginError> {
        ask(self, method::URI, &serde_json::json!({}))
    }

    /// Whether `image` belongs to this registry by Docker's reference grammar.
    fn owns_image(&self, image: &str) -> Result<bool, PluginError> {
        ask(self, method::OWNS_IMAGE, &image_call(image))
    }

    /// Called before a push (ZenML's `prepare_image_push`).
    fn prepare_image_push(&self, image: &str) -> Result<(), PluginError> {
        ask::<serde_json::Value, _>(self, method::PREPARE_IMAGE_PUSH, &image_call(image)).map(drop)
    }

    /// Push `image` (with an explicit tag); its digest.
    fn push_image(&self, image: &str) -> Result<String, PluginError> {
        ask(self, method::PUSH_IMAGE, &image_call(image))
    }

    /// Whether `repository:tag` exists, for each of `platforms` when given.
    fn image_exists(
        &self,
        repository: &str,
        tag: &str,
        platforms: &[String],
    ) -> Result<ImageExistence, PluginError> {
        let input = ExistsCall {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            platforms: platforms.to_vec(),
        };
        ask(self, method::IMAGE_EXISTS, &input)
    }

    /// Credentials for a builder that talks to this registry by itself.
    fn auth(&self) -> Result<Option<RegistryAuth>, PluginError> {
        ask(self, method::AUTH, &serde_json::json!({}))
    }
}

fn ask<O: DeserializeOwned, C: RegistryCalls + ?Sized>(
    calls: &C,
    m: &str,
    input: &impl Serialize,
) -> Result<O, PluginError> {
    decode(m, calls.send(m, &encode(input)))
}

/// A constructed container registry. Its calls send no events anywhere;
/// [`RegistryHandle::observed`] sends them to an observer.
pub struct RegistryHandle(ComponentBox);

impl RegistryHandle {
    /// Wrap a component constructed in-process (the testing harness).
    pub fn from_component(component: ComponentBox) -> Self {
        Self(component)
    }

    /// The same registry, with events (a push's progress) going to
    /// `observer`, which also says when to stop.
    pub fn observed(&self, observer: Arc<dyn Observer>) -> Observed<'_> {
        Observed {
            handle: self,
            observer,
        }
    }
}

impl RegistryCalls for RegistryHandle {
    fn send(&self, m: &str, input_json: &str) -> RResult<RString, RString> {
        self.0
            .call(m.into(), input_json.into(), host(Arc::new(Quiet), None))
    }
}

/// A registry whose events go to an observer.
pub struct Observed<'a> {
    handle: &'a RegistryHandle,
    observer: Arc<dyn Observer>,
}

impl RegistryCalls for Observed<'_> {
    fn send(&self, m: &str, input_json: &str) -> RResult<RString, RString> {
        self.handle.0.call(
            m.into(),
            input_json.into(),
            host(self.observer.clone(), None),
        )
    }
}

fn image_call(image: &str) -> ImageCall {
    ImageCall {
        image: image.to_owned(),
    }
}

fn call<O: DeserializeOwned>(
    component: &ComponentBox,
    m: &str,
    input: &impl Serialize,
    host: HostBox,
) -> Result<O, PluginError> {
    let input = encode(input);
    decode(m, component.call(m.into(), input.as_str().into(), host))
}

/// Serialise a protocol value. The protocol's types always serialise.
pub(crate) fn encode(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| unreachable!("protocol values serialise to JSON: {e}"))
}

fn decode<O: DeserializeOwned>(
    m: &str,
    answer: RResult<RString, RString>,
) -> Result<O, PluginError> {
    match answer {
        RResult::ROk(json) => serde_json::from_str(json.as_str()).map_err(|e| {
            PluginError::other(format!(
                "the plugin's answer to {m} does not follow the protocol: {e}"
            ))
        }),
        RResult::RErr(e) => Err(decode_error(&e)),
    }
}

/// A plugin's error, from its JSON; anything else is reported as unreadable
/// (not quoted: it could hold anything).
pub fn decode_error(json: &str) -> PluginError {
    serde_json::from_str(json).unwrap_or_else(|_| {
        PluginError::other(format!(
            "the plugin failed with an error that does not follow the protocol ({} bytes)",
            json.len()
        ))
    })
}

/// What the host hands a plugin during one call.
#[derive(Clone)]
struct HostSide {
    observer: Arc<dyn Observer>,
    registry: Option<Arc<RegistryHandle>>,
}

fn host(observer: Arc<dyn Observer>, registry: Option<Arc<RegistryHandle>>) -> HostBox {
    Host_TO::from_ptr(RArc::new(HostSide { observer, registry }), TD_Opaque)
}

impl Host for HostSide {
    fn emit(&self, event_json: RStr<'_>) {
        let event = serde_json::from_str(event_json.as_str()).unwrap_or_else(|_| {
            Event::log(
                Level::DEBUG,
                format!(
                    "(an event that does not follow the protocol, {} bytes)",
                    event_json.len()
                ),
            )
        });
        self.observer.event(event);
    }

    fn is_cancelled(&self) -> bool {
        self.observer.is_cancelled()
    }

    fn call(&self, m: RStr<'_>, input_json: RStr<'_>) -> RResult<RString, RString> {
        let registry_method = m.as_str().strip_prefix(method::host::REGISTRY);
        match (registry_method, &self.registry) {
            (Some(inner), Some(registry)) => {
                registry
                    .0
                    .call(inner.into(), input_json, host(self.observer.clone(), None))
            }
            (Some(_), None) => RResult::RErr(
                encode(&PluginError::new(
                    ErrorKind::INVALID_INPUT,
                    "this build has no registry to call",
                ))
                .into(),
            ),
            (None, _) => RResult::RErr(
                encode(&PluginError::new(
                    ErrorKind::UNSUPPORTED,
                    format!("this kiln offers no host method {m}"),
                ))
                .into(),
            ),
        }
    }
}
