//! Exercise a flavor in-process, the way kiln calls it, without kiln
//! (nushell's `nu-plugin-test-support`): the descriptor and schema as kiln
//! lists them, the config through the same JSON parsing, construction and
//! every call through the same panic guards, events recorded, cancellation
//! under the test's control.
//!
//! ```rust,ignore
//! use kiln_plugin_api::testing::BuilderHarness;
//! let h = BuilderHarness::<EchoFlavor>::new(serde_json::json!({"prefix": "t-"}))?;
//! let out = h.build(&request, &context)?;
//! assert!(h.messages().iter().any(|m| m.starts_with("t-context")));
//! ```

use std::{
    marker::PhantomData,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use abi_stable::{sabi_trait::TD_Opaque, std_types::RArc};

use crate::{
    author::{self, BuilderFlavor, RegistryFlavor},
    BuildContext, BuildOutput, BuildRequest, Cancellation, CancellationBox, Cancellation_TO,
    ContainerRegistryBox, Event, EventSink, EventSinkBox, EventSink_TO, FlavorDescriptor,
    ImageBuilderBox, PluginError,
};

/// Events a plugin sent, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }
}

/// A cancellation flag the test sets.
#[derive(Clone, Default)]
struct Flag(Arc<AtomicBool>);

impl Cancellation for Flag {
    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a harness shares: recorded events and the cancellation flag.
#[derive(Clone, Default)]
struct Probe {
    events: Recorder,
    cancelled: Flag,
}

impl Probe {
    fn sink(&self) -> EventSinkBox {
        EventSink_TO::from_ptr(RArc::new(self.events.clone()), TD_Opaque)
    }

    fn cancellation(&self) -> CancellationBox {
        Cancellation_TO::from_ptr(RArc::new(self.cancelled.clone()), TD_Opaque)
    }

    fn events(&self) -> Vec<Event> {
        self.events.0.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// An image-builder flavor `F`, constructed from a config as kiln would.
pub struct BuilderHarness<F: BuilderFlavor> {
    builder: ImageBuilderBox,
    probe: Probe,
    flavor: PhantomData<F>,
}

impl<F: BuilderFlavor> BuilderHarness<F> {
    /// The descriptor (name, capabilities, config schema) kiln would list.
    pub fn descriptor() -> Result<FlavorDescriptor, PluginError> {
        author::builder_descriptor::<F>()
    }

    /// Construct from `config`, through the same parsing and guard as a
    /// plugin library.
    pub fn new(config: serde_json::Value) -> Result<Self, PluginError> {
        Ok(Self {
            builder: author::construct_builder::<F>(&config.to_string())?,
            probe: Probe::default(),
            flavor: PhantomData,
        })
    }

    /// `build`, with no registry.
    pub fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
    ) -> Result<BuildOutput, PluginError> {
        self.build_with(request, context, None)
    }

    /// `build`, pushing through `registry`.
    pub fn build_with(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: Option<&ContainerRegistryBox>,
    ) -> Result<BuildOutput, PluginError> {
        self.builder
            .build(
                request,
                context,
                registry.into(),
                self.probe.sink(),
                self.probe.cancellation(),
            )
            .into_result()
    }

    /// The context hook's files for `config` and `request`.
    pub fn context_files(
        config: serde_json::Value,
        request: &BuildRequest,
    ) -> Result<Vec<crate::ContextFile>, PluginError> {
        author::customize_context::<F>(&config.to_string(), request).map(|f| f.into_vec())
    }

    /// Press Ctrl-C: every later `is_cancelled` answers true.
    pub fn cancel(&self) {
        self.probe.cancelled.0.store(true, Ordering::SeqCst);
    }

    /// The events sent so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.probe.events()
    }

    /// Their messages.
    pub fn messages(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .map(|e| e.message.into_string())
            .collect()
    }
}

/// A container-registry flavor `F`, constructed from a config as kiln would.
pub struct RegistryHarness<F: RegistryFlavor> {
    registry: ContainerRegistryBox,
    probe: Probe,
    flavor: PhantomData<F>,
}

impl<F: RegistryFlavor> RegistryHarness<F> {
    /// The descriptor kiln would list.
    pub fn descriptor() -> Result<FlavorDescriptor, PluginError> {
        author::registry_descriptor::<F>()
    }

    /// Construct from `config`, through the same parsing and guard.
    pub fn new(config: serde_json::Value) -> Result<Self, PluginError> {
        Ok(Self {
            registry: author::construct_registry::<F>(&config.to_string())?,
            probe: Probe::default(),
            flavor: PhantomData,
        })
    }

    /// The registry as kiln holds it, for every call (`uri`, `owns_image`,
    /// `image_exists`, ...), or to hand to a builder.
    pub fn registry(&self) -> &ContainerRegistryBox {
        &self.registry
    }

    /// `push_image`, events recorded.
    pub fn push(&self, image: &str) -> Result<String, PluginError> {
        self.registry
            .push_image(image.into(), self.probe.sink(), self.probe.cancellation())
            .into_result()
            .map(|d| d.into_string())
    }

    /// Press Ctrl-C.
    pub fn cancel(&self) {
        self.probe.cancelled.0.store(true, Ordering::SeqCst);
    }

    /// The events sent so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.probe.events()
    }
}
