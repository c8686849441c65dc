//! Component config: validation against a flavor's JSON Schema, secret
//! fields (masking and `${env:NAME}` references), and `--set`/`--unset` edits.
//!
//! All of this runs in the host, before anything is constructed.

mod edit;
mod schema;
mod secrets;

pub use edit::{apply_set, apply_unset, parse_config_document};
pub use schema::{validate_component, CompiledSchema};
pub use secrets::{is_env_reference, mask, resolve_references, SecretPointers, MASK};
