//! kiln's daemonless builder, flavor `oci`.
//!
//! - [`dockerfile`]: the Dockerfile front end, kiln's one parser
//!   (`crates/dockerfile`, shared with the host's builder choice).
//! - [`dispatch`]: carrying the instructions out into layers and a config:
//!   the stage loop, one function per instruction, `COPY`/`ADD`
//!   (`dispatch/copy.rs`), layers and their cache (`dispatch/layers.rs`).
//! - [`context`]: the host's context archive, mapped and indexed.
//! - [`error`]: a build failure, naming the Dockerfile line.
//! - [`base`]: base images from a registry or an OCI layout.
//! - [`engine`]: base images from the local Docker Engine, when it has them.
//! - [`image`]: reproducible layers (compressed on every core), config,
//!   manifest, and an archive that `docker load` and `skopeo` read.
//! - [`instructions`]: one typed value per instruction, flags parsed and
//!   validated once for the whole file.
//! - [`stages`]: `FROM` parsed once, and the stages a target needs.
//! - [`store`]: the layer and blob cache that makes rebuilds cheap.
//! - [`fs`]: the image filesystem: trees read from tar archives without
//!   copying, and `filepath.Match` globs.
//! - [`push`]: pushing over the distribution API.
//! - [`plugin`]: the flavor kiln loads.

pub mod base;
pub mod context;
pub mod dispatch;
pub use kiln_dockerfile as dockerfile;
pub mod engine;
pub mod error;
pub mod fs;
pub mod image;
pub mod instructions;
pub mod plugin;
pub mod push;
pub mod stages;
pub mod store;
