#![allow(non_local_definitions)] // emitted inside abi_stable's #[sabi_trait] expansion
//! The `#[sabi_trait]` objects of the contract: builders and registries that
//! plugins implement, and the event sink and cancellation token the host
//! provides.
//!
//! Methods after `#[sabi(last_prefix_field)]` were appended after the first
//! layout; a plugin built before them gets the default body.

use abi_stable::{
    sabi_trait,
    std_types::{RArc, RBox, ROption, RResult, RSlice, RStr, RString, RVec},
};

use crate::types::{
    BuildContext, BuildOutput, BuildRequest, ErrorKind, Event, ImageExistence, PluginError,
    RegistryAuth,
};

/// Where a plugin sends logs and progress. Provided by the host; cheap to clone.
#[sabi_trait]
pub trait EventSink: Send + Sync + Clone {
    /// Deliver one event. Never blocks for long; never fails.
    #[sabi(last_prefix_field)]
    fn emit(&self, event: Event);
}

/// Tells a long-running plugin call that the user pressed Ctrl-C.
#[sabi_trait]
pub trait Cancellation: Send + Sync + Clone {
    /// Whether the operation should stop as soon as it can.
    #[sabi(last_prefix_field)]
    fn is_cancelled(&self) -> bool;
}

/// An image builder implementation (ZenML's `BaseImageBuilder`, Flyte's `ImageBuilder`).
#[sabi_trait]
pub trait ImageBuilder: Send + Sync {
    /// Whether builds happen on this machine. Remote builders get the context
    /// uploaded to the artifact store first.
    fn is_building_locally(&self) -> bool;

    /// Build the image described by `request` from `context`.
    ///
    /// When `registry` is given the builder pushes every tag through it and
    /// returns the pushed digest. Logs go to `events`; `cancel` is polled.
    #[sabi(last_prefix_field)]
    fn build(
        &self,
        request: &BuildRequest,
        context: &BuildContext,
        registry: ROption<&ContainerRegistryBox>,
        events: EventSinkBox,
        cancel: CancellationBox,
    ) -> RResult<BuildOutput, PluginError>;
}

/// A container registry implementation (ZenML's `BaseContainerRegistry`,
/// Flyte's `ImageChecker`).
#[sabi_trait]
pub trait ContainerRegistry: Send + Sync {
    /// The normalised registry URI (`host[:port][/namespace]`).
    fn uri(&self) -> RString;

    /// Whether `image` belongs to this registry by Docker's reference grammar.
    /// An invalid reference is an error.
    fn owns_image(&self, image: RStr<'_>) -> RResult<bool, PluginError>;

    /// Called before a push (ZenML's `prepare_image_push`): create repositories, log in.
    fn prepare_image_push(&self, image: RStr<'_>) -> RResult<(), PluginError>;

    /// Push `image` (with an explicit tag) and return its digest.
    fn push_image(
        &self,
        image: RStr<'_>,
        events: EventSinkBox,
        cancel: CancellationBox,
    ) -> RResult<RString, PluginError>;

    /// Whether `repository:tag` exists, for each of `platforms` when given.
    fn image_exists(
        &self,
        repository: RStr<'_>,
        tag: RStr<'_>,
        platforms: RSlice<'_, RString>,
    ) -> RResult<ImageExistence, PluginError>;

    /// Credentials for a builder that talks to this registry by itself.
    #[sabi(last_prefix_field)]
    fn auth(&self) -> RResult<ROption<RegistryAuth>, PluginError> {
        RResult::ROk(ROption::RNone)
    }
}

/// An owned image builder object, as constructed by a plugin.
pub type ImageBuilderBox = ImageBuilder_TO<'static, RBox<()>>;
/// An owned container registry object, as constructed by a plugin.
pub type ContainerRegistryBox = ContainerRegistry_TO<'static, RBox<()>>;
/// A shared event sink handle.
pub type EventSinkBox = EventSink_TO<'static, RArc<()>>;
/// A shared cancellation handle.
pub type CancellationBox = Cancellation_TO<'static, RArc<()>>;

/// Context-file list returned by a builder's context hook.
pub type ContextFiles = RVec<crate::types::ContextFile>;

/// `ErrorKind::UNSUPPORTED` for a method a plugin does not provide.
pub fn unsupported(what: &str) -> PluginError {
    PluginError::new(
        ErrorKind::UNSUPPORTED,
        format!("{what} is not supported by this plugin"),
    )
}
