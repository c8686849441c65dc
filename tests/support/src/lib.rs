//! kiln's test support, shared by the host's integration tests and the
//! plugins' tests (cargo's `cargo-test-support`, nushell's
//! `nu-plugin-test-support`):
//!
//! - [`fixtures`]: the fixture and shipped plugins, built once per run;
//! - [`project`]: a throw-away project and the real `kiln` binary in it,
//!   and [`Run`], what one run printed and returned;
//! - [`kiln`]: [`KilnCmd`], a command built up by name;
//! - [`tree`]: files to work on;
//! - [`mod@docker`]: the Docker Engine and tools end-to-end tests need;
//! - [`registry`]: a real registry on 127.0.0.1.

#![allow(clippy::disallowed_methods)] // Tests read CI, CARGO and PATH where they need them.

pub mod docker;
pub mod fixtures;
pub mod kiln;
pub mod project;
pub mod registry;
pub mod tree;

pub use docker::{daemon_and, docker, unique, Untag};
pub use fixtures::{compat_fixture, fixture, shipped_plugin};
pub use kiln::KilnCmd;
pub use project::{kiln_exe, Run, TestProject};
pub use registry::TestRegistry;
pub use tree::write;
