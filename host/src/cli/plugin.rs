//! `kiln plugin check|install|dirs`.

use std::{fs, path::PathBuf};

use serde_json::json;

use super::{args::PluginCommand, flavor::report_problems};
use crate::session::Session;
use crate::{
    error::{exit, Error, Result},
    output,
    plugins::Catalog,
    state::write_atomic,
};

pub(crate) fn run(session: &Session<'_>, cmd: PluginCommand) -> Result<i32> {
    match cmd {
        PluginCommand::Check { files, json } => check(session, &files, json),
        PluginCommand::Install { files } => install(session, &files),
        PluginCommand::Dirs { json } => dirs(session, json),
        PluginCommand::Trust => set_trust(session, true),
        PluginCommand::Untrust => set_trust(session, false),
    }
}

fn absolute(session: &Session<'_>, files: &[PathBuf]) -> Vec<PathBuf> {
    files.iter().map(|f| session.env.cwd.join(f)).collect()
}

fn check(session: &Session<'_>, files: &[PathBuf], as_json: bool) -> Result<i32> {
    let files = absolute(session, files);
    let catalog = Catalog::from_files(&files);
    if as_json {
        output::json(&json!({
            "flavors": catalog.flavors.iter().map(|f| f.summary_json()).collect::<Vec<_>>(),
            "problems": catalog.problems,
        }));
    } else {
        for file in &files {
            let flavors: Vec<String> = catalog
                .flavors
                .iter()
                .filter(|f| &f.plugin.path == file)
                .map(|f| format!("{}/{}", f.component_type(), f.name()))
                .collect();
            let plugin = catalog
                .flavors
                .iter()
                .find(|f| &f.plugin.path == file)
                .map(|f| &f.plugin);
            if let Some(p) = plugin {
                output::result(&format!(
                    "ok    {}: {} (plugin {} {}, built against plugin-api {})",
                    file.display(),
                    flavors.join(", "),
                    p.name,
                    p.version,
                    p.api_version
                ));
            }
        }
        for p in &catalog.problems {
            output::result(&format!("bad   {}: {}", p.path.display(), p.reason));
        }
    }
    if catalog.problems.is_empty() {
        Ok(exit::OK)
    } else {
        Err(Error::PluginProblems {
            count: catalog.problems.len(),
        })
    }
}

fn install(session: &Session<'_>, files: &[PathBuf]) -> Result<i32> {
    let files = absolute(session, files);
    let catalog = Catalog::from_files(&files);
    if !catalog.problems.is_empty() {
        report_problems(&catalog.problems);
        return Err(Error::PluginProblems {
            count: catalog.problems.len(),
        });
    }
    let dest = session.env.user_plugins_dir.clone().ok_or_else(|| {
        Error::BadArgument("cannot tell the user's data folder (is HOME set?)".into())
    })?;
    fs::create_dir_all(&dest).map_err(|e| Error::io("creating", &dest, e))?;
    for file in &files {
        let name = file
            .file_name()
            .ok_or_else(|| Error::BadArgument(format!("{} names no file", file.display())))?;
        let bytes = fs::read(file).map_err(|e| Error::io("reading", file, e))?;
        let target = dest.join(name);
        write_atomic(&target, &bytes, 0o755)?;
        output::result(&format!(
            "installed {} -> {}",
            file.display(),
            target.display()
        ));
    }
    Ok(exit::OK)
}

fn dirs(session: &Session<'_>, as_json: bool) -> Result<i32> {
    let dirs = session.plugin_dirs();
    if as_json {
        output::json(&json!(dirs
            .iter()
            .map(|d| json!({
                "path": d.path,
                "origin": d.origin.to_string(),
                "exists": d.path.is_dir(),
                "searched": d.refused.is_none(),
                "refused": d.refused,
            }))
            .collect::<Vec<_>>()));
    } else {
        let rows: Vec<Vec<String>> = dirs
            .iter()
            .map(|d| {
                vec![
                    d.origin.to_string(),
                    if d.path.is_dir() { "yes" } else { "no" }.to_owned(),
                    match &d.refused {
                        None => "yes".to_owned(),
                        Some(why) => format!("no: {why}"),
                    },
                    d.path.display().to_string(),
                ]
            })
            .collect();
        output::result(&output::table(
            &["ORIGIN", "EXISTS", "SEARCHED", "PATH"],
            &rows,
        ));
    }
    Ok(exit::OK)
}

/// `kiln plugin trust` / `untrust`: the project's `.kiln/plugins`.
fn set_trust(session: &Session<'_>, trusted: bool) -> Result<i32> {
    let project = session.require_project()?;
    let folder = project.plugins_dir();
    let store = crate::plugins::trust::store_path(session.env.user_plugins_dir.as_deref())
        .ok_or_else(|| {
            Error::BadArgument(
                "no user data folder to keep trusted folders in (HOME unset?)".into(),
            )
        })?;
    let changed = if trusted {
        crate::plugins::trust::trust(&store, &folder)?
    } else {
        crate::plugins::trust::untrust(&store, &folder)?
    };
    let what = match (trusted, changed) {
        (true, true) => "now trusted: its plugins are loaded",
        (true, false) => "already trusted",
        (false, true) => "no longer trusted: its plugins are not loaded",
        (false, false) => "was not trusted",
    };
    output::result(&format!("{}: {what}", folder.display()));
    Ok(exit::OK)
}
