//! The contract between the `kiln` host and its plugins.
//!
//! A kiln plugin is a `cdylib` that exports one root module,
//! [`PluginModule`], through [`abi_stable`]. The host loads every library in
//! its plugin folders, checks that each was built against a compatible version
//! of this crate, and reads the [`FlavorDescriptor`]s it offers: image builders
//! and container registries, each with a config JSON Schema. Nothing is
//! constructed until a build or push runs.
//!
//! Everything that crosses the boundary is an `abi_stable` type: strings are
//! [`RString`](abi_stable::std_types::RString), configs and schemas are JSON
//! strings, implementations are `#[sabi_trait]` objects ([`ImageBuilder`],
//! [`ContainerRegistry`]) and the host hands plugins an [`EventSink`] for logs
//! and progress and a [`Cancellation`] token. Futures never cross: the host
//! calls plugins from blocking threads, and a plugin that needs async starts
//! its own runtime (`author::runtime`, feature `runtime`).
//!
//! # Writing a plugin
//!
//! With feature `author`, a plugin is a config struct, an implementation and
//! one `export_plugin!` call. This is a complete plugin, `plugins/echo`.
//!
//! Its `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! kiln-plugin-api = { version = "0.1", features = ["author"] }
//! abi_stable = "0.11"   # the export attribute names it
//! serde = { version = "1", features = ["derive"] }
//! schemars = "1"
//! ```
//!
//! Its `src/lib.rs`, included here from `plugins/echo`, which kiln's
//! workspace builds and tests, so this example always compiles:
//!
//! ```rust,ignore
#![doc = include_str!("../../plugins/echo/src/lib.rs")]
//! ```
//!
//! `kiln flavor list --plugins-dir target/debug` then lists flavor `echo`.
//!
//! # Rules
//!
//! - Every call is wrapped in `catch_unwind` by the author layer: a panic
//!   becomes a [`PluginError`] of kind [`ErrorKind::PANICKED`]. Plugins that
//!   implement the ABI by hand must do the same; a panic that unwinds out of an
//!   `extern "C"` function aborts the host.
//! - `describe` and the schema must be cheap and side-effect free: no runtime,
//!   no network, no files. The host calls it for every listing.
//! - Logs go to the [`EventSink`], never to stdout or the plugin's own
//!   `tracing` dispatcher (which the host cannot see). Secrets never go anywhere.
//! - Libraries are never unloaded.
//!
//! # Versions and the one growth rule
//!
//! This crate has its own version (its `Cargo.toml`), independent of
//! kiln's; plugins report the version they were built against. The host
//! loads a plugin when abi_stable's version rule passes (the same major
//! version and, while this crate is `0.x`, the same minor) and its layout
//! check passes. The layout check accepts a root module with the fields the
//! host knows or more (a plugin built against a newer patch release), and
//! refuses one with fewer: that plugin is reported as "built against an
//! older plugin-api layout; rebuild it".
//!
//! **The growth rule.** A patch release may only append: root-module
//! fields after `#[sabi(last_prefix_field)]` (read as `Option`), trait
//! methods at the end with a default body, new values of the integer
//! enumerations (which every reader must tolerate). Plugins built before an
//! append must be rebuilt to load in a host that has it. Anything else
//! (removing, reordering, changing a type) is a new minor version while
//! `0.x`, a new major version after. `tests/layout.txt` pins every type the
//! ABI reaches, so any edit shows in review.
//!
#![deny(missing_docs)]

pub use abi_stable;

mod root;
mod traits;
mod types;

#[cfg(feature = "author")]
pub mod author;
#[cfg(feature = "author")]
pub mod testing;

pub use root::{PluginModule, PluginModuleRef, PLUGIN_API_VERSION};
pub use traits::{
    unsupported, Cancellation, CancellationBox, Cancellation_TO, ContainerRegistry,
    ContainerRegistryBox, ContainerRegistry_TO, ContextFiles, EventSink, EventSinkBox,
    EventSink_TO, ImageBuilder, ImageBuilderBox, ImageBuilder_TO,
};
pub use types::{
    capability, BuildContext, BuildOutput, BuildRequest, Capability, ComponentType, ContextFile,
    ErrorKind, Event, Existence, FlavorDescriptor, ImageExistence, Level, PluginError,
    RegistryAuth,
};
