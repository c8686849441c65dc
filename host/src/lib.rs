//! The kiln host library: plugin discovery and loading, config validation,
//! project state, and the command layer the `kiln` binary calls.
//!
//! Modules, each owning one concern:
//! - `plugins`: where plugins are searched, how each library is opened and
//!   checked against the plugin-api, and the catalog of flavors (describe stage);
//! - `config`: validating a component's config against its flavor's schema,
//!   secret fields, `--set`/`--unset` edits (validate stage);
//! - `state`: the `.kiln/` project folder, atomic writes, the component store;
//! - `context`: the build context (Docker's ignore rules, deterministic archive,
//!   artifact store upload);
//! - `cache`: kiln's cache folder kept in bounds (`kiln cache du|prune`,
//!   `KILN_CACHE_MAX` after each build);
//! - `cli`: commands over the above; `output`: everything printed.

pub mod build;
pub mod cache;
pub mod cli;
pub mod components;
pub mod config;
pub mod context;
mod error;
pub mod output;
pub mod plugins;
pub mod session;
pub mod state;

pub use error::{exit, Error, Result};
