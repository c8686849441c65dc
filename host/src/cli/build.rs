//! `kiln build DIR` and `kiln push NAME:TAG`: validate the flags, call the
//! build library, print what it returns. The work is in [`crate::build`].

use crate::{
    build::{self, BuildArgs, Options},
    error::{exit, Error, Result},
    output,
    session::Session,
};

pub(crate) fn run(session: &Session<'_>, mut args: BuildArgs) -> Result<i32> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    output::set_progress(match (args.quiet, args.progress.as_str()) {
        (true, _) | (_, "quiet") => output::Progress::Quiet,
        (_, "rawjson") => output::Progress::Rawjson,
        (_, "tty") if !terminal => {
            return Err(Error::BadArgument(
                "--progress=tty needs a terminal on standard error; use plain or rawjson".into(),
            ))
        }
        (_, "tty") => output::Progress::Tty,
        (_, "auto") if terminal => output::Progress::Tty,
        _ => output::Progress::Plain,
    });
    // `kiln build -`: the context comes from standard input; it is kept in
    // a private folder for as long as the build runs.
    let received = if args.dir.as_os_str() == "-" {
        build::interrupt::while_planning();
        let received = crate::context::stdin::receive(std::io::stdin().lock())?;
        if received.dockerfile_only && args.file.is_some() {
            return Err(Error::BadArgument(
                "-f names a Dockerfile inside the context, but standard input held a \
                 Dockerfile, not a context archive"
                    .into(),
            ));
        }
        args.dir = received.dir.path().to_path_buf();
        if let Some(file) = args.file.as_mut().filter(|f| f.is_relative()) {
            *file = args.dir.join(&*file);
        }
        Some(received)
    } else {
        None
    };
    let mut options = Options::from_args(&args, &session.env.cwd, &|name| session.env.var(name))?;
    options.from_stdin = received.is_some();
    build::interrupt::while_planning();
    let plan = build::plan(session, &options)?;
    if options.dry_run {
        if args.json {
            output::json(&plan.to_json());
        } else {
            output::result(&plan.to_string());
        }
        return Ok(exit::OK);
    }
    let mut plan = plan;
    let load = plan.request.output.as_ref().is_some_and(|o| o.load);
    if load {
        build::load::check_reachable()?;
    }
    // `--output dest=-` and `--load`: the builder writes a temporary file
    // that kiln then copies to standard output (what kiln reports goes to
    // standard error) or loads into the engine.
    let through_kiln = match plan.request.output.as_mut().filter(|o| o.through_kiln()) {
        Some(out) => {
            let temp = build::interrupt::temp_archive("kiln-output-")?;
            out.dest = temp.to_path_buf();
            Some(temp)
        }
        None => None,
    };
    // The archive kiln has, whichever it is: the image ID is read from it
    // (a filesystem output has none).
    let archive = plan
        .request
        .output
        .as_ref()
        .filter(|o| o.kind.is_image())
        .map(|o| o.dest.clone());
    let no_output = plan.request.output.is_none();
    // Which inputs changed since the last build of this repository (a new
    // derived tag says that something did; this says what).
    let (repository, tag) = kiln_distribution::split_tag(&plan.image);
    let this_build = build::LastBuild {
        repository: repository.to_string(),
        tag: tag.unwrap_or("latest").to_string(),
        inputs: plan.inputs.clone(),
    };
    let cache_dir = &session.env.cache_dir;
    if let Some(last) = build::LastBuild::read(cache_dir, repository) {
        let changed = this_build.inputs.changed_since(&last.inputs);
        if last.tag != this_build.tag && !changed.is_empty() {
            output::status(&format!(
                "since the last build of {repository} ({}), changed: {}",
                last.tag,
                changed.join(", ")
            ));
        }
    }
    let mut outcome = build::execute_in_worker(session, plan)?;
    this_build.write(cache_dir);
    if let Some(cap) = session.env.cache_cap() {
        let policy = crate::cache::Policy {
            keep_storage: Some(cap.bytes),
            until: None,
        };
        let done = crate::cache::prune(cache_dir, policy, std::time::SystemTime::now());
        if done.files > 0 {
            let over = if cap.from_env {
                "KILN_CACHE_MAX".to_string()
            } else {
                format!(
                    "its default cap ({}, a tenth of its disk; KILN_CACHE_MAX sets another)",
                    crate::cache::human(cap.bytes)
                )
            };
            output::status(&format!(
                "cache over {over}: removed {} least recently used files ({}); {} kept",
                done.files,
                crate::cache::human(done.bytes),
                crate::cache::human(done.kept)
            ));
        }
    }
    if outcome.status == "built" {
        outcome.image_id = match &archive {
            Some(archive) => build::load::image_id_of_archive(archive),
            // Neither written nor pushed: the builder's digest is the local
            // image ID (the protocol's rule), as the Docker Engine builder's.
            None if no_output && outcome.pushed.is_none() => outcome.digest.clone(),
            None => None,
        };
    }
    write_result_files(&args, &outcome, &session.env.cwd)?;
    let loaded = match (&through_kiln, load) {
        (Some(temp), true) => {
            output::status(&outcome.to_string());
            Some(build::load::into_engine(
                temp,
                std::time::Duration::from_secs(600),
            )?)
        }
        (Some(temp), false) => {
            let mut file =
                std::fs::File::open(temp).map_err(|e| Error::io("reading", &**temp, e))?;
            let mut stdout = std::io::stdout().lock();
            std::io::copy(&mut file, &mut stdout)
                .and_then(|_| std::io::Write::flush(&mut stdout))
                .map_err(|e| Error::io("writing", "standard output", e))?;
            output::status(&outcome.to_string());
            return Ok(exit::OK);
        }
        (None, _) => None,
    };
    if args.json {
        let mut v = serde_json::to_value(&outcome).unwrap_or_default();
        if let Some(loaded) = &loaded {
            v["loaded"] = serde_json::Value::String(loaded.clone());
        }
        output::json(&v);
    } else if args.quiet {
        // `docker build -q`: the image ID alone.
        output::result(quiet_id(&outcome));
    } else {
        output::result(&loaded.unwrap_or_else(|| outcome.to_string()));
    }
    Ok(exit::OK)
}

/// What `-q` prints: the image ID, else the digest, else the name.
fn quiet_id(outcome: &build::Outcome) -> &str {
    outcome
        .image_id
        .as_deref()
        .or(outcome.digest.as_deref())
        .unwrap_or(&outcome.image)
}

/// `--iidfile` and `--metadata-file`, written atomically once the build
/// is done (nothing is written for a failed build or a dry run).
fn write_result_files(
    args: &BuildArgs,
    outcome: &build::Outcome,
    cwd: &std::path::Path,
) -> Result<()> {
    let write = |path: &std::path::Path, text: &str| {
        let path = cwd.join(path);
        kiln_archive::atomic::write_unsynced(
            &path,
            text.as_bytes(),
            kiln_archive::atomic::created_mode(0o666),
        )
        .map_err(|e| Error::io("writing", &path, e.source))
    };
    if let Some(path) = &args.iidfile {
        let id = outcome.image_id.as_deref().or(outcome.digest.as_deref());
        let Some(id) = id else {
            return Err(Error::BadArgument(format!(
                "--iidfile {}: the builder reported no image ID or digest",
                path.display()
            )));
        };
        write(path, id)?;
    }
    if let Some(path) = &args.metadata_file {
        let mut names: Vec<&str> = vec![outcome.image.as_str()];
        for t in &args.tags {
            if !names.contains(&t.as_str()) {
                names.push(t);
            }
        }
        let meta = serde_json::json!({
            "containerimage.digest": outcome.digest,
            "containerimage.config.digest": outcome.image_id,
            "image.name": names.join(","),
            "kiln.status": outcome.status,
            "kiln.pushed": outcome.pushed,
        });
        write(path, &format!("{meta:#}\n"))?;
    }
    Ok(())
}

pub(crate) fn push(session: &Session<'_>, image: &str, registry: &str, json: bool) -> Result<i32> {
    let pushed = build::worker::push_in_worker(session, image, registry)?;
    if json {
        output::json(&serde_json::to_value(&pushed).unwrap_or_default());
    } else {
        output::result(&format!("pushed {} ({})", pushed.image, pushed.digest));
    }
    Ok(exit::OK)
}
