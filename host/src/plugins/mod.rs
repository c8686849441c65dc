//! Plugin discovery and loading: which folders are searched, how each library
//! is opened and checked, and the catalog of flavors the loaded plugins offer.
//!
//! Loading only opens libraries and reads their static descriptors (stage 1,
//! "describe"). Nothing is constructed here.

mod catalog;
mod discovery;
mod loader;
mod services;
pub mod trust;

pub use catalog::{Catalog, Flavor};
pub use discovery::{bundled_plugins_dir, search_dirs, user_plugins_dir, PluginDir, SearchOrigin};
pub use loader::{load_plugin, set_load_timeout, LoadedPlugin, Problem};
pub use services::{log_sink, progress_sink, CancelFlag, LogSink};
