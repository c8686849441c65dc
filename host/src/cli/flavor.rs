//! `kiln flavor list|describe`: the describe stage only; nothing is constructed.

use kiln_plugin_api::ComponentType;
use serde_json::{json, Value};

use super::args::FlavorCommand;
use crate::session::Session;
use crate::{
    error::{exit, Error, Result},
    output,
    plugins::Problem,
};

pub(crate) fn run(session: &Session<'_>, cmd: FlavorCommand) -> Result<i32> {
    match cmd {
        FlavorCommand::List {
            component_type,
            json,
            strict,
        } => list(session, component_type.map(Into::into), json, strict),
        FlavorCommand::Describe {
            flavor,
            component_type,
            json,
        } => describe(session, &flavor, component_type.map(Into::into), json),
        FlavorCommand::Validate {
            flavor,
            component_type,
            config,
            json,
        } => validate(
            session,
            &flavor,
            component_type.map(Into::into),
            &config,
            json,
        ),
    }
}

/// `kiln flavor validate`: the schema's problems with `config`, as
/// `component register` reports them; nothing is constructed or stored.
fn validate(
    session: &Session<'_>,
    name: &str,
    t: Option<ComponentType>,
    config: &str,
    as_json: bool,
) -> Result<i32> {
    let config = crate::build::options::json_object("--config", config)?;
    let catalog = session.catalog();
    let flavor = catalog.find(t, name)?;
    let problems = flavor.schema()?.problems(&config);
    let kind = flavor.component_type();
    if as_json {
        output::json(&json!({
            "flavor": flavor.name(),
            "type": kind.as_str(),
            "valid": problems.is_empty(),
            "problems": problems,
        }));
    } else if problems.is_empty() {
        output::result(&format!(
            "valid config for flavor {}/{}",
            kind.as_str(),
            flavor.name()
        ));
    } else {
        output::status(&format!(
            "invalid config for flavor {}/{}:",
            kind.as_str(),
            flavor.name()
        ));
        for p in &problems {
            output::status(&format!("  {p}"));
        }
    }
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::USAGE
    })
}

fn list(
    session: &Session<'_>,
    t: Option<ComponentType>,
    as_json: bool,
    strict: bool,
) -> Result<i32> {
    let catalog = session.catalog();
    if catalog.flavors.is_empty() && catalog.problems.is_empty() {
        let looked: Vec<String> = session
            .plugin_dirs()
            .iter()
            .map(|d| format!("{} ({})", d.path.display(), d.origin))
            .collect();
        output::warn(&format!(
            "no plugins found; kiln looked in: {}. Add plugins with `kiln plugin install \
             FILE`, `--plugins-dir DIR` or KILN_PLUGINS_DIR (`kiln plugin dirs` lists the \
             search order)",
            looked.join(", ")
        ));
    }
    let mut flavors: Vec<_> = catalog.of_type(t).collect();
    flavors.sort_by(|a, b| (a.component_type(), a.name()).cmp(&(b.component_type(), b.name())));
    if as_json {
        output::json(&json!({
            "flavors": flavors.iter().map(|f| f.summary_json()).collect::<Vec<_>>(),
            "problems": catalog.problems,
        }));
    } else {
        if !flavors.is_empty() {
            let rows: Vec<Vec<String>> = flavors
                .iter()
                .map(|f| {
                    vec![
                        f.component_type().to_string(),
                        f.name().to_owned(),
                        f.plugin.name.clone(),
                        f.descriptor.description.to_string(),
                    ]
                })
                .collect();
            output::result(&output::table(
                &["TYPE", "FLAVOR", "PLUGIN", "DESCRIPTION"],
                &rows,
            ));
        }
        report_problems(&catalog.problems);
    }
    if strict && !catalog.problems.is_empty() {
        return Err(Error::PluginProblems {
            count: catalog.problems.len(),
        });
    }
    Ok(exit::OK)
}

pub(crate) fn report_problems(problems: &[Problem]) {
    if problems.is_empty() {
        return;
    }
    output::warn(&format!(
        "{} plugin file(s) could not be used:",
        problems.len()
    ));
    for p in problems {
        output::status(&format!("  {}: {}", p.path.display(), p.reason));
    }
}

fn describe(
    session: &Session<'_>,
    name: &str,
    t: Option<ComponentType>,
    as_json: bool,
) -> Result<i32> {
    let catalog = session.catalog();
    let flavor = catalog.find(t, name)?;
    let d = &flavor.descriptor;
    let compiled = flavor.schema()?;
    let secrets: Vec<&String> = compiled.secrets().iter().collect();
    if as_json {
        let mut v = flavor.summary_json();
        if let Value::Object(m) = &mut v {
            m.insert("config_schema".into(), compiled.raw().clone());
            m.insert("secret_fields".into(), json!(secrets));
        }
        output::json(&v);
        return Ok(exit::OK);
    }
    let mut text = String::new();
    let mut field = |k: &str, v: &str| {
        if !v.is_empty() {
            text.push_str(&format!("{k:<13} {v}\n"));
        }
    };
    field("flavor:", d.name.as_str());
    field("type:", d.component_type.as_str());
    field("description:", d.description.as_str());
    field(
        "plugin:",
        &format!(
            "{} {} ({})",
            flavor.plugin.name,
            flavor.plugin.version,
            flavor.plugin.path.display()
        ),
    );
    field("plugin-api:", &flavor.plugin.api_version);
    field("features:", &flavor.plugin.features.join(", "));
    field("docs:", d.docs_url.as_str());
    field("sdk docs:", d.sdk_docs_url.as_str());
    field("logo:", d.logo_url.as_str());
    let caps: Vec<&str> = d.capabilities.iter().map(|c| c.as_str()).collect();
    field("capabilities:", &caps.join(", "));
    let secret_list: Vec<&str> = secrets.iter().map(|s| s.as_str()).collect();
    field("secrets:", &secret_list.join(", "));
    text.push_str("config schema:\n");
    text.push_str(&serde_json::to_string_pretty(compiled.raw()).unwrap_or_default());
    output::result(&text);
    Ok(exit::OK)
}
