//! Plugin discovery and loading: which folders are searched, how each library
//! is opened and checked, and the catalog of flavors the loaded plugins offer.
//!
//! Loading only opens libraries and reads their static descriptors (stage 1,
//! "describe"); a listing takes them from the descriptor cache when the
//! file has not changed, and opens nothing. Nothing is constructed here.

mod catalog;
mod descriptors;
mod discovery;
mod loader;
mod services;
pub mod trust;

pub use catalog::{Catalog, Flavor};
pub use descriptors::set_dir as set_descriptor_cache;
pub use discovery::{bundled_plugins_dir, search_dirs, user_plugins_dir, PluginDir, SearchOrigin};
pub use loader::{describe_plugin, load_plugin, set_load_timeout, LoadedPlugin, Problem};
pub use services::{log_sink, progress_sink, CancelFlag, LogSink};
