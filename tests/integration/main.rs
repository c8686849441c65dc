//! kiln's integration tests: the real `kiln` binary against real plugin
//! libraries (the fixtures under `tests/fixtures/`, built by the harness).
//! This file is the index; each module is one area.

#![allow(clippy::disallowed_methods)] // Tests read CI, CARGO and PATH where they need them.

/// `kiln build` with the Docker Engine builder (`local`) and fixture builders.
mod build;
/// `kiln build --dry-run`: the plan, snapshotted; flags refused up front.
mod build_plan;
/// Plugins built against the frozen first release and a newer protocol.
mod compat;
/// Project discovery and component register/update/rename/delete, secrets, state.
mod components;
/// `kiln context`: Docker's ignore rules, the archive, the artifact store.
mod context;
/// The build context compared with the real Docker CLI's.
mod docker_cli;
/// `kiln flavor list` and `describe`.
mod flavors;
/// The instantiate stage in-process: construct, build, push through the ABI.
mod instantiate;
/// The daemonless `oci` builder: bases, COPY, multi-stage, push, reproducibility.
mod oci;
/// Plugin search order, `plugin check`, `plugin install`.
mod plugins;
/// Registries: membership, existence checks, skips, pushes, retries.
mod registry;
mod registry_faults;
/// RUN in the daemonless builder through an OCI runtime.
mod run;
/// What users read, pinned: `--help` texts and the shipped flavor schemas.
mod snapshots;
/// Shared helpers: projects, fixtures, the `kiln` runner, registries, Docker.
mod util;
