//! `kiln context ls | pack | upload`: what would be sent, the archive, the
//! artifact-store copy. Nothing here contacts a daemon or registry.

use kiln_plugin_api::{BuildRequest, ComponentType};
use serde_json::json;

use super::args::{ContextArgs, ContextCommand};
use crate::{
    components::ResolvedComponent,
    context::{
        store::{self, LocalStore},
        Context, ContextOptions, Entry, Report,
    },
    error::{exit, Error, Result},
    output,
    session::Session,
};

pub(crate) fn run(session: &Session<'_>, cmd: ContextCommand) -> Result<i32> {
    match cmd {
        ContextCommand::Ls { context, json } => {
            let ctx = plan(session, &context)?;
            let report = list(&ctx, json)?;
            warn_all(&report);
            Ok(exit::OK)
        }
        ContextCommand::Pack {
            context,
            output: out,
            gzip,
            json,
        } => {
            let ctx = plan(session, &context)?;
            let out = session.env.cwd.join(out);
            let (summary, report) = ctx.pack_to_file(&out, gzip)?;
            warn_all(&report);
            if json {
                output::json(&json!({
                    "sha1": summary.sha1,
                    "bytes": summary.bytes,
                    "files": summary.files,
                    "path": out.display().to_string(),
                }));
            } else {
                output::result(&format!(
                    "{}  {} bytes  {} files  {}",
                    summary.sha1,
                    summary.bytes,
                    summary.files,
                    out.display()
                ));
            }
            Ok(exit::OK)
        }
        ContextCommand::Upload {
            context,
            store: spec,
            store_dir,
            json,
        } => {
            let target = LocalStore::parse(&spec, &session.env.cwd).map_err(Error::BadArgument)?;
            let ctx = plan(session, &context)?;
            let (uploaded, report) = store::upload(&ctx, &target, &store_dir)?;
            warn_all(&report);
            if json {
                output::json(&json!({
                    "uri": uploaded.uri,
                    "sha1": uploaded.sha1,
                    "bytes": uploaded.bytes,
                    "skipped": uploaded.skipped,
                }));
            } else {
                let what = if uploaded.skipped {
                    "already stored"
                } else {
                    "stored"
                };
                output::result(&format!("{what}: {}", uploaded.uri));
            }
            Ok(exit::OK)
        }
    }
}

/// Plan the context named on the command line, apply the builder's context
/// hook when asked, and show the warnings.
pub(crate) fn plan(session: &Session<'_>, args: &ContextArgs) -> Result<Context> {
    let options = ContextOptions {
        root: args.dir.clone(),
        dockerfile: args.file.clone(),
        ignore_file: args.dockerignore.clone(),
    };
    let mut ctx = Context::resolve(&options, &session.env.cwd)?;
    if let Some(builder) = &args.builder {
        let request = BuildRequest {
            dockerfile: ctx.dockerfile().into(),
            ..BuildRequest::default()
        };
        let chosen = ResolvedComponent::from_component(
            session,
            &session.catalog(),
            builder,
            ComponentType::IMAGE_BUILDER,
        )?;
        ctx.add_files(chosen.context_files(session, &request)?)?;
    }
    Ok(ctx)
}

fn warn_all(report: &Report) {
    for warning in &report.warnings {
        output::warn(warning);
    }
}

/// Stream the sent files and symlinks to stdout as the walk finds them
/// (already in byte order): one per line, or one JSON array.
fn list(ctx: &Context, json: bool) -> Result<Report> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut first = true;
    let mut write = |entry: &Entry| -> std::io::Result<()> {
        let path = entry.path_str();
        if json {
            let sep = if first { "[" } else { "," };
            write!(out, "{sep}{}", serde_json::Value::from(path.as_ref()))?;
        } else {
            writeln!(out, "{path}")?;
        }
        first = false;
        Ok(())
    };
    let report = ctx.visit(&mut |entry| {
        if entry.is_dir() {
            return Ok(());
        }
        // A closed pipe (`kiln context ls | head`) ends the listing quietly.
        let _ = write(&entry);
        Ok(())
    })?;
    let tail = if first { "[]\n" } else { "]\n" };
    if json {
        let _ = out.write_all(tail.as_bytes());
    }
    let _ = out.flush();
    Ok(report)
}
