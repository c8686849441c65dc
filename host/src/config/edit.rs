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

fn split_key(key: &str, arg: &str) -> Result<Vec<String>> {
    let parts: Vec<String> = key.split('.').map(str::to_owned).collect();
    if parts.iter().any(String::is_empty) {
        return Err(Error::BadArgument(format!(
            "{arg}: {key:?} is not a key path (keys separated by '.', none empty)"
        )));
    }
    Ok(parts)
}

/// Apply one `--set key=value`. The value is parsed as JSON when it parses,
/// else taken as a string; `a.b=1` sets a nested key.
pub fn apply_set(config: &mut Map<String, Value>, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| Error::BadArgument(format!("--set {assignment:?}: expected key=value")))?;
    let path = split_key(key, "--set")?;
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
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
            .contains("key=value"));
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
