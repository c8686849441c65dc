//! kiln's daemonless builder, flavor `oci` (in progress).
//!
//! So far: the Dockerfile front end ([`dockerfile`]): parser directives,
//! the escape character, line continuations, comments inside continuations,
//! JSON and shell forms, instruction flags, variable substitution, and the
//! check that refuses `RUN` before any work is done; builds of stages from
//! `scratch` with `COPY`/`ADD` of local files and the metadata instructions
//! ([`build`]); reproducible OCI images and archives that `docker load` and
//! `skopeo` read ([`image`]). Not yet a plugin.

pub mod build;
pub mod dockerfile;
pub mod image;

pub mod plugin;
