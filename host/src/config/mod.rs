//! Component config: validation against a flavor's JSON Schema, secret
//! fields (masking and `${env:NAME}` references), and `--set`/`--unset` edits.
//!
//! All of this runs in the host, before anything is constructed.

mod edit;
mod schema;
mod secrets;

pub use edit::{apply_set, apply_set_typed, apply_unset, parse_config_document};
pub use schema::{validate_component, CompiledSchema};
pub use secrets::{is_env_reference, mask, resolve_references, SecretPointers, MASK};

use serde_json::{Map, Value};

/// `Value::pointer_mut` for a config object: `/a/b` addresses `config["a"]["b"]`.
pub(crate) fn pointer_mut<'a>(
    config: &'a mut Map<String, Value>,
    pointer: &str,
) -> Option<&'a mut Value> {
    let rest = pointer.strip_prefix('/')?;
    let (first, tail) = match rest.split_once('/') {
        Some((first, tail)) => (first, Some(tail)),
        None => (rest, None),
    };
    let child = config.get_mut(&first.replace("~1", "/").replace("~0", "~"))?;
    match tail {
        Some(tail) => child.pointer_mut(&format!("/{tail}")),
        None => Some(child),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointer_mut_addresses_nested_and_escaped_keys() {
        let mut m = json!({"a": {"b/c": {"d~e": 1}}, "x": 2})
            .as_object()
            .cloned()
            .expect("object");
        assert_eq!(pointer_mut(&mut m, "/x"), Some(&mut json!(2)));
        *pointer_mut(&mut m, "/a/b~1c/d~0e").expect("nested") = json!(3);
        assert_eq!(m["a"]["b/c"]["d~e"], json!(3));
        assert!(pointer_mut(&mut m, "/missing").is_none());
        assert!(pointer_mut(&mut m, "x").is_none());
        assert!(pointer_mut(&mut m, "/x/y").is_none());
    }
}
