//! `kiln component ...`: named components with validated config (stage 2).
//! Plugins are loaded to read schemas; nothing is constructed.

use std::{fs, io::Read, path::Path};

use kiln_plugin_api::ComponentType;
use serde_json::{json, Map, Value};

use super::args::{ComponentCommand, ConfigEdits};
use crate::{
    config::{apply_set_typed, apply_unset, mask, parse_config_document, validate_component},
    error::{exit, Error, Result},
    output,
    plugins::Catalog,
    session::Session,
    state::{Component, ComponentStore},
};

pub(crate) fn run(session: &Session<'_>, cmd: ComponentCommand) -> Result<i32> {
    let project = session.require_project()?;
    let store = ComponentStore::new(&project);
    match cmd {
        ComponentCommand::Register {
            name,
            component_type,
            flavor,
            edits,
            config,
        } => register(
            session,
            &store,
            &name,
            component_type.into(),
            &flavor,
            &edits,
            config.as_deref(),
        ),
        ComponentCommand::List {
            component_type,
            json,
        } => list(&store, component_type.map(Into::into), json),
        ComponentCommand::Describe { name, json } => describe(&store, &name, json),
        ComponentCommand::Update { name, edits, unset } => {
            update(session, &store, &name, &edits, &unset)
        }
        ComponentCommand::Rename { old, new } => {
            check_name(&new)?;
            store.transaction(|s| s.rename(&old, &new))?;
            output::result(&format!("renamed component {old:?} to {new:?}"));
            Ok(exit::OK)
        }
        ComponentCommand::Delete { name } => {
            let c = store.transaction(|s| s.remove(&name))?;
            output::result(&format!("deleted {} component {name:?}", c.component_type));
            Ok(exit::OK)
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("use 1 to 64 characters");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return bad("use letters, digits, '.', '_' and '-' only");
    }
    Ok(())
}

fn read_config_file(session: &Session<'_>, path: &Path) -> Result<Map<String, Value>> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::io("reading", "standard input", e))?;
        return parse_config_document(&text, "-");
    }
    let full = session.env.cwd.join(path);
    let text = fs::read_to_string(&full).map_err(|e| Error::io("reading", &full, e))?;
    parse_config_document(&text, &path.display().to_string())
}

fn warn_literal_secrets(name: &str, pointers: &[String]) {
    for p in pointers {
        output::warn(&format!(
            "component {name:?}: secret {p} is stored as a literal in .kiln/secrets.json (mode 0600); \
             prefer a reference such as ${{env:NAME}}, resolved only when the component is used"
        ));
    }
}

fn register(
    session: &Session<'_>,
    store: &ComponentStore,
    name: &str,
    t: ComponentType,
    flavor_name: &str,
    edits: &ConfigEdits,
    config_file: Option<&Path>,
) -> Result<i32> {
    check_name(name)?;
    let catalog: Catalog = session.catalog();
    let flavor = catalog.find(Some(t), flavor_name)?;
    let schema = flavor.schema()?;
    let mut config = match config_file {
        Some(p) => read_config_file(session, p)?,
        None => Map::new(),
    };
    for s in &edits.set {
        apply_set_typed(&mut config, s, schema.raw())?;
    }
    validate_component(name, t.as_str(), flavor_name, &schema, &config)?;
    let literal = store.transaction(|state| {
        if state.components().contains_key(name) {
            return Err(Error::ComponentExists(name.to_owned()));
        }
        Ok(state.put(name, t.as_str(), flavor_name, config, schema.secrets()))
    })?;
    warn_literal_secrets(name, &literal);
    output::result(&format!(
        "registered {t} component {name:?} (flavor {flavor_name})"
    ));
    Ok(exit::OK)
}

fn update(
    session: &Session<'_>,
    store: &ComponentStore,
    name: &str,
    edits: &ConfigEdits,
    unset: &[String],
) -> Result<i32> {
    // Resolve the flavor before taking the lock: loading plugins can be slow.
    let current = store.read()?.get(name)?.clone();
    let t =
        ComponentType::from_name(&current.component_type).ok_or_else(|| Error::CorruptState {
            path: store.components_path(),
            message: format!(
                "component {name:?} has unknown type {:?}",
                current.component_type
            ),
        })?;
    let catalog = session.catalog();
    let flavor = catalog.find(Some(t), &current.flavor)?;
    let schema = flavor.schema()?;
    let literal = store.transaction(|state| {
        let stored = state.get(name)?.clone();
        let mut config = state.full_config(name)?;
        for k in unset {
            apply_unset(&mut config, k)?;
        }
        for s in &edits.set {
            apply_set_typed(&mut config, s, schema.raw())?;
        }
        validate_component(
            name,
            &stored.component_type,
            &stored.flavor,
            &schema,
            &config,
        )?;
        Ok(state.put(
            name,
            &stored.component_type,
            &stored.flavor,
            config,
            schema.secrets(),
        ))
    })?;
    // Only warn for secrets this update set, not ones stored before.
    let changed: Vec<String> = literal
        .into_iter()
        .filter(|p| edits.set.iter().any(|s| set_targets(s, p)))
        .collect();
    warn_literal_secrets(name, &changed);
    output::result(&format!("updated component {name:?}"));
    Ok(exit::OK)
}

fn set_targets(assignment: &str, pointer: &str) -> bool {
    let key = assignment.split_once('=').map_or(assignment, |(k, _)| k);
    format!("/{}", key.replace('.', "/")) == pointer
}

fn component_json(name: &str, c: &Component) -> Value {
    json!({
        "name": name,
        "type": c.component_type,
        "flavor": c.flavor,
        "config": mask(&c.config),
    })
}

fn list(store: &ComponentStore, t: Option<ComponentType>, as_json: bool) -> Result<i32> {
    let state = store.read()?;
    let selected: Vec<(&String, &Component)> = state
        .components()
        .iter()
        .filter(|(_, c)| t.is_none_or(|t| c.component_type == t.as_str()))
        .collect();
    if as_json {
        output::json(&json!({
            "components": selected.iter().map(|(n, c)| component_json(n, c)).collect::<Vec<_>>()
        }));
        return Ok(exit::OK);
    }
    if selected.is_empty() {
        output::status("no components registered; `kiln component register` adds one");
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = selected
        .iter()
        .map(|(n, c)| {
            vec![
                (*n).clone(),
                c.component_type.clone(),
                c.flavor.clone(),
                Value::Object(mask(&c.config)).to_string(),
            ]
        })
        .collect();
    output::result(&output::table(&["NAME", "TYPE", "FLAVOR", "CONFIG"], &rows));
    Ok(exit::OK)
}

fn describe(store: &ComponentStore, name: &str, as_json: bool) -> Result<i32> {
    let state = store.read()?;
    let c = state.get(name)?;
    if as_json {
        output::json(&component_json(name, c));
        return Ok(exit::OK);
    }
    let config = serde_json::to_string_pretty(&Value::Object(mask(&c.config))).unwrap_or_default();
    output::result(&format!(
        "name:    {name}\ntype:    {}\nflavor:  {}\nconfig:\n{config}",
        c.component_type, c.flavor
    ));
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names() {
        for ok in ["a", "ci-builder", "reg_1.prod", "9x"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
