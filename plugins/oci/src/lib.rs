//! kiln's daemonless builder, flavor `oci`.
//!
//! - [`dockerfile`]: the Dockerfile front end (parser directives, the escape
//!   character, continuations, JSON and shell forms, flags, variable
//!   substitution) and the check that refuses `RUN` before any work.
//! - [`build`]: carrying the instructions out into layers and a config.
//! - [`base`]: base images from a registry or an OCI layout.
//! - [`engine`]: base images from the local Docker Engine, when it has them.
//! - [`image`]: reproducible layers (compressed on every core), config,
//!   manifest, and an archive that `docker load` and `skopeo` read.
//! - [`store`]: the layer and blob cache that makes rebuilds cheap.
//! - [`tree`]: file trees read from tar archives without copying.
//! - [`push`]: pushing over the distribution API.
//! - [`plugin`]: the flavor kiln loads.

pub mod base;
pub mod build;
pub mod dockerfile;
pub mod engine;
pub mod image;
pub mod plugin;
pub mod push;
pub mod store;
pub mod tree;
