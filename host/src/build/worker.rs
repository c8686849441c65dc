//! Crash isolation (Terraform's go-plugin, nushell's plugins as
//! processes): a real build's step 6, and `kiln push`, run in a child
//! process, `kiln` itself re-executed as `kiln __worker`, which loads only
//! the plugins its [`Task`] names and carries it out. A plugin that aborts, segfaults or exits
//! takes the worker down, never kiln: kiln reports which plugin and what
//! step, and exits 3.
//!
//! The protocol over the pipes: the [`Job`] as one JSON document on the
//! worker's stdin (it holds resolved secrets, so it never goes through
//! arguments or the environment); on its stdout, JSON lines: a
//! [`Message::Stage`] before each plugin is called, then one
//! [`Message::Done`] or [`Message::Error`]. The worker's stderr is kiln's:
//! build progress streams as it did in-process. The worker runs in its own
//! process group; kiln forwards Ctrl-C to it, and a second Ctrl-C ends it.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use kiln_plugin_api::ComponentType;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    execute::{execute, Outcome},
    options::OnUnknown,
    plan::{Archive, CheckPlan, Plan, RequestPlan},
};
use crate::{
    components::ResolvedComponent,
    context::ContextSummary,
    error::{exit, Error, Result},
    plugins::Catalog,
    session::Session,
};

/// A component as the worker rebuilds it: which library, which flavor,
/// and its config with secrets already resolved.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobComponent {
    /// The plugin library.
    pub path: PathBuf,
    /// `image-builder` or `container-registry`.
    pub component_type: String,
    /// The flavor.
    pub flavor: String,
    /// The component name, or `flavor NAME`.
    pub label: String,
    /// The component name, when one was named.
    pub component: Option<String>,
    /// The resolved config (secrets included: never print a job).
    pub config: Map<String, Value>,
}

/// What a worker is asked to do.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Execute a build plan.
    Build(Box<Job>),
    /// Push an image through a registry (`kiln push`).
    Push {
        /// The registry component.
        registry: Box<JobComponent>,
        /// The image, with its tag.
        image: String,
    },
    /// Ask a registry whether an image exists (`kiln image exists`).
    Exists {
        /// The registry component.
        registry: Box<JobComponent>,
        /// The image.
        image: String,
        /// Platforms it must exist for.
        platforms: Vec<String>,
    },
    /// Run a builder flavor's context hook (nothing is constructed).
    ContextHook {
        /// The builder component.
        builder: Box<JobComponent>,
        /// The build the context is for.
        request: Box<kiln_plugin_api::BuildRequest>,
    },
}

/// What the worker executes: a plan, without the parts only planning needs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    builder: JobComponent,
    registry: Option<JobComponent>,
    image: String,
    images: Vec<String>,
    dockerfile: String,
    context: ContextSummary,
    archive: PathBuf,
    run_checks: bool,
    /// Why no check runs, when the plan turned them off.
    #[serde(default)]
    checks_off: Option<String>,
    request: RequestPlan,
    /// The inputs (digests only), recorded in the image and compared with
    /// what an existing one records.
    #[serde(default)]
    inputs: super::TagInputs,
    force: bool,
    on_unknown: OnUnknown,
    /// Milliseconds `kiln build` had run when the job was handed over.
    elapsed_ms: u64,
}

/// One line the worker writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// A plugin is about to be called for `stage`.
    Stage {
        /// `registry checks`, `build`.
        stage: String,
        /// The plugin's name.
        plugin: String,
        /// Its library.
        path: PathBuf,
    },
    /// The task ended: its result ([`Outcome`] of a build, `Pushed` of a
    /// push).
    Done(Value),
    /// The build failed, with the exit code its cause means.
    Error {
        /// What kiln would have printed.
        message: String,
        /// The exit code.
        code: i32,
    },
}

fn job_component(session: &Session<'_>, c: &ResolvedComponent) -> Result<JobComponent> {
    Ok(JobComponent {
        path: c.flavor.plugin.path.clone(),
        component_type: c.flavor.component_type().as_str().to_string(),
        flavor: c.flavor.name().to_string(),
        label: c.label.clone(),
        component: c.component.clone(),
        config: c.resolved_config(session)?,
    })
}

/// Execute `plan` in a worker process; the outcome, or the error the
/// worker reported, or a crash naming the plugin that was running.
pub fn execute_in_worker(session: &Session<'_>, plan: Plan) -> Result<Outcome> {
    let archive = plan
        .archive
        .as_ref()
        .map(|a| a.path().to_path_buf())
        .ok_or_else(|| Error::BadArgument("a dry run's plan cannot be executed".into()))?;
    let job = Job {
        builder: job_component(session, &plan.builder_component)?,
        registry: plan
            .registry_component
            .as_ref()
            .map(|r| job_component(session, r))
            .transpose()?,
        image: plan.image.clone(),
        images: plan.images.clone(),
        dockerfile: plan.dockerfile.clone(),
        context: plan.context.clone(),
        archive,
        run_checks: matches!(plan.checks, CheckPlan::Registry { .. }),
        checks_off: match &plan.checks {
            CheckPlan::Off(why) => Some(why.clone()),
            _ => None,
        },
        request: plan.request.clone(),
        inputs: plan.inputs.clone(),
        force: plan.force,
        on_unknown: plan.on_unknown,
        elapsed_ms: plan.started.elapsed().as_millis() as u64,
    };
    let fallback = blamed(&plan.builder_component);
    let done = spawn(session, &Task::Build(Box::new(job)), fallback)?;
    serde_json::from_value(done)
        .map_err(|e| Error::BadArgument(format!("the worker's outcome is not valid: {e}")))
}

/// `kiln push` in a worker process: the outcome, or the error the worker
/// reported, or a crash naming the registry plugin.
pub fn push_in_worker(
    session: &Session<'_>,
    image: &str,
    registry: &str,
) -> Result<super::push::Pushed> {
    let component = super::push::prepare(session, image, registry)?;
    let task = Task::Push {
        registry: Box::new(job_component(session, &component)?),
        image: image.to_string(),
    };
    let fallback = blamed(&component);
    let done = spawn(session, &task, fallback)?;
    serde_json::from_value(done)
        .map_err(|e| Error::BadArgument(format!("the worker's result is not valid: {e}")))
}

/// Whether `image` exists for every one of `platforms`, asked of
/// `registry` in a worker process: the checker's name and its answer.
pub fn exists_in_worker(
    session: &Session<'_>,
    registry: &ResolvedComponent,
    image: &str,
    platforms: &[kiln_distribution::Platform],
) -> Result<(String, super::checks::CheckAnswer)> {
    let task = Task::Exists {
        registry: Box::new(job_component(session, registry)?),
        image: image.to_string(),
        platforms: platforms.iter().map(ToString::to_string).collect(),
    };
    let done = spawn(session, &task, blamed(registry))?;
    let answer: ExistsAnswer = serde_json::from_value(done)
        .map_err(|e| Error::BadArgument(format!("the worker's answer is not valid: {e}")))?;
    let check = match answer.state.as_str() {
        "exists" => super::checks::CheckAnswer::Exists(answer.detail),
        "absent" => super::checks::CheckAnswer::Absent,
        _ => super::checks::CheckAnswer::Unknown(answer.detail),
    };
    Ok((answer.checker, check))
}

/// A registry's answer, between worker and kiln.
#[derive(Debug, Serialize, Deserialize)]
struct ExistsAnswer {
    checker: String,
    state: String,
    detail: String,
}

/// A builder's context hook in a worker process: the files it adds, or the
/// error it reported, or a crash naming the builder's plugin.
pub fn context_hook_in_worker(
    session: &Session<'_>,
    builder: &ResolvedComponent,
    request: &kiln_plugin_api::BuildRequest,
) -> Result<Vec<kiln_plugin_api::ContextFile>> {
    let task = Task::ContextHook {
        builder: Box::new(job_component(session, builder)?),
        request: Box::new(request.clone()),
    };
    let fallback = blamed(builder);
    let done = spawn(session, &task, fallback)?;
    serde_json::from_value(done)
        .map_err(|e| Error::BadArgument(format!("the worker's context files are not valid: {e}")))
}

/// The plugin blamed for a crash before the worker said which it was calling.
fn blamed(c: &ResolvedComponent) -> (String, PathBuf) {
    (c.flavor.plugin.name.clone(), c.flavor.plugin.path.clone())
}

/// The least time a worker's start (before its first plugin step) gets
/// under `KILN_PLUGIN_TIMEOUT`.
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Run `task` in a worker; `fallback` names the plugin blamed for a crash
/// before the worker said which one it was calling. A worker whose plugin
/// step (or whose start) runs past `KILN_PLUGIN_TIMEOUT` seconds is ended
/// with its process group.
fn spawn(session: &Session<'_>, task: &Task, fallback: (String, PathBuf)) -> Result<Value> {
    let timeout = session.env.plugin_timeout;
    let exe = std::env::current_exe().map_err(|e| Error::io("finding", "the kiln binary", e))?;
    let mut command = Command::new(&exe);
    command
        .arg("__worker")
        .env(
            crate::output::PROGRESS_VAR,
            crate::output::progress_name(crate::output::progress()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: Ctrl-C reaches kiln, which forwards it once.
        command.process_group(0);
    }
    let spawned = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| Error::io("starting a worker from", exe.clone(), e))?;
    super::interrupt::forward_to(child.id());
    if let Some(mut stdin) = child.stdin.take() {
        let text = serde_json::to_vec(task).unwrap_or_default();
        // A worker that died at once shows in its status below.
        let _ = stdin.write_all(&text);
    }
    let mut stage: Option<(String, String, PathBuf)> = None;
    let mut ended: Option<Result<Value>> = None;
    // The worker's lines, read on a thread so that a worker that hangs can
    // be timed out.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    // Each plugin step the worker reports gets the whole limit; its start
    // (kiln's own, loading the plugin) at least START_LIMIT, so that a
    // loaded machine does not pass for a hung plugin.
    let mut step_began = spawned;
    let mut timed_out = None;
    let status = loop {
        match rx.recv_timeout(std::time::Duration::from_millis(20)) {
            Ok(line) => {
                let before = stage.as_ref().map(|s| s.0.clone());
                handle_line(&line, &mut stage, &mut ended);
                if stage.as_ref().map(|s| &s.0) != before.as_ref() {
                    step_began = Instant::now();
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break child
                    .wait()
                    .map_err(|e| Error::io("waiting for", exe.clone(), e))?;
            }
        }
        if let Some(limit) = timeout {
            let allowed = match stage {
                Some(_) => limit,
                None => limit.max(START_LIMIT),
            };
            if step_began.elapsed() >= allowed {
                kill_group(child.id());
                timed_out = Some(limit);
                break child
                    .wait()
                    .map_err(|e| Error::io("waiting for", exe.clone(), e))?;
            }
        }
    };
    for line in rx.try_iter() {
        handle_line(&line, &mut stage, &mut ended);
    }
    super::interrupt::forward_to(0);
    tracing::debug!(
        ms = spawned.elapsed().as_secs_f64() * 1000.0,
        "worker: spawn to exit"
    );
    if let Some(ended) = ended.filter(|_| timed_out.is_none()) {
        return ended;
    }
    let interrupted = timed_out.is_none() && super::interrupt::interrupted();
    // A worker that died cannot remove its half-written archive: its
    // temporary files beside the output are removed here.
    if let Task::Build(job) = task {
        if let Some(dir) = job.request.output.as_ref().and_then(|o| o.dest.parent()) {
            kiln_archive::atomic::remove_leftovers(dir, child.id());
        }
    }
    if interrupted {
        return Err(Error::Reported {
            message: "interrupted".to_string(),
            code: exit::INTERRUPTED,
        });
    }
    let (stage, plugin, path) =
        stage.unwrap_or_else(|| ("start".to_string(), fallback.0, fallback.1));
    let how = match timed_out {
        Some(limit) => format!(
            "it did not finish within {} s (KILN_PLUGIN_TIMEOUT), so kiln stopped it",
            limit.as_secs()
        ),
        None => describe_status(&status),
    };
    Err(Error::PluginCrashed {
        plugin,
        path,
        stage,
        how,
    })
}

/// End the worker and anything it started (its process group).
fn kill_group(pid: u32) {
    #[cfg(unix)]
    // SAFETY: kill(2) on the process group of a child this process started.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

fn handle_line(
    line: &str,
    stage: &mut Option<(String, String, PathBuf)>,
    ended: &mut Option<Result<Value>>,
) {
    match serde_json::from_str::<Message>(line) {
        Ok(Message::Stage {
            stage: s,
            plugin,
            path,
        }) => *stage = Some((s, plugin, path)),
        Ok(Message::Done(v)) => *ended = Some(Ok(v)),
        Ok(Message::Error { message, code }) => {
            *ended = Some(Err(Error::Reported { message, code }))
        }
        // A plugin wrote to stdout: show it as the build's output.
        Err(_) => crate::output::status(&format!("   {line}")),
    }
}

fn describe_status(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("signal {sig} ({})", signal_name(sig));
        }
    }
    match status.code() {
        Some(code) => format!("it exited with status {code}"),
        None => "it ended without a status".to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// `kiln __worker`: read a [`Job`] from stdin, execute it, write
/// [`Message`]s to stdout. Returns the exit code; errors are reported as a
/// message, not printed.
pub fn run_worker(session: &Session<'_>) -> Result<i32> {
    super::interrupt::cancel_when_orphaned();
    match session.env.var(crate::output::PROGRESS_VAR).as_deref() {
        Some("quiet") => crate::output::set_progress(crate::output::Progress::Quiet),
        Some("rawjson") => crate::output::set_progress(crate::output::Progress::Rawjson),
        Some("tty") => {
            crate::output::set_progress(crate::output::Progress::Tty);
            crate::output::draw_live_line_here();
        }
        _ => {}
    }
    let mut text = Vec::new();
    std::io::stdin()
        .read_to_end(&mut text)
        .map_err(|e| Error::io("reading", "the worker's job", e))?;
    let started = Instant::now();
    let result = serde_json::from_slice::<Task>(&text)
        .map_err(|e| Error::BadArgument(format!("the worker's job is not valid: {e}")))
        .and_then(|task| match task {
            Task::Build(job) => execute_job(session, *job, started)
                .map(|o| serde_json::to_value(o).unwrap_or_default()),
            Task::Push { registry, image } => {
                let component = resolve(*registry)?;
                emit(&Message::Stage {
                    stage: "push".to_string(),
                    plugin: component.flavor.plugin.name.clone(),
                    path: component.flavor.plugin.path.clone(),
                });
                super::push::push(session, &component, &image)
                    .map(|p| serde_json::to_value(p).unwrap_or_default())
            }
            Task::Exists {
                registry,
                image,
                platforms,
            } => {
                let component = resolve(*registry)?;
                emit(&Message::Stage {
                    stage: "registry checks".to_string(),
                    plugin: component.flavor.plugin.name.clone(),
                    path: component.flavor.plugin.path.clone(),
                });
                let platforms = platforms
                    .iter()
                    .map(|p| kiln_distribution::Platform::parse(p).map_err(Error::BadArgument))
                    .collect::<Result<Vec<_>>>()?;
                let connected = super::registry::Connected::connect(
                    session,
                    &component,
                    "kiln image exists",
                    true,
                )?;
                connected.check_members(std::slice::from_ref(&image))?;
                connected
                    .exists(&image, &platforms)
                    .map(|(checker, answer)| {
                        let (state, detail) = match answer {
                            super::checks::CheckAnswer::Exists(d) => ("exists", d),
                            super::checks::CheckAnswer::Absent => ("absent", String::new()),
                            super::checks::CheckAnswer::Unknown(d) => ("unknown", d),
                        };
                        serde_json::to_value(ExistsAnswer {
                            checker,
                            state: state.to_string(),
                            detail,
                        })
                        .unwrap_or_default()
                    })
            }
            Task::ContextHook { builder, request } => {
                let component = resolve(*builder)?;
                emit(&Message::Stage {
                    stage: "context hook".to_string(),
                    plugin: component.flavor.plugin.name.clone(),
                    path: component.flavor.plugin.path.clone(),
                });
                component
                    .run_context_hook(session, &request)
                    .map(|files| serde_json::to_value(files).unwrap_or_default())
            }
        });
    // The live line (tty progress) is cleared before the answer goes back.
    crate::output::finish_progress();
    let (message, code) = match result {
        Ok(done) => (Message::Done(done), exit::OK),
        Err(e) => (
            Message::Error {
                message: e.to_string(),
                code: e.exit_code(),
            },
            e.exit_code(),
        ),
    };
    emit(&message);
    Ok(code)
}

fn emit(message: &Message) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, message);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn resolve(c: JobComponent) -> Result<ResolvedComponent> {
    let t = ComponentType::from_name(&c.component_type).ok_or_else(|| {
        Error::BadArgument(format!("unknown component type {:?}", c.component_type))
    })?;
    let catalog = Catalog::from_files(std::slice::from_ref(&c.path));
    if let Some(p) = catalog.problems.first() {
        return Err(Error::BadArgument(format!(
            "{}: {}",
            p.path.display(),
            p.reason
        )));
    }
    let flavor = catalog.find(Some(t), &c.flavor)?.clone();
    ResolvedComponent::from_resolved(flavor, c.config, c.label, c.component)
}

fn execute_job(session: &Session<'_>, job: Job, started: Instant) -> Result<Outcome> {
    let builder = resolve(job.builder)?;
    let registry = job.registry.map(resolve).transpose()?;
    let checks = match (&registry, job.run_checks) {
        _ if job.checks_off.is_some() => CheckPlan::Off(job.checks_off.unwrap_or_default()),
        (Some(r), true) => CheckPlan::Registry {
            registry: r.label.clone(),
            flavor: r.flavor.name().to_string(),
            image: job.image.clone(),
        },
        _ => CheckPlan::NoneConfigured,
    };
    let plan = Plan {
        image: job.image,
        images: job.images,
        flavor: builder.flavor.name().to_string(),
        builder_component: builder,
        registry_component: registry,
        dockerfile: job.dockerfile,
        context: job.context,
        checks,
        request: job.request,
        // Resolved and hashed by the parent: the worker only executes.
        bases: Vec::new(),
        inputs: job.inputs,
        force: job.force,
        on_unknown: job.on_unknown,
        archive: Some(Archive::At(job.archive)),
        started: started
            .checked_sub(std::time::Duration::from_millis(job.elapsed_ms))
            .unwrap_or(started),
    };
    let executing = Instant::now();
    let result = execute(session, plan, &mut |stage, component| {
        emit(&Message::Stage {
            stage: stage.to_string(),
            plugin: component.flavor.plugin.name.clone(),
            path: component.flavor.plugin.path.clone(),
        })
    });
    tracing::debug!(
        ms = executing.elapsed().as_secs_f64() * 1000.0,
        "worker: executing the plan"
    );
    result
}
