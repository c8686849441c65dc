//! kiln's daemonless builder, flavor `oci` (in progress).
//!
//! So far: the Dockerfile front end ([`dockerfile`]), following BuildKit's
//! parser rules (parser directives, the escape character, line
//! continuations, comments inside continuations, JSON and shell forms,
//! instruction flags) and its variable substitution, with the check that
//! refuses instructions needing a container runtime (`RUN`) before any work
//! is done.

pub mod dockerfile;
pub mod image;
