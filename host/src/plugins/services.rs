//! What the host hands to plugins at build time: the event sink that carries
//! plugin logs and build output to kiln's own output, and the cancellation
//! flag that Ctrl-C sets.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use abi_stable::{sabi_trait::TD_Opaque, std_types::RArc};
use kiln_plugin_api::{
    Cancellation, CancellationBox, Cancellation_TO, Event, EventSink, EventSinkBox, EventSink_TO,
    Level,
};

/// Forwards plugin events to kiln's diagnostics (stderr, via `tracing`),
/// labelled with the plugin's name.
#[derive(Debug, Clone)]
pub struct LogSink {
    plugin: Arc<str>,
}

impl EventSink for LogSink {
    fn emit(&self, event: Event) {
        let plugin = &*self.plugin;
        let msg = event.message.as_str();
        match event.level {
            Level::ERROR => tracing::error!(plugin, "{msg}"),
            Level::WARN => tracing::warn!(plugin, "{msg}"),
            Level::DEBUG => tracing::debug!(plugin, "{msg}"),
            _ => tracing::info!(plugin, kind = event.kind.as_str(), "{msg}"),
        }
    }
}

/// An event sink for `plugin`, to pass across the boundary.
pub fn log_sink(plugin: &str) -> EventSinkBox {
    EventSink_TO::from_ptr(
        RArc::new(LogSink {
            plugin: Arc::from(plugin),
        }),
        TD_Opaque,
    )
}

/// Shows build progress as it arrives: steps and the build's own output
/// on stderr (the result goes to stdout), the rest through `tracing`.
#[derive(Debug, Clone)]
pub struct ProgressSink {
    plugin: Arc<str>,
}

impl EventSink for ProgressSink {
    fn emit(&self, event: Event) {
        let msg = event.message.as_str();
        match (event.level, event.kind.as_str()) {
            (Level::ERROR, _) => crate::output::status(&format!("error: {msg}")),
            (Level::WARN, _) => crate::output::warn(msg),
            (Level::DEBUG, _) => tracing::debug!(plugin = &*self.plugin, "{msg}"),
            (_, "step") => crate::output::status(&format!("=> {msg}")),
            (_, "output") => crate::output::status(&format!("   {msg}")),
            _ => crate::output::status(msg),
        }
    }
}

/// An event sink that shows `plugin`'s build progress to the user.
pub fn progress_sink(plugin: &str) -> EventSinkBox {
    EventSink_TO::from_ptr(
        RArc::new(ProgressSink {
            plugin: Arc::from(plugin),
        }),
        TD_Opaque,
    )
}

/// A cancellation flag shared between the host (which sets it) and plugins
/// (which poll it).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag not yet set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Ask every holder to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// The handle to pass across the boundary.
    pub fn handle(&self) -> CancellationBox {
        Cancellation_TO::from_ptr(RArc::new(self.clone()), TD_Opaque)
    }
}

impl Cancellation for CancelFlag {
    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellation_is_seen_through_the_handle() {
        let flag = CancelFlag::new();
        let handle = flag.handle();
        let copy = handle.clone();
        assert!(!handle.is_cancelled());
        flag.cancel();
        assert!(handle.is_cancelled() && copy.is_cancelled());
    }
}
