//! `--set key=value`, `--unset key` and `--config FILE` applied to a config.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parse a `--config` document: a JSON object. `source` names it in errors.
pub fn parse_config_document(text: &str, source: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Error::BadArgument(format!(
            "--config {source}: expected a JSON object, found {}",
            kind_of(&other)
        ))),
        Err(e) => Err(Error::BadArgument(format!(
            "--config {source}: not valid JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The deepest key path `--set` takes (no config nests deeper; a longer
/// one is a mistake, or an attempt to exhaust the stack).
const MAX_KEY_PARTS: usize = 32;

fn split_key(key: &str, arg: &str) -> Result<Vec<String>> {
    if key.split('.').count() > MAX_KEY_PARTS {
        return Err(Error::BadArgument(format!(
            "{arg}: the key has more than {MAX_KEY_PARTS} parts"
        )));
    }
    let parts: Vec<String> = key.split('.').map(str::to_owned).collect();
    if parts.iter().any(String::is_empty) {
        return Err(Error::BadArgument(format!(
            "{arg}: {key:?} is not a key path (keys separated by '.', none empty)"
        )));
    }
    Ok(parts)
}

/// The JSON types the schema node at `path` allows (following `properties`,
/// local `$ref`s and `anyOf`/`oneOf`/`allOf` branches); `None` when it
/// does not say.
fn types_at(root: &Value, node: &Value, path: &[String], depth: usize) -> Option<Vec<String>> {
    if depth > 64 {
        return None;
    }
    let node = match node.get("$ref").and_then(Value::as_str) {
        Some(r) if r.starts_with('#') => root.pointer(&r[1..]).unwrap_or(node),
        _ => node,
    };
    let mut found: Option<Vec<String>> = None;
    let mut add = |types: Vec<String>| found.get_or_insert_with(Vec::new).extend(types);
    for key in ["anyOf", "oneOf", "allOf"] {
        for branch in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = types_at(root, branch, path, depth + 1) {
                add(t);
            }
        }
    }
    match path.split_first() {
        Some((first, rest)) => {
            if let Some(child) = node.get("properties").and_then(|p| p.get(first)) {
                if let Some(t) = types_at(root, child, rest, depth + 1) {
                    add(t);
                }
            }
        }
        None => match node.get("type") {
            Some(Value::String(t)) => add(vec![t.clone()]),
            Some(Value::Array(list)) => add(list
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()),
            _ => {}
        },
    }
    found
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Apply one `--set key=value`. The value is parsed as JSON when it parses,
/// else taken as a string; `a.b=1` sets a nested key. With the flavor's
/// `schema`, a value the schema wants as a string stays one
/// (`--set token=123456` is the string `"123456"` for a string field).
pub fn apply_set_typed(
    config: &mut Map<String, Value>,
    assignment: &str,
    schema: &Value,
) -> Result<()> {
    apply(config, assignment, Some(schema))
}

/// [`apply_set_typed`] without a schema: JSON when it parses.
pub fn apply_set(config: &mut Map<String, Value>, assignment: &str) -> Result<()> {
    apply(config, assignment, None)
}

fn apply(config: &mut Map<String, Value>, assignment: &str, schema: Option<&Value>) -> Result<()> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        // Not echoed: an argument without `=` may be a mistyped secret
        // (`--set 'password hunter2'`).
        Error::BadArgument(format!(
            "--set: expected KEY=VALUE, got an argument of {} characters without '=' (not \
                 shown: it may hold a secret)",
            assignment.chars().count()
        ))
    })?;
    let path = split_key(key, "--set")?;
    let mut value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    if let Some(types) = schema.and_then(|s| types_at(s, s, &path, 0)) {
        let t = json_type(&value);
        let allowed = types
            .iter()
            .any(|a| a == t || (a == "number" && t == "integer"));
        if !allowed && types.iter().any(|a| a == "string") {
            value = Value::String(raw.to_owned());
        }
    }
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| Error::BadArgument("--set: empty key".into()))?;
    let mut map = config;
    for (i, part) in parents.iter().enumerate() {
        let slot = map
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        map = slot.as_object_mut().ok_or_else(|| {
            Error::BadArgument(format!(
                "--set {key}: {} is not an object",
                path[..=i].join(".")
            ))
        })?;
    }
    map.insert(last.clone(), value);
    Ok(())
}

/// Apply one `--unset key`; the key must be set.
pub fn apply_unset(config: &mut Map<String, Value>, key: &str) -> Result<()> {
    let path = split_key(key, "--unset")?;
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| Error::BadArgument("--unset: empty key".into()))?;
    let mut map = config;
    for part in parents {
        map = match map.get_mut(part).and_then(Value::as_object_mut) {
            Some(m) => m,
            None => return Err(Error::BadArgument(format!("--unset {key}: not set"))),
        };
    }
    map.remove(last)
        .map(drop)
        .ok_or_else(|| Error::BadArgument(format!("--unset {key}: not set")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_follows_the_schemas_types_and_refuses_deep_keys() {
        let schema = json!({
            "type": "object",
            "properties": {
                "token": {"type": ["string", "null"], "writeOnly": true},
                "count": {"type": "integer"},
                "either": {"anyOf": [{"type": "string"}, {"type": "boolean"}]},
                "nested": {"$ref": "#/$defs/N"}
            },
            "$defs": {"N": {"type": "object", "properties": {"port": {"type": "string"}}}}
        });
        let mut c = Map::new();
        for a in ["token=123456", "count=7", "either=true", "nested.port=5000"] {
            apply_set_typed(&mut c, a, &schema).expect("set");
        }
        assert_eq!(
            Value::Object(c),
            json!({"token": "123456", "count": 7, "either": true, "nested": {"port": "5000"}})
        );
        let deep = format!("{}=1", vec!["a"; 33].join("."));
        let err = apply_set(&mut Map::new(), &deep).expect_err("deep");
        assert!(err.to_string().contains("more than 32 parts"), "{err}");
        let err = apply_set(&mut Map::new(), "password hunter2").expect_err("no =");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn set_parses_json_else_string() {
        let mut m = Map::new();
        for a in [
            "n=5",
            "b=true",
            "s=hello",
            "q=\"5\"",
            "o.x=[1,2]",
            "u=${env:X}",
            "e=",
        ] {
            apply_set(&mut m, a).expect(a);
        }
        assert_eq!(
            Value::Object(m),
            json!({"n": 5, "b": true, "s": "hello", "q": "5", "o": {"x": [1, 2]}, "u": "${env:X}", "e": ""})
        );
    }

    #[test]
    fn set_and_unset_errors_name_the_argument() {
        let mut m = Map::new();
        assert!(apply_set(&mut m, "novalue")
            .expect_err("no =")
            .to_string()
            .contains("KEY=VALUE"));
        apply_set(&mut m, "a=1").expect("set");
        assert!(apply_set(&mut m, "a.b=1")
            .expect_err("not object")
            .to_string()
            .contains("a is not an object"));
        assert!(apply_set(&mut m, "a..b=1").is_err());
        assert!(apply_unset(&mut m, "zz")
            .expect_err("unset")
            .to_string()
            .contains("--unset zz: not set"));
        apply_unset(&mut m, "a").expect("unset");
        assert!(m.is_empty());
    }

    #[test]
    fn config_document_must_be_an_object() {
        assert!(parse_config_document("[1]", "f.json")
            .expect_err("array")
            .to_string()
            .contains("expected a JSON object, found an array"));
        assert!(parse_config_document("{", "-")
            .expect_err("bad")
            .to_string()
            .contains("--config -: not valid JSON"));
        assert_eq!(
            parse_config_document("{\"a\":1}", "f").expect("ok")["a"],
            json!(1)
        );
    }
}
