//! kiln's daemonless builder, flavor `oci`.
//!
//! - [`dockerfile`]: the Dockerfile front end, kiln's one parser
//!   (`crates/dockerfile`, shared with the host's builder choice).
//! - [`dispatch`]: carrying the instructions out into layers and a config:
//!   the stage loop, one function per instruction, `COPY`/`ADD`
//!   (`dispatch/copy.rs`), layers and their cache (`dispatch/layers.rs`).
//! - [`context`]: the host's context archive, indexed (files are ranges of it).
//! - [`data`]: bytes in memory or a range of a file, read in chunks.
//! - [`error`]: a build failure, naming the Dockerfile line.
//! - [`sources`]: where bases come from: a registry, an OCI layout, the
//!   local Docker Engine.
//! - [`outputs`]: where images go: a registry, an archive, a filesystem.
//! - [`meter`]: byte progress of pulls and pushes, for the host's bars.
//! - [`image`]: reproducible layers (compressed on every core), config,
//!   manifest, and an archive that `docker load` and `skopeo` read.
//! - [`instructions`]: one typed value per instruction, flags parsed and
//!   validated once for the whole file.
//! - [`stages`]: `FROM` parsed once, and the stages a target needs.
//! - [`store`]: the layer and blob cache that makes rebuilds cheap.
//! - [`registry_cache`]: that cache shared through a registry
//!   (`--cache-to`/`--cache-from`).
//! - [`fs`]: the image filesystem: trees read from tar archives without
//!   copying, layers applied with whiteouts, and `filepath.Match` globs.
//! - [`plugin`]: the flavor kiln loads.

pub mod context;
pub mod data;
pub mod dispatch;
pub use kiln_dockerfile as dockerfile;
pub mod error;
pub mod fs;
pub mod image;
pub mod instructions;
pub mod meter;
pub mod outputs;
pub mod plugin;
pub mod registry_cache;
pub mod runtime;
pub mod sources;
pub mod stages;
pub mod store;
