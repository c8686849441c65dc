//! The plugin-author layer (feature `author`): write a config struct, an
//! implementation type and one [`export_plugin!`](crate::export_plugin) call.
//!
//! Everything here runs inside the plugin. Every call from the host goes
//! through [`guard`], so a panic becomes a [`PluginError`] of kind
//! [`ErrorKind::PANICKED`] instead of unwinding across the boundary (which
//! would abort the host).

use std::{
    any::Any,
    borrow::Cow,
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    traits::{
        CancellationBox, ContainerRegistry, ContainerRegistryBox, ContainerRegistry_TO,
        ContextFiles, EventSinkBox, ImageBuilder, ImageBuilderBox, ImageBuilder_TO,
    },
    types::{
        BuildContext, BuildOutput, BuildRequest, ComponentType, ContextFile, ErrorKind, Event,
        FlavorDescriptor, ImageExistence, Level, PluginError, RegistryAuth,
    },
    PluginModule, PluginModuleRef,
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
    /// `build_context_class`). Called without constructing the builder.
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

/// The Rust-side image builder a plugin author implements.
pub trait Builder: Send + Sync + 'static {
    /// See [`ImageBuilder::is_building_locally`].
    fn is_building_locally(&self) -> bool;
    /// See [`ImageBuilder::build`].
    fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: Option<&ContainerRegistryBox>,
        events: &Events,
        cancel: &CancellationBox,
    ) -> Result<BuildOutput, PluginError>;
}

/// The Rust-side container registry a plugin author implements.
pub trait Registry: Send + Sync + 'static {
    /// See [`ContainerRegistry::uri`].
    fn uri(&self) -> String;
    /// See [`ContainerRegistry::owns_image`].
    fn owns_image(&self, image: &str) -> Result<bool, PluginError>;
    /// See [`ContainerRegistry::prepare_image_push`].
    fn prepare_image_push(&self, _image: &str) -> Result<(), PluginError> {
        Ok(())
    }
    /// See [`ContainerRegistry::push_image`].
    fn push_image(
        &self,
        image: &str,
        events: &Events,
        cancel: &CancellationBox,
    ) -> Result<String, PluginError>;
    /// See [`ContainerRegistry::image_exists`].
    fn image_exists(
        &self,
        repository: &str,
        tag: &str,
        platforms: &[RString],
    ) -> Result<ImageExistence, PluginError>;
    /// See [`ContainerRegistry::auth`].
    fn auth(&self) -> Result<Option<RegistryAuth>, PluginError> {
        Ok(None)
    }
}

/// Convenience wrapper over the host's event sink.
#[derive(Clone)]
pub struct Events(EventSinkBox);

impl Events {
    /// Wrap the host's sink.
    pub fn new(sink: EventSinkBox) -> Self {
        Self(sink)
    }

    /// The host's sink, to hand on (to a registry's `push_image`).
    pub fn sink(&self) -> EventSinkBox {
        self.0.clone()
    }
    /// Send any event.
    pub fn emit(&self, event: Event) {
        self.0.emit(event);
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
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Events")
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
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    quiet_panics();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e),
        Err(payload) => RResult::RErr(PluginError::new(
            ErrorKind::PANICKED,
            format!("plugin panicked in {what}: {}", panic_message(&*payload)),
        )),
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

fn descriptor<F: Flavor>(component_type: ComponentType) -> Result<FlavorDescriptor, PluginError> {
    let schema = schemars::schema_for!(F::Config);
    let schema_json = serde_json::to_string(&schema).map_err(|e| {
        PluginError::other(format!("serialising the config schema of {}: {e}", F::NAME))
    })?;
    Ok(FlavorDescriptor {
        component_type,
        name: F::NAME.into(),
        description: F::DESCRIPTION.into(),
        docs_url: F::DOCS_URL.into(),
        sdk_docs_url: F::SDK_DOCS_URL.into(),
        logo_url: F::LOGO_URL.into(),
        config_schema_json: schema_json.into(),
        capabilities: F::CAPABILITIES.iter().map(|c| RString::from(*c)).collect(),
        extra_json: "{}".into(),
    })
}

/// The descriptor of an image-builder flavor. Used by [`export_plugin!`](crate::export_plugin).
pub fn builder_descriptor<F: BuilderFlavor>() -> Result<FlavorDescriptor, PluginError> {
    descriptor::<F>(ComponentType::IMAGE_BUILDER)
}

/// The descriptor of a container-registry flavor. Used by [`export_plugin!`](crate::export_plugin).
pub fn registry_descriptor<F: RegistryFlavor>() -> Result<FlavorDescriptor, PluginError> {
    descriptor::<F>(ComponentType::CONTAINER_REGISTRY)
}

fn parse_config<F: Flavor>(config_json: &str) -> Result<F::Config, PluginError> {
    serde_json::from_str(config_json).map_err(|e| {
        // serde's message can quote the offending value; it may be a secret.
        PluginError::new(
            ErrorKind::INVALID_CONFIG,
            format!(
                "config of flavor {} does not fit its type (line {}, column {})",
                F::NAME,
                e.line(),
                e.column()
            ),
        )
    })
}

/// Deserialize the config and construct a builder. Used by [`export_plugin!`](crate::export_plugin).
pub fn construct_builder<F: BuilderFlavor>(
    config_json: &str,
) -> Result<ImageBuilderBox, PluginError> {
    let builder = F::construct(parse_config::<F>(config_json)?)?;
    Ok(ImageBuilder_TO::from_value(Guarded(builder), TD_Opaque))
}

/// Deserialize the config and construct a registry. Used by [`export_plugin!`](crate::export_plugin).
pub fn construct_registry<F: RegistryFlavor>(
    config_json: &str,
) -> Result<ContainerRegistryBox, PluginError> {
    let registry = F::construct(parse_config::<F>(config_json)?)?;
    Ok(ContainerRegistry_TO::from_value(
        Guarded(registry),
        TD_Opaque,
    ))
}

/// Run a builder flavor's context hook. Used by [`export_plugin!`](crate::export_plugin).
pub fn customize_context<F: BuilderFlavor>(
    config_json: &str,
    request: &BuildRequest,
) -> Result<ContextFiles, PluginError> {
    let config = parse_config::<F>(config_json)?;
    Ok(F::customize_context(&config, request)?
        .into_iter()
        .collect())
}

/// The error for a flavor name this plugin does not offer.
pub fn unknown_flavor(component_type: &str, name: &str) -> PluginError {
    PluginError::new(
        ErrorKind::UNKNOWN_FLAVOR,
        format!("this plugin offers no {component_type} flavor named {name:?}"),
    )
}

/// Signature of the generated `customize_context` export.
pub type CustomizeContextFn =
    extern "C" fn(RStr<'_>, RStr<'_>, &BuildRequest) -> RResult<ContextFiles, PluginError>;

/// Assemble the root module. Used by [`export_plugin!`](crate::export_plugin); the
/// layout it fills depends on this crate's version, not the plugin's.
#[doc(hidden)]
pub fn __root_module(
    plugin_name: extern "C" fn() -> RString,
    describe: extern "C" fn() -> RResult<RVec<FlavorDescriptor>, PluginError>,
    construct_builder: extern "C" fn(RStr<'_>, RStr<'_>) -> RResult<ImageBuilderBox, PluginError>,
    construct_registry: extern "C" fn(
        RStr<'_>,
        RStr<'_>,
    ) -> RResult<ContainerRegistryBox, PluginError>,
    customize_context: CustomizeContextFn,
) -> PluginModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    #[cfg(feature = "__fixture_layout_v0")]
    let _ = customize_context;
    PluginModule {
        plugin_name,
        describe,
        construct_builder,
        construct_registry,
        #[cfg(not(feature = "__fixture_layout_v0"))]
        customize_context,
        #[cfg(feature = "__fixture_layout_next")]
        fixture_next,
    }
    .leak_into_prefix()
}

#[cfg(feature = "__fixture_layout_next")]
extern "C" fn fixture_next() -> u32 {
    1
}

struct Guarded<T>(T);

impl<B: Builder> ImageBuilder for Guarded<B> {
    fn is_building_locally(&self) -> bool {
        // A panic here cannot be reported as an error; treat it as "local".
        catch_unwind(AssertUnwindSafe(|| self.0.is_building_locally())).unwrap_or(true)
    }

    fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: abi_stable::std_types::ROption<&ContainerRegistryBox>,
        events: EventSinkBox,
        cancel: CancellationBox,
    ) -> RResult<BuildOutput, PluginError> {
        let events = Events::new(events);
        guard("build", || {
            self.0
                .build(request, context, registry.into_option(), &events, &cancel)
        })
    }
}

impl<R: Registry> ContainerRegistry for Guarded<R> {
    fn uri(&self) -> RString {
        catch_unwind(AssertUnwindSafe(|| self.0.uri()))
            .unwrap_or_else(|_| "<plugin panicked in uri>".to_owned())
            .into()
    }

    fn owns_image(&self, image: RStr<'_>) -> RResult<bool, PluginError> {
        guard("owns_image", || self.0.owns_image(image.as_str()))
    }

    fn prepare_image_push(&self, image: RStr<'_>) -> RResult<(), PluginError> {
        guard("prepare_image_push", || {
            self.0.prepare_image_push(image.as_str())
        })
    }

    fn push_image(
        &self,
        image: RStr<'_>,
        events: EventSinkBox,
        cancel: CancellationBox,
    ) -> RResult<RString, PluginError> {
        let events = Events::new(events);
        guard("push_image", || {
            self.0
                .push_image(image.as_str(), &events, &cancel)
                .map(RString::from)
        })
    }

    fn image_exists(
        &self,
        repository: RStr<'_>,
        tag: RStr<'_>,
        platforms: RSlice<'_, RString>,
    ) -> RResult<ImageExistence, PluginError> {
        guard("image_exists", || {
            self.0
                .image_exists(repository.as_str(), tag.as_str(), platforms.as_slice())
        })
    }

    fn auth(&self) -> RResult<abi_stable::std_types::ROption<RegistryAuth>, PluginError> {
        guard("auth", || self.0.auth().map(Into::into))
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
/// depend on `abi_stable` directly (the export attribute names it).
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
            use $crate::abi_stable::std_types::{RResult, RStr, RString, RVec};

            extern "C" fn plugin_name() -> RString {
                RString::from($name)
            }

            extern "C" fn describe() -> RResult<RVec<$crate::FlavorDescriptor>, $crate::PluginError> {
                $crate::author::guard("describe", || {
                    #[allow(unused_mut)]
                    let mut flavors = RVec::new();
                    $( flavors.push($crate::author::builder_descriptor::<$builder>()?); )*
                    $( flavors.push($crate::author::registry_descriptor::<$registry>()?); )*
                    Ok(flavors)
                })
            }

            extern "C" fn construct_builder(
                flavor: RStr<'_>,
                config: RStr<'_>,
            ) -> RResult<$crate::ImageBuilderBox, $crate::PluginError> {
                $crate::author::guard("construct", || {
                    $(
                        if flavor.as_str() == <$builder as $crate::author::Flavor>::NAME {
                            return $crate::author::construct_builder::<$builder>(config.as_str());
                        }
                    )*
                    let _ = config;
                    Err($crate::author::unknown_flavor("image-builder", flavor.as_str()))
                })
            }

            extern "C" fn construct_registry(
                flavor: RStr<'_>,
                config: RStr<'_>,
            ) -> RResult<$crate::ContainerRegistryBox, $crate::PluginError> {
                $crate::author::guard("construct", || {
                    $(
                        if flavor.as_str() == <$registry as $crate::author::Flavor>::NAME {
                            return $crate::author::construct_registry::<$registry>(config.as_str());
                        }
                    )*
                    let _ = config;
                    Err($crate::author::unknown_flavor("container-registry", flavor.as_str()))
                })
            }

            extern "C" fn customize_context(
                flavor: RStr<'_>,
                config: RStr<'_>,
                request: &$crate::BuildRequest,
            ) -> RResult<$crate::ContextFiles, $crate::PluginError> {
                $crate::author::guard("customize_context", || {
                    $(
                        if flavor.as_str() == <$builder as $crate::author::Flavor>::NAME {
                            return $crate::author::customize_context::<$builder>(config.as_str(), request);
                        }
                    )*
                    let _ = (config, request);
                    Err($crate::author::unknown_flavor("image-builder", flavor.as_str()))
                })
            }

            $crate::author::__root_module(
                plugin_name,
                describe,
                construct_builder,
                construct_registry,
                customize_context,
            )
        }
    };
}
