//! `kiln build DIR`: plan, decide, build, report.
//!
//! Planning (the builder's flavor and validated config, the context, the
//! image names, the checks) is the same for `--dry-run` and a real build.
//! Only a real build resolves secrets, constructs the builder, writes the
//! context archive and contacts anything.

use std::{
    sync::Once,
    time::{Duration, Instant},
};

use abi_stable::std_types::{RNone, ROption, RSome, RString, Tuple2};
use kiln_plugin_api::{
    BuildContext, BuildRequest, ComponentType, ErrorKind, Existence, PluginError,
};
use serde_json::{json, Map, Value};

use super::{
    args::{BuildArgs, OnUnknown},
    chosen::Chosen,
    Session,
};
use crate::{
    build::{decide, default_name, derived_tag, split_tag, CheckAnswer, Decision, TagInputs},
    context::{Context, ContextOptions},
    error::{exit, Error, Result},
    output,
    plugins::{progress_sink, CancelFlag, Catalog},
};

/// Construct the registry (real builds only), check every image belongs to
/// it, and ask whether the first image exists already.
fn registry_check(
    choice: &Chosen,
    builder: &str,
    builds_locally: bool,
    images: &[String],
    platform: Option<&str>,
    run_check: bool,
) -> Result<(
    kiln_plugin_api::ContainerRegistryBox,
    Vec<(String, CheckAnswer)>,
)> {
    let registry = choice
        .flavor
        .plugin
        .construct_registry(choice.flavor.name(), &choice.resolved_config()?)
        .map_err(|e| match e.kind {
            ErrorKind::AUTH => Error::Build {
                builder: format!("registry {}", choice.label),
                message: e.message.to_string(),
                code: exit::REGISTRY,
            },
            ErrorKind::INVALID_CONFIG => {
                Error::BadArgument(format!("registry {}: {}", choice.label, e.message))
            }
            _ => choice.plugin_error("construct", e),
        })?;
    // A builder elsewhere (a cloud service) cannot reach a loopback registry.
    let uri = registry.uri().to_string();
    let host = uri.split('/').next().unwrap_or("");
    let loopback =
        host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
    if !builds_locally && loopback {
        return Err(Error::BadArgument(format!(
            "builder {builder} does not build on this machine, so it cannot reach registry {} \
             at {host} (a loopback address); use a registry it can reach",
            choice.label
        )));
    }
    for image in images {
        let owned = registry
            .owns_image(image.as_str().into())
            .into_result()
            .map_err(|e| choice.plugin_error("owns_image", e))?;
        if !owned {
            return Err(Error::BadArgument(format!(
                "image {image} does not belong to registry {} ({}); name it {}/...",
                choice.label,
                registry.uri(),
                registry.uri()
            )));
        }
    }
    let mut answers = Vec::new();
    if run_check {
        let (repo, tag) = split_tag(&images[0]);
        let platforms: Vec<RString> = platform.map(RString::from).into_iter().collect();
        let answer = match registry
            .image_exists(
                repo.into(),
                tag.unwrap_or("latest").into(),
                platforms.as_slice().into(),
            )
            .into_result()
        {
            Ok(found) => match found.state {
                Existence::EXISTS => CheckAnswer::Exists(found.detail.into_string()),
                Existence::ABSENT => CheckAnswer::Absent,
                _ => CheckAnswer::Unknown(found.detail.into_string()),
            },
            Err(e) if e.kind == ErrorKind::AUTH => {
                return Err(Error::Build {
                    builder: format!("registry {}", choice.label),
                    message: e.message.to_string(),
                    code: exit::REGISTRY,
                })
            }
            Err(e) => CheckAnswer::Unknown(e.message.to_string()),
        };
        answers.push((format!("registry {}", choice.label), answer));
    }
    Ok((registry, answers))
}

/// The flavor used when no builder is named and the Dockerfile runs no
/// command: the daemonless builder.
const DEFAULT_FLAVOR: &str = "oci";
/// The flavor named when the Dockerfile runs commands.
const RUNNING_FLAVOR: &str = "local";

fn parse_pairs(flag: &str, values: &[String]) -> Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
            _ => Err(Error::BadArgument(format!(
                "{flag} {v:?}: expected KEY=VALUE"
            ))),
        })
        .collect()
}

/// The builder: the component or flavor named, else the daemonless `oci`
/// flavor when `dockerfile` runs no command; a Dockerfile with `RUN` and no
/// builder named is refused, saying which builder it needs.
fn choose_builder(
    session: &Session<'_>,
    catalog: &Catalog,
    args: &BuildArgs,
    dockerfile: &std::path::Path,
) -> Result<Chosen> {
    let t = ComponentType::IMAGE_BUILDER;
    if let Some(name) = &args.builder {
        return Chosen::stored(session, catalog, name, t);
    }
    if args.builder_flavor.is_none() {
        let text = std::fs::read_to_string(dockerfile)
            .map_err(|e| Error::io("reading", dockerfile.to_path_buf(), e))?;
        if let Some(line) = crate::build::dockerfile::first_run(&text) {
            return Err(Error::BadArgument(format!(
                "{} line {line}: RUN runs a command, and the default builder (flavor \
                 {DEFAULT_FLAVOR}, no daemon) runs none: build with a Docker Engine with \
                 --builder-flavor {RUNNING_FLAVOR}, or name a builder with --builder COMPONENT",
                dockerfile.display()
            )));
        }
    }
    let flavor_name = args.builder_flavor.as_deref().unwrap_or(DEFAULT_FLAVOR);
    let flavor = catalog.find(Some(t), flavor_name).map_err(|e| {
        if args.builder_flavor.is_none() {
            Error::BadArgument(format!(
                "no builder named: pass --builder COMPONENT or --builder-flavor FLAVOR \
                 (the default, flavor {DEFAULT_FLAVOR:?}, is not available: {e})"
            ))
        } else {
            e
        }
    })?;
    let config = match &args.builder_config {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(Error::BadArgument(
                    "--builder-config must be a JSON object".into(),
                ))
            }
            Err(e) => {
                return Err(Error::BadArgument(format!(
                    "--builder-config is not valid JSON: {e}"
                )))
            }
        },
        None => Map::new(),
    };
    Chosen::inline(flavor.clone(), config)
}

/// Errors from the builder's `build`, with the exit code their kind means.
fn build_error(choice: &Chosen, e: PluginError) -> Error {
    let code = match e.kind {
        ErrorKind::UNAVAILABLE => exit::DAEMON,
        ErrorKind::BUILD_FAILED => exit::BUILD_FAILED,
        ErrorKind::CANCELLED => exit::INTERRUPTED,
        ErrorKind::AUTH => exit::REGISTRY,
        ErrorKind::INVALID_CONFIG | ErrorKind::INVALID_INPUT => exit::USAGE,
        _ => exit::PLUGIN,
    };
    if code == exit::PLUGIN {
        return choice.plugin_error("build", e);
    }
    Error::Build {
        builder: choice.label.clone(),
        message: e.message.to_string(),
        code,
    }
}

fn install_interrupt(flag: &CancelFlag) {
    static ONCE: Once = Once::new();
    let flag = flag.clone();
    ONCE.call_once(move || {
        let _ = ctrlc::set_handler(move || {
            if flag.is_set() {
                // A second Ctrl-C: stop now.
                std::process::exit(exit::INTERRUPTED);
            }
            output::status("interrupted: stopping the build (Ctrl-C again to quit at once)");
            flag.cancel();
            // Give the builder time to stop the build in the daemon, then go.
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_secs(15));
                std::process::exit(exit::INTERRUPTED);
            });
        });
    });
}

pub(crate) fn run(session: &Session<'_>, args: BuildArgs) -> Result<i32> {
    let started = Instant::now();
    let catalog = session.catalog();
    let options = ContextOptions {
        root: args.dir.clone(),
        dockerfile: args.file.clone(),
        ignore_file: args.dockerignore.clone(),
    };
    let mut context = Context::plan(&options, &session.env.cwd)?;
    let dockerfile_path = match &args.file {
        Some(f) => session.env.cwd.join(f),
        None => session.env.cwd.join(&args.dir).join("Dockerfile"),
    };
    let choice = choose_builder(session, &catalog, &args, &dockerfile_path)?;
    let registry_choice = match &args.registry {
        Some(name) => Some(Chosen::stored(
            session,
            &catalog,
            name,
            ComponentType::CONTAINER_REGISTRY,
        )?),
        None => None,
    };
    let build_args = parse_pairs("--build-arg", &args.build_args)?;
    let labels = parse_pairs("--label", &args.labels)?;

    // The builder's context hook (a describe-stage call: the builder is
    // not constructed for it).
    let mut request = BuildRequest {
        tags: Default::default(),
        dockerfile: context.dockerfile().into(),
        build_args: build_args
            .iter()
            .map(|(k, v)| Tuple2(RString::from(k.as_str()), RString::from(v.as_str())))
            .collect(),
        labels: labels
            .iter()
            .map(|(k, v)| Tuple2(RString::from(k.as_str()), RString::from(v.as_str())))
            .collect(),
        target: opt(&args.target),
        platform: opt(&args.platform),
        no_cache: args.no_cache,
        pull: args.pull,
        extra_json: extra_json(&args, &session.env.cwd)?.into(),
    };
    let files = choice.context_files(&request)?;
    context.add_files(files)?;

    let tag_for = |sha1: &str| {
        derived_tag(&TagInputs {
            context_sha1: sha1,
            dockerfile: context.dockerfile(),
            build_args: &build_args,
            target: args.target.as_deref(),
            platform: args.platform.as_deref(),
        })
    };
    let names = |sha1: &str| -> Vec<String> {
        let given: Vec<String> = if args.tags.is_empty() {
            let folder = context
                .root()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // With a registry: <uri>/<default_repository or folder name>, so
            // the default name belongs to it.
            let repo = registry_choice
                .as_ref()
                .and_then(|r| r.config.get("default_repository"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| default_name(&folder));
            match registry_choice
                .as_ref()
                .and_then(|r| r.config.get("uri"))
                .and_then(Value::as_str)
            {
                Some(uri) => {
                    let uri = uri
                        .trim()
                        .trim_start_matches("https://")
                        .trim_start_matches("http://")
                        .trim_end_matches('/');
                    vec![format!("{uri}/{repo}")]
                }
                None => vec![repo],
            }
        } else {
            args.tags.clone()
        };
        given
            .into_iter()
            .map(|t| match split_tag(&t) {
                (_, Some(_)) => t,
                (name, None) => format!("{name}:{}", tag_for(sha1)),
            })
            .collect()
    };

    if args.dry_run {
        let (summary, report) = context.digest()?;
        for w in &report.warnings {
            output::warn(w);
        }
        let images = names(&summary.sha1);
        let tag = split_tag(&images[0]).1.unwrap_or("latest").to_string();
        let checks = match (crate::build::checks_apply(&tag, args.force), &registry_choice) {
            (Err(reason), _) => format!("none ({reason})"),
            (Ok(()), None) => "none configured: the image will be built".to_string(),
            (Ok(()), Some(r)) => format!(
                "registry {} (flavor {}) is asked whether {} exists; the build is skipped if it does",
                r.label,
                r.flavor.name(),
                images[0]
            ),
        };
        let plan = json!({
            "image": images[0],
            "images": images,
            "digest": Value::Null,
            "status": "planned",
            "reason": "dry run: nothing was built",
            "builder": choice.label,
            "flavor": choice.flavor.name(),
            "dockerfile": context.dockerfile(),
            "context_sha1": summary.sha1,
            "context_bytes": summary.bytes,
            "context_files": summary.files,
            "checks": checks,
            "seconds": seconds(started),
        });
        if args.json {
            output::json(&plan);
        } else {
            output::result(&format!(
                "plan: build {} with {}\n  context: {} files, {} bytes, sha1 {}\n  dockerfile: {}\n  checks: {}",
                images.join(", "),
                describe(&choice),
                summary.files,
                summary.bytes,
                summary.sha1,
                context.dockerfile(),
                checks
            ));
        }
        return Ok(exit::OK);
    }

    // The archive, written once; its sha1 is the context hash.
    let staging = tempfile::Builder::new()
        .prefix("kiln-context-")
        .suffix(".tar")
        .tempfile()
        .map_err(|e| Error::io("creating", std::env::temp_dir(), e))?;
    let (summary, report, staging) = context.write_to(false, staging)?;
    for w in &report.warnings {
        output::warn(w);
    }
    let images = names(&summary.sha1);
    let tag = split_tag(&images[0]).1.unwrap_or("latest").to_string();
    let (registry, answers) = match &registry_choice {
        Some(r) => {
            let run_check = crate::build::checks_apply(&tag, args.force).is_ok();
            let builds_locally = choice
                .flavor
                .descriptor
                .capabilities
                .iter()
                .any(|c| c.as_str() == kiln_plugin_api::capability::BUILDS_LOCALLY);
            let (registry, answers) = registry_check(
                r,
                &choice.label,
                builds_locally,
                &images,
                args.platform.as_deref(),
                run_check,
            )?;
            (Some(registry), answers)
        }
        None => (None, Vec::new()),
    };
    let decision = decide(&tag, args.force, &answers);
    if args.on_unknown == OnUnknown::Fail
        && !answers.is_empty()
        && answers
            .iter()
            .all(|(_, a)| matches!(a, CheckAnswer::Unknown(_)))
        && crate::build::checks_apply(&tag, args.force).is_ok()
    {
        let why: Vec<String> = answers.iter().map(|(c, a)| format!("{c}: {a:?}")).collect();
        return Err(Error::Build {
            builder: choice.label.clone(),
            message: format!(
                "no checker could tell whether {} exists ({}), and --on-unknown fail is set",
                images[0],
                why.join("; ")
            ),
            code: exit::REGISTRY,
        });
    }
    let reason = match decision {
        Decision::Skip { digest, reason } => {
            report_result(
                &args,
                &images[0],
                Some(&digest),
                "skipped",
                &reason,
                &summary.sha1,
                started,
            );
            return Ok(exit::OK);
        }
        Decision::Build { reason } => reason,
    };
    request.tags = images.iter().map(|t| RString::from(t.as_str())).collect();

    // Construct the builder only now, with secrets resolved.
    let builder = choice
        .flavor
        .plugin
        .construct_builder(choice.flavor.name(), &choice.resolved_config()?)
        .map_err(|e| choice.plugin_error("construct", e))?;
    let flag = CancelFlag::new();
    install_interrupt(&flag);
    output::status(&format!(
        "building {} with {} ({} files, {} bytes of context): {reason}",
        images.join(", "),
        describe(&choice),
        summary.files,
        summary.bytes
    ));
    let build_context = BuildContext {
        archive_path: staging.path().to_string_lossy().as_ref().into(),
        gzip: false,
        sha1: summary.sha1.as_str().into(),
        size: summary.bytes,
        uploaded_uri: RNone,
    };
    let outcome = builder
        .build(
            &request,
            &build_context,
            match &registry {
                Some(r) => RSome(r),
                None => RNone,
            },
            progress_sink(&choice.flavor.plugin.name),
            flag.handle(),
        )
        .into_result();
    drop(staging);
    if flag.is_set() {
        return Err(Error::Build {
            builder: choice.label.clone(),
            message: "interrupted".into(),
            code: exit::INTERRUPTED,
        });
    }
    let built = outcome.map_err(|e| build_error(&choice, e))?;
    let digest: Option<String> = built.digest.into_option().map(|d| d.into_string());
    report_result(
        &args,
        built.image.as_str(),
        digest.as_deref(),
        "built",
        &reason,
        &summary.sha1,
        started,
    );
    Ok(exit::OK)
}

fn describe(choice: &Chosen) -> String {
    match &choice.component {
        Some(c) => format!("component {c} (flavor {})", choice.flavor.name()),
        None => choice.label.clone(),
    }
}

fn opt(value: &Option<String>) -> ROption<RString> {
    match value {
        Some(v) => RSome(v.as_str().into()),
        None => RNone,
    }
}

fn seconds(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

fn report_result(
    args: &BuildArgs,
    image: &str,
    digest: Option<&str>,
    status: &str,
    reason: &str,
    context_sha1: &str,
    started: Instant,
) {
    if args.json {
        output::json(&json!({
            "image": image,
            "digest": digest,
            "status": status,
            "reason": reason,
            "context_sha1": context_sha1,
            "seconds": seconds(started),
        }));
    } else {
        let digest = digest.map(|d| format!(" ({d})")).unwrap_or_default();
        output::result(&format!(
            "{status} {image}{digest} in {:.1} s: {reason}",
            seconds(started)
        ));
    }
}

/// `kiln push NAME:TAG --registry COMPONENT`: membership, then
/// `prepare_image_push` and `push_image` through the registry plugin.
pub(crate) fn push(session: &Session<'_>, image: &str, registry: &str, json: bool) -> Result<i32> {
    if split_tag(image).1.is_none() {
        return Err(Error::BadArgument(format!(
            "{image}: push an explicit tag (NAME:TAG); kiln never pushes every tag of a name"
        )));
    }
    let catalog = session.catalog();
    let choice = Chosen::stored(
        session,
        &catalog,
        registry,
        ComponentType::CONTAINER_REGISTRY,
    )?;
    let images = [image.to_string()];
    let (handle, _) = registry_check(&choice, "kiln push", true, &images, None, false)?;
    let fail = |e: PluginError| {
        let code = match e.kind {
            ErrorKind::AUTH => exit::REGISTRY,
            ErrorKind::UNAVAILABLE => exit::DAEMON,
            ErrorKind::INVALID_INPUT | ErrorKind::INVALID_CONFIG => exit::USAGE,
            ErrorKind::CANCELLED => exit::INTERRUPTED,
            _ => exit::REGISTRY,
        };
        Error::Build {
            builder: format!("registry {registry}"),
            message: e.message.to_string(),
            code,
        }
    };
    handle
        .prepare_image_push(image.into())
        .into_result()
        .map_err(fail)?;
    let flag = CancelFlag::new();
    install_interrupt(&flag);
    let digest = handle
        .push_image(
            image.into(),
            progress_sink(&choice.flavor.plugin.name),
            flag.handle(),
        )
        .into_result()
        .map_err(fail)?;
    if json {
        output::json(&json!({ "image": image, "digest": digest.as_str() }));
    } else {
        output::result(&format!("pushed {image} ({digest})"));
    }
    Ok(exit::OK)
}

/// `--output type=oci,dest=FILE` and `--build-context NAME=VALUE` as the
/// request's extra JSON; paths are made absolute against `cwd`.
fn extra_json(args: &BuildArgs, cwd: &std::path::Path) -> Result<String> {
    let mut extra = Map::new();
    if let Some(spec) = &args.output {
        let mut kind = None;
        let mut dest = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(("dest", v)) => dest = Some(cwd.join(v).to_string_lossy().into_owned()),
                _ => {
                    return Err(Error::BadArgument(format!(
                        "--output {spec:?}: expected type=oci,dest=FILE"
                    )))
                }
            }
        }
        match (kind.as_deref(), dest) {
            (Some("oci") | Some("docker"), Some(dest)) => {
                extra.insert("output".into(), json!({"type": kind, "dest": dest}));
            }
            _ => {
                return Err(Error::BadArgument(format!(
                    "--output {spec:?}: expected type=oci,dest=FILE"
                )))
            }
        }
    }
    let mut contexts = Map::new();
    for spec in &args.build_contexts {
        let (name, value) = spec
            .split_once('=')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| {
                Error::BadArgument(format!("--build-context {spec:?}: expected NAME=VALUE"))
            })?;
        let value = if let Some(path) = value.strip_prefix("oci-layout://") {
            format!("oci-layout://{}", cwd.join(path).to_string_lossy())
        } else if value.starts_with("docker-image://") {
            value.to_string()
        } else {
            return Err(Error::BadArgument(format!(
                "--build-context {spec:?}: kiln takes oci-layout://PATH[:TAG] (an OCI layout \
                 folder or archive) or docker-image://REF"
            )));
        };
        contexts.insert(name.to_string(), Value::String(value));
    }
    if !contexts.is_empty() {
        extra.insert("build_contexts".into(), Value::Object(contexts));
    }
    Ok(Value::Object(extra).to_string())
}
