//! The plugin-author layer (feature `author`): write a config struct, an
//! implementation type and one [`export_plugin!`](crate::export_plugin) call.
//!
//! Everything here runs inside the plugin. It turns the protocol's JSON
//! calls into calls of the [`Builder`] and [`Registry`] traits, and every
//! call from the host goes through one guard, so a panic becomes a
//! [`PluginError`] of kind [`ErrorKind::PANICKED`] instead of unwinding across
//! the boundary (which would abort the process).

use std::{
    any::Any,
    borrow::Cow,
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::OnceLock,
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RStr, RString},
};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};

pub use crate::client::RegistryCalls;

use crate::{
    abi::{Component, ComponentBox, Component_TO, HostBox, PluginModule, PluginModuleRef},
    client::encode,
    protocol::{
        method, BuildCall, BuildContext, BuildOutput, BuildRequest, Capability, ComponentType,
        ContextCall, ContextFile, ErrorKind, Event, ExistsCall, FlavorDescriptor, Hello, ImageCall,
        ImageExistence, Level, PartyInfo, PluginError, ProtocolInfo, RegistryAuth,
    },
};

/// Static facts about a flavor, shared by builder and registry flavors.
pub trait Flavor: 'static {
    /// The user's settings. Its JSON Schema (from `schemars`) is what the host
    /// validates against; add `#[serde(deny_unknown_fields)]`.
    type Config: DeserializeOwned + JsonSchema;
    /// Flavor name (`local`, `default`, `oci`).
    const NAME: &'static str;
    /// One line for listings.
    const DESCRIPTION: &'static str;
    /// User documentation.
    const DOCS_URL: &'static str = "";
    /// Implementation documentation.
    const SDK_DOCS_URL: &'static str = "";
    /// Logo for UIs.
    const LOGO_URL: &'static str = "";
    /// Capability names from [`crate::capability`].
    const CAPABILITIES: &'static [&'static str] = &[];
}

/// A flavor of type `image-builder`.
pub trait BuilderFlavor: Flavor {
    /// The implementation, constructed only when a build runs.
    type Builder: Builder;
    /// Construct the builder from its validated config.
    fn construct(config: Self::Config) -> Result<Self::Builder, PluginError>;
    /// Files to add to or replace in the build context (ZenML's
    /// `build_context_class`). Called without constructing the builder;
    /// declare [`crate::capability::CUSTOMIZES_CONTEXT`] when it adds any.
    fn customize_context(
        _config: &Self::Config,
        _request: &BuildRequest,
    ) -> Result<Vec<ContextFile>, PluginError> {
        Ok(Vec::new())
    }
}

/// A flavor of type `container-registry`.
pub trait RegistryFlavor: Flavor {
    /// The implementation, constructed only when a build or push runs.
    type Registry: Registry;
    /// Construct the registry from its validated config.
    fn construct(config: Self::Config) -> Result<Self::Registry, PluginError>;
}

/// The image builder a plugin author implements.
pub trait Builder: Send + Sync + 'static {
    /// Build the image described by `request` from `context`.
    ///
    /// When `registry` is given the builder pushes every tag through it and
    /// returns the pushed digest. Logs go to `events`; `cancel` is polled.
    fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: Option<&HostRegistry>,
        events: &Events,
        cancel: &Cancel,
    ) -> Result<BuildOutput, PluginError>;
}

/// The container registry a plugin author implements (ZenML's
/// `BaseContainerRegistry`, Flyte's `ImageChecker`).
pub trait Registry: Send + Sync + 'static {
    /// The normalised registry URI (`host[:port][/namespace]`).
    fn uri(&self) -> String;
    /// Whether `image` belongs to this registry by Docker's reference grammar.
    /// An invalid reference is an error.
    fn owns_image(&self, image: &str) -> Result<bool, PluginError>;
    /// Called before a push (ZenML's `prepare_image_push`): create repositories, log in.
    fn prepare_image_push(&self, _image: &str) -> Result<(), PluginError> {
        Ok(())
    }
    /// Push `image` (with an explicit tag) and return its digest.
    fn push_image(
        &self,
        image: &str,
        events: &Events,
        cancel: &Cancel,
    ) -> Result<String, PluginError>;
    /// Whether `repository:tag` exists, for each of `platforms` when given.
    fn image_exists(
        &self,
        repository: &str,
        tag: &str,
        platforms: &[String],
    ) -> Result<ImageExistence, PluginError>;
    /// Credentials for a builder that talks to this registry by itself.
    fn auth(&self) -> Result<Option<RegistryAuth>, PluginError> {
        Ok(None)
    }
}

/// Where a plugin sends logs and progress: the host, for this call.
#[derive(Clone)]
pub struct Events(HostBox);

impl Events {
    /// Send any event.
    pub fn emit(&self, event: Event) {
        self.0.emit(encode(&event).as_str().into());
    }
    /// A debug log line.
    pub fn debug(&self, message: impl Into<String>) {
        self.emit(Event::log(Level::DEBUG, message));
    }
    /// An info log line.
    pub fn info(&self, message: impl Into<String>) {
        self.emit(Event::log(Level::INFO, message));
    }
    /// A warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::log(Level::WARN, message));
    }
    /// A line of build output (what `docker build` prints).
    pub fn output(&self, line: impl Into<String>) {
        self.emit(Event::new(Level::INFO, "output", line));
    }
    /// A build step started (`Step 2/5 : RUN ...`).
    pub fn step(&self, step: impl Into<String>) {
        self.emit(Event::new(Level::INFO, "step", step));
    }
    /// Progress of a transfer (`label`, such as `pulling 3f4e…`): `current`
    /// of `total` bytes (`total` 0 when unknown). Sent only to a host that
    /// draws them (feature `byte-progress`); send a few a second at most,
    /// and the last with `current == total`.
    pub fn progress(&self, label: impl Into<String>, current: u64, total: u64) {
        let draws =
            host_hello().is_some_and(|h| h.protocol.has(crate::protocol::feature::BYTE_PROGRESS));
        if draws {
            let mut event = Event::new(Level::INFO, "progress", label);
            event.current = current;
            event.total = total;
            self.emit(event);
        }
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Events")
    }
}

/// Tells a long-running call that the user pressed Ctrl-C.
#[derive(Clone)]
pub struct Cancel(HostBox);

impl Cancel {
    /// Whether the operation should stop as soon as it can.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

impl fmt::Debug for Cancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cancel")
    }
}

/// The build's registry, reached through the host (it may live in another
/// plugin). The same operations as [`Registry`], through [`RegistryCalls`].
#[derive(Clone)]
pub struct HostRegistry(HostBox);

impl RegistryCalls for HostRegistry {
    fn send(&self, m: &str, input_json: &str) -> RResult<RString, RString> {
        let name = format!("{}{m}", method::host::REGISTRY);
        self.0.call(name.as_str().into(), input_json.into())
    }
}

impl fmt::Debug for HostRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HostRegistry")
    }
}

/// A secret config value: a password or token. Its schema is a string with
/// `"writeOnly": true`, so the host masks it in every output and accepts an
/// `${env:NAME}` reference, resolved only when the component is constructed.
/// `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "writeOnly": true,
            "description": "A secret: a literal value or an ${env:NAME} reference."
        })
    }
}

/// Run `f`, turning a panic into a [`PluginError`] of kind `PANICKED`.
///
/// `what` names the call for the message (`describe`, `build`).
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    quiet_panics();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(PluginError::new(
            ErrorKind::PANICKED,
            format!("plugin panicked in {what}: {}", panic_message(&*payload)),
        )),
    }
}

/// [`guard`], with the answer encoded for the boundary.
pub fn guard_json<T: Serialize>(
    what: &str,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> RResult<RString, RString> {
    match guard(what, f) {
        Ok(v) => RResult::ROk(encode(&v).into()),
        Err(e) => RResult::RErr(encode(&e).into()),
    }
}

/// The default hook would print every caught panic (with a backtrace when
/// `RUST_BACKTRACE` is set) on the host's stderr, although the message is
/// already reported through the returned error. A cdylib has its own copy of
/// std, so this replaces only the plugin's hook. `KILN_PLUGIN_PANICS=1` keeps
/// the default, for plugin authors.
#[allow(clippy::disallowed_methods)] // the one home of KILN_PLUGIN_PANICS
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("KILN_PLUGIN_PANICS").is_none() {
            std::panic::set_hook(Box::new(|_| {}));
        }
    });
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

static HOST_HELLO: OnceLock<Hello> = OnceLock::new();

/// What the host said in the handshake (its version and protocol
/// features), once it has: check a feature here before relying on it.
pub fn host_hello() -> Option<&'static Hello> {
    HOST_HELLO.get()
}

/// The handshake. Used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn __hello(host_json: RStr<'_>, name: &str, version: &str) -> RString {
    if let Ok(hello) = serde_json::from_str::<Hello>(host_json.as_str()) {
        let _ = HOST_HELLO.set(hello);
    }
    encode(&Hello {
        plugin: PartyInfo {
            name: name.to_owned(),
            version: version.to_owned(),
        },
        protocol: ProtocolInfo::current(),
    })
    .into()
}

fn descriptor<F: Flavor>(component_type: ComponentType) -> FlavorDescriptor {
    FlavorDescriptor {
        component_type,
        name: F::NAME.into(),
        description: F::DESCRIPTION.into(),
        docs_url: F::DOCS_URL.into(),
        sdk_docs_url: F::SDK_DOCS_URL.into(),
        logo_url: F::LOGO_URL.into(),
        config_schema: to_value(&schemars::schema_for!(F::Config)),
        capabilities: F::CAPABILITIES
            .iter()
            .map(|c| Capability::parse(c))
            .collect(),
    }
}

/// The descriptor of an image-builder flavor.
pub fn builder_descriptor<F: BuilderFlavor>() -> FlavorDescriptor {
    descriptor::<F>(ComponentType::IMAGE_BUILDER)
}

/// The descriptor of a container-registry flavor.
pub fn registry_descriptor<F: RegistryFlavor>() -> FlavorDescriptor {
    descriptor::<F>(ComponentType::CONTAINER_REGISTRY)
}

fn parse_config<F: Flavor>(config_json: &str) -> Result<F::Config, PluginError> {
    let mut input = serde_json::Deserializer::from_str(config_json);
    serde_path_to_error::deserialize(&mut input).map_err(|e| {
        // serde's message can quote the offending value, which may be a
        // secret: the field is named, the value never.
        let field = e.path().to_string();
        let e = e.into_inner();
        let at = match field.as_str() {
            "." | "" => String::new(),
            f => format!(" at {f}"),
        };
        PluginError::new(
            ErrorKind::INVALID_CONFIG,
            format!(
                "config of flavor {}{at} does not fit its type: {} (line {}, column {})",
                F::NAME,
                match e.classify() {
                    serde_json::error::Category::Data => "a value of another type",
                    serde_json::error::Category::Syntax => "not JSON",
                    serde_json::error::Category::Eof => "JSON cut short",
                    serde_json::error::Category::Io => "unreadable",
                },
                e.line(),
                e.column()
            ),
        )
    })
}

fn decode_input<T: DeserializeOwned>(m: &str, input: &str) -> Result<T, PluginError> {
    serde_json::from_str(input).map_err(|e| {
        PluginError::new(
            ErrorKind::INVALID_INPUT,
            format!("the host's {m} call does not follow the protocol: {e}"),
        )
    })
}

/// Deserialize the config and construct a builder.
pub fn construct_builder<F: BuilderFlavor>(config_json: &str) -> Result<ComponentBox, PluginError> {
    let builder = F::construct(parse_config::<F>(config_json)?)?;
    Ok(Component_TO::from_value(
        BuilderComponent(builder),
        TD_Opaque,
    ))
}

/// Deserialize the config and construct a registry.
pub fn construct_registry<F: RegistryFlavor>(
    config_json: &str,
) -> Result<ComponentBox, PluginError> {
    let registry = F::construct(parse_config::<F>(config_json)?)?;
    Ok(Component_TO::from_value(
        RegistryComponent(registry),
        TD_Opaque,
    ))
}

/// Run a builder flavor's context hook on a JSON [`ContextCall`].
pub fn customize_context<F: BuilderFlavor>(
    config_json: &str,
    input_json: &str,
) -> Result<Vec<ContextFile>, PluginError> {
    let config = parse_config::<F>(config_json)?;
    let call: ContextCall = decode_input(method::CUSTOMIZE_CONTEXT, input_json)?;
    F::customize_context(&config, &call.request)
}

/// The error for a flavor name this plugin does not offer.
pub fn unknown_flavor(component_type: &str, name: &str) -> PluginError {
    PluginError::new(
        ErrorKind::UNKNOWN_FLAVOR,
        format!("this plugin offers no {component_type} flavor named {name:?}"),
    )
}

/// The error for a method this component does not answer (one from a newer
/// protocol).
pub fn unknown_method(m: &str) -> PluginError {
    PluginError::unsupported(&format!("method {m:?}"))
}

/// Assemble the root module. Used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub fn __root_module(
    hello: extern "C" fn(RStr<'_>) -> RString,
    describe: extern "C" fn() -> RResult<RString, RString>,
    construct: extern "C" fn(RStr<'_>, RStr<'_>, RStr<'_>) -> RResult<ComponentBox, RString>,
    call: extern "C" fn(
        RStr<'_>,
        RStr<'_>,
        RStr<'_>,
        RStr<'_>,
        HostBox,
    ) -> RResult<RString, RString>,
) -> PluginModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginModule {
        hello,
        describe,
        construct,
        call,
    }
    .leak_into_prefix()
}

/// Encode a constructor's result for the boundary.
#[doc(hidden)]
pub fn __constructed(r: Result<ComponentBox, PluginError>) -> RResult<ComponentBox, RString> {
    match r {
        Ok(c) => RResult::ROk(c),
        Err(e) => RResult::RErr(encode(&e).into()),
    }
}

struct BuilderComponent<B>(B);

impl<B: Builder> Component for BuilderComponent<B> {
    fn call(&self, m: RStr<'_>, input: RStr<'_>, host: HostBox) -> RResult<RString, RString> {
        guard_json(m.as_str(), || match m.as_str() {
            method::BUILD => {
                let call: BuildCall = decode_input(method::BUILD, input.as_str())?;
                let registry = call.registry.then(|| HostRegistry(host.clone()));
                self.0.build(
                    &call.request,
                    &call.context,
                    registry.as_ref(),
                    &Events(host.clone()),
                    &Cancel(host),
                )
            }
            other => Err(unknown_method(other)),
        })
    }
}

struct RegistryComponent<R>(R);

impl<R: Registry> RegistryComponent<R> {
    fn answer(
        &self,
        m: &str,
        input: &str,
        host: HostBox,
    ) -> Result<serde_json::Value, PluginError> {
        Ok(match m {
            method::URI => to_value(&self.0.uri()),
            method::OWNS_IMAGE => {
                let c: ImageCall = decode_input(m, input)?;
                to_value(&self.0.owns_image(&c.image)?)
            }
            method::PREPARE_IMAGE_PUSH => {
                let c: ImageCall = decode_input(m, input)?;
                self.0.prepare_image_push(&c.image)?;
                serde_json::Value::Null
            }
            method::PUSH_IMAGE => {
                let c: ImageCall = decode_input(m, input)?;
                to_value(
                    &self
                        .0
                        .push_image(&c.image, &Events(host.clone()), &Cancel(host))?,
                )
            }
            method::IMAGE_EXISTS => {
                let c: ExistsCall = decode_input(m, input)?;
                to_value(&self.0.image_exists(&c.repository, &c.tag, &c.platforms)?)
            }
            method::AUTH => to_value(&self.0.auth()?),
            other => return Err(unknown_method(other)),
        })
    }
}

fn to_value<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| unreachable!("protocol values serialise: {e}"))
}

impl<R: Registry> Component for RegistryComponent<R> {
    fn call(&self, m: RStr<'_>, input: RStr<'_>, host: HostBox) -> RResult<RString, RString> {
        guard_json(m.as_str(), || self.answer(m.as_str(), input.as_str(), host))
    }
}

#[cfg(feature = "runtime")]
mod runtime {
    use std::sync::OnceLock;

    /// The plugin's own tokio runtime, started on first use and never shared
    /// with the host (futures do not cross the boundary).
    pub fn runtime() -> &'static tokio::runtime::Runtime {
        static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("kiln-plugin")
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("starting the plugin's tokio runtime: {e}"))
        })
    }

    /// Run a future to completion on the plugin's runtime. The host calls
    /// plugins from blocking threads, so blocking here is expected.
    pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
        runtime().block_on(future)
    }
}

#[cfg(feature = "runtime")]
pub use runtime::{block_on, runtime};

/// Export a plugin's root module. The plugin crate must be a `cdylib` and
/// depend on `abi_stable` directly (the export attribute names it). The
/// plugin's version in listings is its crate's version.
///
/// ```text
/// kiln_plugin_api::export_plugin! {
///     name: "my-plugin",
///     builders: [MyBuilderFlavor],
///     registries: [],
/// }
/// ```
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr,
        builders: [$($builder:ty),* $(,)?],
        registries: [$($registry:ty),* $(,)?] $(,)?
    ) => {
        #[::abi_stable::export_root_module]
        pub fn kiln_plugin_root_module() -> $crate::PluginModuleRef {
            use $crate::abi_stable::std_types::{RResult, RStr, RString};

            extern "C" fn hello(host: RStr<'_>) -> RString {
                $crate::author::__hello(host, $name, env!("CARGO_PKG_VERSION"))
            }

            extern "C" fn describe() -> RResult<RString, RString> {
                $crate::author::guard_json("describe", || {
                    #[allow(unused_mut)]
                    let mut flavors: Vec<$crate::FlavorDescriptor> = Vec::new();
                    $( flavors.push($crate::author::builder_descriptor::<$builder>()); )*
                    $( flavors.push($crate::author::registry_descriptor::<$registry>()); )*
                    Ok(flavors)
                })
            }

            extern "C" fn construct(
                component_type: RStr<'_>,
                flavor: RStr<'_>,
                config: RStr<'_>,
            ) -> RResult<$crate::ComponentBox, RString> {
                $crate::author::__constructed($crate::author::guard("construct", || {
                    let (component_type, flavor, config) =
                        (component_type.as_str(), flavor.as_str(), config.as_str());
                    if component_type == $crate::ComponentType::IMAGE_BUILDER.as_str() {
                        $(
                            if flavor == <$builder as $crate::author::Flavor>::NAME {
                                return $crate::author::construct_builder::<$builder>(config);
                            }
                        )*
                    }
                    if component_type == $crate::ComponentType::CONTAINER_REGISTRY.as_str() {
                        $(
                            if flavor == <$registry as $crate::author::Flavor>::NAME {
                                return $crate::author::construct_registry::<$registry>(config);
                            }
                        )*
                    }
                    let _ = config;
                    Err($crate::author::unknown_flavor(component_type, flavor))
                }))
            }

            extern "C" fn call(
                method: RStr<'_>,
                flavor: RStr<'_>,
                config: RStr<'_>,
                input: RStr<'_>,
                _host: $crate::HostBox,
            ) -> RResult<RString, RString> {
                $crate::author::guard_json::<Vec<$crate::ContextFile>>(method.as_str(), || {
                    let (method, flavor, config, input) =
                        (method.as_str(), flavor.as_str(), config.as_str(), input.as_str());
                    if method != $crate::method::CUSTOMIZE_CONTEXT {
                        return Err($crate::author::unknown_method(method));
                    }
                    $(
                        if flavor == <$builder as $crate::author::Flavor>::NAME {
                            return $crate::author::customize_context::<$builder>(config, input);
                        }
                    )*
                    let _ = (config, input);
                    Err($crate::author::unknown_flavor("image-builder", flavor))
                })
            }

            $crate::author::__root_module(hello, describe, construct, call)
        }
    };
}
