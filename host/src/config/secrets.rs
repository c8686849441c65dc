//! Secret fields: which config fields are secret (from the schema), how they
//! are masked, and how `${env:NAME}` references are resolved at instantiation.

use serde_json::{Map, Value};

use crate::{
    error::{Error, Result},
    state::SECRET_MARKER,
};

/// What every secret value is shown as.
pub const MASK: &str = "********";

/// JSON pointers of the secret fields of one flavor's config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretPointers(Vec<String>);

impl From<Vec<String>> for SecretPointers {
    fn from(v: Vec<String>) -> Self {
        Self(v)
    }
}

impl SecretPointers {
    /// Find the secret fields of `schema`: properties with `"writeOnly": true`
    /// or `"x-kiln-secret": true`, following local `$ref`s and
    /// `anyOf`/`oneOf`/`allOf` branches.
    pub fn from_schema(schema: &Value) -> Self {
        let mut out = Vec::new();
        walk(schema, schema, "", &mut out, 0);
        out.sort();
        out.dedup();
        Self(out)
    }

    /// The pointers.
    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }

    /// Whether `pointer` is a secret field or lies inside one.
    pub fn covers(&self, pointer: &str) -> bool {
        self.0
            .iter()
            .any(|p| pointer == p || pointer.starts_with(&format!("{p}/")))
    }
}

fn is_secret(node: &Value) -> bool {
    node.get("writeOnly") == Some(&Value::Bool(true))
        || node.get("x-kiln-secret") == Some(&Value::Bool(true))
}

fn resolve_ref<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) if r.starts_with('#') => root.pointer(&r[1..]).unwrap_or(node),
        _ => node,
    }
}

fn walk(root: &Value, node: &Value, at: &str, out: &mut Vec<String>, depth: usize) {
    if depth > 32 {
        return; // recursive schemas
    }
    let node = resolve_ref(root, node);
    if is_secret(node) && !at.is_empty() {
        out.push(at.to_owned());
        return;
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = node.get(key) {
            for b in branches {
                walk(root, b, at, out, depth + 1);
            }
        }
    }
    if let Some(Value::Object(props)) = node.get("properties") {
        for (name, sub) in props {
            let p = format!("{at}/{}", escape_pointer(name));
            walk(root, sub, &p, out, depth + 1);
        }
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Whether `s` is an `${env:NAME}` reference.
pub fn is_env_reference(s: &str) -> bool {
    env_reference_name(s).is_some()
}

fn env_reference_name(s: &str) -> Option<&str> {
    let name = s.strip_prefix("${env:")?.strip_suffix('}')?;
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    valid.then_some(name)
}

/// A stored config made safe to show: literal secrets (kept in
/// `secrets.json`, stored here as a marker) appear as [`MASK`]; `${env:NAME}`
/// references are shown as they are, as they hold no secret.
pub fn mask(config: &Map<String, Value>) -> Map<String, Value> {
    fn walk(v: &mut Value) {
        match v {
            Value::String(s) if s == SECRET_MARKER => *s = MASK.to_owned(),
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    let mut masked = config.clone();
    masked.values_mut().for_each(walk);
    masked
}

/// Resolve `${env:NAME}` references in secret fields with `env`, for
/// instantiation. A missing variable, or a literal secret whose stored value
/// is gone, is an error naming the component and field.
pub fn resolve_references(
    component: &str,
    config: &Map<String, Value>,
    secrets: &SecretPointers,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Map<String, Value>> {
    let mut resolved = config.clone();
    for p in secrets.iter() {
        let Some(slot) = super::pointer_mut(&mut resolved, p) else {
            continue;
        };
        let Some(s) = slot.as_str() else { continue };
        if s == SECRET_MARKER {
            return Err(Error::Secret {
                component: component.to_owned(),
                pointer: p.clone(),
                message: "the stored secret is missing from .kiln/secrets.json; set it again with `kiln component update --set`".to_owned(),
            });
        }
        if let Some(name) = env_reference_name(s) {
            let value = env(name).ok_or_else(|| Error::Secret {
                component: component.to_owned(),
                pointer: p.clone(),
                message: format!("environment variable {name} is not set"),
            })?;
            *slot = Value::String(value);
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "uri": {"type": "string"},
                "password": {"type": ["string", "null"], "writeOnly": true},
                "auth": {"$ref": "#/$defs/Auth"},
                "choice": {"anyOf": [{"$ref": "#/$defs/Auth"}, {"type": "null"}]}
            },
            "$defs": {"Auth": {"type": "object", "properties": {
                "token": {"type": "string", "x-kiln-secret": true},
                "user": {"type": "string"}
            }}}
        })
    }

    #[test]
    fn finds_secret_fields_through_refs_and_branches() {
        let s = SecretPointers::from_schema(&schema());
        let got: Vec<_> = s.iter().cloned().collect();
        assert_eq!(got, vec!["/auth/token", "/choice/token", "/password"]);
        assert!(s.covers("/auth/token"));
        assert!(!s.covers("/auth/user"));
    }

    #[test]
    fn masks_stored_secrets_but_shows_env_references() {
        let cfg = json!({"uri": "u", "password": SECRET_MARKER, "auth": {"token": "${env:TOK}", "user": "me"}});
        let masked = mask(cfg.as_object().expect("obj"));
        assert_eq!(masked["password"], json!(MASK));
        assert_eq!(masked["auth"]["token"], json!("${env:TOK}"));
        assert_eq!(masked["uri"], json!("u"));
    }

    #[test]
    fn resolves_env_references_and_names_missing_ones() {
        let s = SecretPointers::from_schema(&schema());
        let cfg = json!({"password": "${env:PW}"});
        let got = resolve_references("reg", cfg.as_object().expect("obj"), &s, |n| {
            (n == "PW").then(|| "s3cret".to_owned())
        })
        .expect("resolved");
        assert_eq!(got["password"], json!("s3cret"));
        let err = resolve_references("reg", cfg.as_object().expect("obj"), &s, |_| None)
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "component \"reg\": /password: environment variable PW is not set"
        );
    }

    #[test]
    fn env_reference_syntax() {
        assert!(is_env_reference("${env:A_1}"));
        assert!(!is_env_reference("${env:}"));
        assert!(!is_env_reference("${env:1A}"));
        assert!(!is_env_reference("${env:A-B}"));
        assert!(!is_env_reference("x${env:A}"));
    }
}
