//! The contract between the `kiln` host and its plugins: a frozen ABI and a
//! growing JSON protocol.
//!
//! A kiln plugin is a `cdylib` that exports one root module,
//! [`PluginModule`], through [`abi_stable`]. The ABI ([`abi`]) is four
//! functions and two trait objects that never change within a plugin-api
//! minor version: a handshake, `describe`, `construct` and a module-level
//! `call`; a constructed [`Component`] answers `call(method, input)`; the
//! [`Host`] object carries events, cancellation and calls back into the
//! host. Everything a call means is JSON in the protocol ([`protocol`]):
//! the [`Hello`] each side sends (`{plugin, protocol: {version,
//! features}}`), flavor descriptors, build requests, answers, events and
//! errors. Futures never cross: the host calls plugins from blocking threads,
//! and a plugin that needs async starts its own runtime (`author::runtime`,
//! feature `runtime`). kiln runs every call after `describe` in a worker
//! process, so a plugin that crashes takes only that worker down.
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
//! kiln-plugin-api = { version = "0.2", features = ["author"] }
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
//! [`testing`] runs a flavor in-process the way kiln calls it.
//!
//! # Rules
//!
//! - Every call is wrapped in `catch_unwind` by the author layer: a panic
//!   becomes a [`PluginError`] of kind [`ErrorKind::PANICKED`].
//! - `describe` must be cheap and side-effect free: no runtime, no network,
//!   no files. The host calls it for every listing.
//! - Logs go to the host as events, never to stdout or the plugin's own
//!   `tracing` dispatcher (which the host cannot see). Secrets never go anywhere.
//! - Libraries are never unloaded.
//!
//! # Versions and the one growth rule
//!
//! This crate has its own version, independent of kiln's. Its minor version
//! (while `0.x`; its major after) is the ABI, written into every plugin's
//! library header as [`ABI_VERSION`]; its full version is the protocol
//! version both sides send in their [`Hello`]. kiln loads a plugin built
//! against any release with the same ABI version, older or newer, and
//! refuses any other with a message naming both versions and what to do.
//!
//! **The growth rule.** A patch release changes only the protocol, and only
//! by adding: a field with a default (`#[serde(default)]`, so an older side
//! that omits it and a newer side that sends more both read), a method or
//! an enumeration value (an older side answers `unsupported` or reads
//! "unknown"), or a [`feature`] name, which a side lists in its
//! [`ProtocolInfo`] when it implements the addition and which the other side
//! checks before relying on it. Anything else (removing or renaming a
//! field, changing its meaning, any edit of [`abi`], which
//! `tests/layout.txt` pins) is a new minor version while `0.x`, a new major
//! after.
#![deny(missing_docs)]

pub use abi_stable;

pub mod abi;
pub mod client;
pub mod protocol;

#[cfg(feature = "author")]
pub mod author;
#[cfg(feature = "author")]
pub mod testing;

pub use abi::{
    Component, ComponentBox, Component_TO, Host, HostBox, Host_TO, PluginModule, PluginModuleRef,
    ABI_VERSION, PLUGIN_API_VERSION,
};
pub use protocol::{
    capability, feature, method, BuildContext, BuildOutput, BuildRequest, BuildSecret, CacheSpec,
    Capability, ComponentType, ContextFile, ErrorKind, Event, Existence, FlavorDescriptor, Hello,
    ImageExistence, Level, OutputSpec, PartyInfo, PluginError, ProtocolInfo, RegistryAuth,
};
