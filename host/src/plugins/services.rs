//! What the host hands to plugins during a call: an [`Observer`] that carries
//! plugin logs and build output to kiln's own output, and answers whether
//! Ctrl-C set the cancellation flag.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use kiln_plugin_api::{client::Observer, Event, Level};

/// Forwards plugin events to kiln's diagnostics (stderr, via `tracing`),
/// labelled with the plugin's name.
#[derive(Debug, Clone)]
pub struct LogSink {
    plugin: Arc<str>,
    cancel: CancelFlag,
}

impl Observer for LogSink {
    fn event(&self, event: Event) {
        let plugin = &*self.plugin;
        let msg = event.message.as_str();
        match event.level {
            Level::ERROR => tracing::error!(plugin, "{msg}"),
            Level::WARN => tracing::warn!(plugin, "{msg}"),
            Level::DEBUG => tracing::debug!(plugin, "{msg}"),
            _ => tracing::info!(plugin, kind = event.kind.as_str(), "{msg}"),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.is_set()
    }
}

/// An observer that logs `plugin`'s events, cancelled by `flag`.
pub fn log_sink(plugin: &str, flag: &CancelFlag) -> Arc<dyn Observer> {
    Arc::new(LogSink {
        plugin: Arc::from(plugin),
        cancel: flag.clone(),
    })
}

/// Shows build progress as it arrives: steps and the build's own output
/// on stderr (the result goes to stdout), the rest through `tracing`.
#[derive(Debug, Clone)]
pub struct ProgressSink {
    plugin: Arc<str>,
    cancel: CancelFlag,
}

impl Observer for ProgressSink {
    fn event(&self, event: Event) {
        let msg = event.message.as_str();
        let kind = event.kind.as_str();
        match (event.level, kind) {
            (Level::ERROR, _) => {
                crate::output::event(kind, "error", msg, &format!("error: {msg}"), true)
            }
            (Level::WARN, _) => crate::output::warn(msg),
            (Level::DEBUG, _) => tracing::debug!(plugin = &*self.plugin, "{msg}"),
            (_, "progress") => crate::output::progress_bytes(msg, event.current, event.total),
            (_, "step") => crate::output::event(kind, "info", msg, &format!("=> {msg}"), false),
            (_, "output") => crate::output::event(kind, "info", msg, &format!("   {msg}"), false),
            _ => crate::output::event(kind, "info", msg, msg, false),
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.is_set()
    }
}

/// An observer that shows `plugin`'s build progress to the user, cancelled
/// by `flag`.
pub fn progress_sink(plugin: &str, flag: &CancelFlag) -> Arc<dyn Observer> {
    Arc::new(ProgressSink {
        plugin: Arc::from(plugin),
        cancel: flag.clone(),
    })
}

/// A cancellation flag shared between the host (which sets it) and plugins
/// (which poll it through their observer).
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancellation_is_seen_through_every_observer() {
        let flag = CancelFlag::new();
        let progress = progress_sink("p", &flag);
        let log = log_sink("p", &flag);
        assert!(!progress.is_cancelled());
        flag.cancel();
        assert!(progress.is_cancelled() && log.is_cancelled());
    }
}
