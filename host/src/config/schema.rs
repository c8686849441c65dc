//! Compiling a flavor's config schema and validating configs against it.

use jsonschema::error::ValidationErrorKind;
use serde_json::{Map, Value};

use super::{is_env_reference, SecretPointers};
use crate::error::{Error, Result};

/// A flavor's config schema, compiled once, with its secret fields.
pub struct CompiledSchema {
    raw: Value,
    validator: jsonschema::Validator,
    secrets: SecretPointers,
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("secrets", &self.secrets)
            .finish()
    }
}

impl CompiledSchema {
    /// Parse and compile `schema_json`. Objects that list `properties` but say
    /// nothing of `additionalProperties` are closed: unknown keys are always
    /// rejected, whatever the plugin's schema generator did.
    pub fn compile(schema: &Value) -> std::result::Result<Self, String> {
        let raw = schema.clone();
        let mut strict = raw.clone();
        close_objects(&mut strict, false, 0);
        let validator = jsonschema::validator_for(&strict).map_err(|e| e.to_string())?;
        let secrets = SecretPointers::from_schema(&raw);
        Ok(Self {
            raw,
            validator,
            secrets,
        })
    }

    /// The schema as the plugin published it.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The secret fields.
    pub fn secrets(&self) -> &SecretPointers {
        &self.secrets
    }

    /// One line per problem (`/pointer: message`); empty when valid. Values of
    /// secret fields never appear in the messages.
    pub fn problems(&self, config: &Map<String, Value>) -> Vec<String> {
        let instance = Value::Object(config.clone());
        let known: Vec<&str> = self
            .raw
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for err in self.validator.iter_errors(&instance) {
            let at = err.instance_path().as_str().to_owned();
            if let ValidationErrorKind::AdditionalProperties { unexpected } = err.kind() {
                for key in unexpected {
                    let hint = if at.is_empty() && !known.is_empty() {
                        format!(" (known keys: {})", known.join(", "))
                    } else {
                        String::new()
                    };
                    out.push(format!("{at}/{key}: unknown key{hint}"));
                }
                continue;
            }
            let secret = self.secrets.covers(&at);
            if secret {
                let holds_reference = instance
                    .pointer(&at)
                    .and_then(Value::as_str)
                    .is_some_and(is_env_reference);
                if holds_reference {
                    // Checked when the reference is resolved, not here.
                    continue;
                }
                out.push(format!(
                    "{}: {} (secret, value hidden)",
                    display_pointer(&at),
                    err.masked()
                ));
            } else {
                // Credentials written into an address are never echoed.
                let message = kiln_distribution::names::redact_userinfo(&err.to_string());
                out.push(format!("{}: {message}", display_pointer(&at)));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn display_pointer(p: &str) -> &str {
    if p.is_empty() {
        "(root)"
    } else {
        p
    }
}

/// Validate a component's config; the error names the component, each field
/// as a JSON pointer, and what was expected.
pub fn validate_component(
    component: &str,
    component_type: &str,
    flavor: &str,
    schema: &CompiledSchema,
    config: &Map<String, Value>,
) -> Result<()> {
    let mut problems = schema.problems(config);
    // Every registry flavor's config has `uri` (ZenML's
    // BaseContainerRegistryConfig): checked here, at registration, by the
    // one normalisation that later names images in it.
    if component_type == kiln_plugin_api::ComponentType::CONTAINER_REGISTRY.as_str() {
        if let Some(Value::String(uri)) = config.get("uri") {
            if let Err(why) = kiln_distribution::RegistryUri::parse(uri) {
                problems.push(format!("/uri: {why}"));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidConfig {
        component: component.to_owned(),
        component_type: component_type.to_owned(),
        flavor: flavor.to_owned(),
        problems: problems.into_iter().map(|p| format!("  {p}")).collect(),
    })
}

fn close_objects(node: &mut Value, in_all_of: bool, depth: usize) {
    if depth > 64 {
        return;
    }
    let Value::Object(map) = node else { return };
    let composed = ["allOf", "anyOf", "oneOf", "$ref"]
        .iter()
        .any(|k| map.contains_key(*k));
    if !in_all_of
        && !composed
        && map.get("properties").is_some_and(Value::is_object)
        && !map.contains_key("additionalProperties")
        && !map.contains_key("patternProperties")
        && !map.contains_key("unevaluatedProperties")
    {
        map.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
    for key in ["properties", "$defs", "definitions"] {
        if let Some(Value::Object(children)) = map.get_mut(key) {
            for child in children.values_mut() {
                close_objects(child, false, depth + 1);
            }
        }
    }
    if let Some(items) = map.get_mut("items") {
        close_objects(items, false, depth + 1);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = map.get_mut(key) {
            for b in branches {
                close_objects(b, false, depth + 1);
            }
        }
    }
    if let Some(Value::Array(branches)) = map.get_mut("allOf") {
        for b in branches {
            close_objects(b, true, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiled() -> CompiledSchema {
        let schema = json!({
            "type": "object",
            "properties": {
                "uri": {"type": "string", "pattern": "^[a-z0-9.:-]+(/[a-z0-9._-]+)*$"},
                "password": {"type": "string", "writeOnly": true, "minLength": 8},
                "timeout": {"type": "integer", "minimum": 1},
                "nested": {"type": "object", "properties": {"a": {"type": "boolean"}}}
            },
            "required": ["uri"]
        });
        CompiledSchema::compile(&schema).expect("compiles")
    }

    fn cfg(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn names_the_field_and_what_was_expected() {
        let p = compiled().problems(&cfg(json!({"uri": "localhost:5000/", "timeout": 0})));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("/timeout: 0 is less than the minimum of 1"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("/uri: \"localhost:5000/\" does not match"),
            "{p:?}"
        );
    }

    #[test]
    fn rejects_unknown_keys_even_when_the_schema_does_not() {
        let p = compiled().problems(&cfg(json!({"uri": "a", "urii": "b", "nested": {"b": 1}})));
        assert_eq!(
            p,
            vec![
                "/nested/b: unknown key".to_owned(),
                "/urii: unknown key (known keys: uri, password, timeout, nested)".to_owned()
            ]
        );
    }

    #[test]
    fn hides_secret_values_and_skips_references() {
        let p = compiled().problems(&cfg(json!({"uri": "a", "password": "hunter2"})));
        assert_eq!(p.len(), 1);
        assert!(!p[0].contains("hunter2"), "{p:?}");
        assert!(
            p[0].starts_with("/password:") && p[0].contains("value hidden"),
            "{p:?}"
        );
        let p = compiled().problems(&cfg(json!({"uri": "a", "password": "${env:P}"})));
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn missing_required_field_is_reported_at_the_root() {
        let p = compiled().problems(&cfg(json!({})));
        assert_eq!(p, vec!["(root): \"uri\" is a required property".to_owned()]);
    }

    #[test]
    fn a_schema_that_is_not_a_schema_is_refused() {
        assert!(CompiledSchema::compile(&json!({"type": 12})).is_err());
        assert!(CompiledSchema::compile(&json!({"properties": {"a": {"minimum": "x"}}})).is_err());
    }
}
