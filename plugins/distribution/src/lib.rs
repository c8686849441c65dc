//! The OCI distribution API (registry HTTP API v2) as kiln's plugins use it.
//!
//! Not a plugin: a library that the `default` registry (existence checks)
//! and the `oci` builder (pulling base images, pushing blobs and manifests)
//! share, so both negotiate auth the same way.
//!
//! - [`names`]: registry URIs and image membership by Docker's reference
//!   grammar; which hosts get plain HTTP.
//! - [`dockercfg`]: credentials from Docker's own config, as the CLI reads it.
//! - [`client`]: one registry's HTTP client: Basic and Bearer auth from the
//!   `WWW-Authenticate` challenge (reused across calls), bounded retries of
//!   429 and 5xx, manifest and blob calls, monolithic blob uploads.

pub mod client;
pub mod dockercfg;
pub mod names;

pub use client::{
    sha256, CallError, Credentials, Manifest, Outcome, RegistryClient, MANIFEST_TYPES,
};
