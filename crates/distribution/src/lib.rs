//! Image names and the OCI distribution API (registry HTTP API v2), as kiln
//! uses them.
//!
//! Not a plugin: a library the host (names, platforms) and the plugins (the
//! `default` registry's existence checks, the `oci` builder's pulls and
//! pushes) share, so each concept has one copy.
//!
//! - [`names`]: splitting an image reference, registry addresses, image
//!   membership by Docker's reference grammar, the loopback rule.
//! - [`engine`]: where the local Docker Engine listens (`DOCKER_HOST`).
//! - [`platform`]: `os/arch[/variant]`, parsed, matched and named once.
//! - `dockercfg` (feature `client`): credentials from Docker's own config,
//!   as the CLI reads it.
//! - `manifest` (feature `client`): indexes, their entry for a platform,
//!   descriptors' digests.
//! - `client` (feature `client`): one registry's HTTP client: Basic and
//!   Bearer auth from the `WWW-Authenticate` challenge (reused across calls),
//!   bounded retries of 429 and 5xx with a configurable backoff, manifest and
//!   blob calls, monolithic blob uploads.

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod dockercfg;
pub mod engine;
#[cfg(feature = "client")]
pub mod manifest;
pub mod names;
pub mod platform;

#[cfg(feature = "client")]
pub use client::{
    sha256, CallError, Credentials, Manifest, Outcome, RegistryClient, Retry, MANIFEST_TYPES,
};
pub use names::{is_loopback, split_tag, RegistryUri};
pub use platform::Platform;
