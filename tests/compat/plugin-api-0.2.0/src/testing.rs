//! Exercise a flavor in-process, the way kiln calls it, without kiln
//! (nushell's `nu-plugin-test-support`): the descriptor and schema as kiln
//! lists them, the config through the same JSON parsing, construction and
//! every call through the same protocol encoding and panic guards, events
//! recorded, cancellation under the test's control.
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

use crate::{
    author::{self, BuilderFlavor, RegistryFlavor},
    client::{BuilderHandle, Observer, RegistryCalls, RegistryHandle},
    BuildContext, BuildOutput, BuildRequest, ContextFile, Event, FlavorDescriptor, PluginError,
};

/// Records events and holds the cancellation flag the test sets.
#[derive(Default)]
struct Probe {
    events: Mutex<Vec<Event>>,
    cancelled: AtomicBool,
}

impl Observer for Probe {
    fn event(&self, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

impl Probe {
    fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// An image-builder flavor `F`, constructed from a config as kiln would.
pub struct BuilderHarness<F: BuilderFlavor> {
    builder: BuilderHandle,
    probe: Arc<Probe>,
    flavor: PhantomData<F>,
}

impl<F: BuilderFlavor> BuilderHarness<F> {
    /// The descriptor (name, capabilities, config schema) kiln would list.
    pub fn descriptor() -> FlavorDescriptor {
        author::builder_descriptor::<F>()
    }

    /// Construct from `config`, through the same parsing and guard as a
    /// plugin library.
    pub fn new(config: serde_json::Value) -> Result<Self, PluginError> {
        let component = author::guard("construct", || {
            author::construct_builder::<F>(&config.to_string())
        })?;
        Ok(Self {
            builder: BuilderHandle::from_component(component),
            probe: Arc::default(),
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

    /// `build`, pushing through `registry` (a [`RegistryHarness::registry`]).
    pub fn build_with(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: Option<Arc<RegistryHandle>>,
    ) -> Result<BuildOutput, PluginError> {
        self.builder
            .build(request, context, registry, self.probe.clone())
    }

    /// The context hook's files for `config` and `request`.
    pub fn context_files(
        config: serde_json::Value,
        request: &BuildRequest,
    ) -> Result<Vec<ContextFile>, PluginError> {
        let input = crate::client::encode(&crate::protocol::ContextCall {
            request: request.clone(),
        });
        author::guard("customize_context", || {
            author::customize_context::<F>(&config.to_string(), &input)
        })
    }

    /// Press Ctrl-C: every later `is_cancelled` answers true.
    pub fn cancel(&self) {
        self.probe.cancelled.store(true, Ordering::SeqCst);
    }

    /// The events sent so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.probe.events()
    }

    /// Their messages.
    pub fn messages(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.message).collect()
    }
}

/// A container-registry flavor `F`, constructed from a config as kiln would.
pub struct RegistryHarness<F: RegistryFlavor> {
    registry: Arc<RegistryHandle>,
    probe: Arc<Probe>,
    flavor: PhantomData<F>,
}

impl<F: RegistryFlavor> RegistryHarness<F> {
    /// The descriptor kiln would list.
    pub fn descriptor() -> FlavorDescriptor {
        author::registry_descriptor::<F>()
    }

    /// Construct from `config`, through the same parsing and guard.
    pub fn new(config: serde_json::Value) -> Result<Self, PluginError> {
        let component = author::guard("construct", || {
            author::construct_registry::<F>(&config.to_string())
        })?;
        Ok(Self {
            registry: Arc::new(RegistryHandle::from_component(component)),
            probe: Arc::default(),
            flavor: PhantomData,
        })
    }

    /// The registry as kiln holds it, for every call (`uri`, `owns_image`,
    /// `image_exists`, ...), or to hand to a builder.
    pub fn registry(&self) -> Arc<RegistryHandle> {
        self.registry.clone()
    }

    /// `push_image`, events recorded.
    pub fn push(&self, image: &str) -> Result<String, PluginError> {
        self.registry.observed(self.probe.clone()).push_image(image)
    }

    /// Press Ctrl-C.
    pub fn cancel(&self) {
        self.probe.cancelled.store(true, Ordering::SeqCst);
    }

    /// The events sent so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.probe.events()
    }
}
