//! Carrying out a Dockerfile without a daemon.
//!
//! Stages start from `scratch`, an earlier stage, a registry image or an
//! OCI layout build context; base images' `ONBUILD` triggers run first.
//! `COPY`/`ADD` take local files from the context archive (globs, `--from`
//! an earlier stage or an image, `--chown` by number or by the stage's
//! `/etc/passwd` and `/etc/group`, `--chmod`), one layer each; the metadata
//! instructions (`ARG`, `ENV`, `LABEL`, `WORKDIR`, `USER`, `EXPOSE`,
//! `VOLUME`, `SHELL`, `CMD`, `ENTRYPOINT`, `STOPSIGNAL`, `HEALTHCHECK`,
//! `ONBUILD`, `MAINTAINER`) change the config. `RUN` runs its command in a
//! container through an OCI runtime (`run.rs`). File data is shared, never copied: every file is a slice of the
//! context archive or of a base layer.
//!
//! A layer whose tar is unchanged since an earlier build takes its blob from
//! the [`Store`] instead of being compressed again.

use std::{collections::BTreeMap, rc::Rc};

use kiln_distribution::CallError;
use serde_json::Value;

use crate::{
    context::ContextFiles,
    dockerfile::{self, Args, Instruction},
    error::{at, pull_failed, BuildError},
    fs::tree::remove_under,
    image::{self, history_entry, Entry, Image, Kind, Layer, Platform, RuntimeConfig},
    instructions::{self, Command},
    sources::{self, Base},
    stages::{self, FromSpec},
    store::Store,
};

mod copy;
mod layers;
mod metadata;
mod run;

/// What `RUN` needs: the runtime (or why there is none), a folder for its
/// bundles, where its output goes, and whether the user pressed Ctrl-C.
pub struct Runner<'a> {
    /// The OCI runtime, or why none could be found.
    pub runtime: Result<crate::runtime::Runtime, String>,
    /// Where bundles are made (and removed).
    pub work_dir: std::path::PathBuf,
    /// Each line a command prints, as it prints it.
    pub output: &'a dyn Fn(&str),
    /// A `RUN` step starting (its Dockerfile text), for progress.
    pub step: &'a dyn Fn(&str),
    /// Whether to stop.
    pub cancelled: &'a dyn Fn() -> bool,
    /// The build's `--secret`s, for `RUN --mount=type=secret`.
    pub secrets: &'a [kiln_plugin_api::BuildSecret],
    /// Where `RUN --mount=type=cache` folders are kept across builds.
    pub cache_mounts: std::path::PathBuf,
    /// How a stage's files are put on disk for `RUN`.
    pub snapshotter: Snapshotter,
    /// Layers unpacked for overlay mounts, kept across builds (none: the
    /// cache could not hold them).
    pub snapshots: Option<crate::runtime::overlay::Snapshots>,
}

/// How a stage's files are put on disk for `RUN` (BuildKit's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshotter {
    /// An overlay mount where the kernel and the user's rights allow it,
    /// else a copy.
    Auto,
    /// An overlay mount, or the build fails saying why not.
    Overlayfs,
    /// A copy of the files, written out for each stage.
    Native,
}

/// Fetches a registry image for a platform.
pub type Pull<'a> = dyn Fn(&str, &Platform) -> Result<Base, CallError> + 'a;

/// What to build.
pub struct BuildInput<'a> {
    /// The Dockerfile's text.
    pub dockerfile: &'a str,
    /// The build context the host made.
    pub context: &'a ContextFiles,
    /// The sha1 of that archive, when known: it lets an unchanged `COPY`
    /// find its layer by recipe.
    pub context_sha1: Option<&'a str>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<&'a str>,
    /// `--label`s, set on the result after the Dockerfile's own.
    pub labels: BTreeMap<String, String>,
    /// The epoch second recorded in the image (0, or `SOURCE_DATE_EPOCH`).
    pub created: u64,
    /// The platform built for.
    pub platform: Platform,
    /// `--build-context NAME=VALUE` (`oci-layout://PATH[:TAG]`,
    /// `docker-image://REF`).
    pub contexts: BTreeMap<String, String>,
    /// `--no-cache`: compress every layer again.
    pub no_cache: bool,
    /// The layer cache.
    pub store: Option<&'a Store>,
    /// Fetches registry images.
    pub pull: &'a Pull<'a>,
    /// Runs `RUN` commands; without it, `RUN` is refused.
    pub runner: Option<&'a Runner<'a>>,
    /// Where the compression of large layers is reported (none: not).
    pub events: Option<&'a kiln_plugin_api::author::Events>,
}

/// The result of a build.
pub struct Built {
    /// The image.
    pub image: Image,
    /// Layers made by this build.
    pub layers_made: usize,
    /// Of those, how many came from the cache.
    pub layers_cached: usize,
    /// `--build-arg`s no ARG of the built stages declares (Docker's proxy
    /// variables aside), which Docker warns about.
    pub unused_args: Vec<String>,
}

/// A stage being built.
#[derive(Clone, Default)]
struct Stage {
    name: Option<String>,
    /// The platform it is built for (`FROM --platform`, the stage it
    /// starts from, or the build's); set when the stage starts.
    platform: Option<Platform>,
    /// The base's config, when not `scratch`.
    base_config: Option<Value>,
    /// Layers whose files are not in `files` (a base image's), bottom first.
    lower: Vec<Layer>,
    /// The files of `lower`, applied once when first needed.
    lower_fs: Option<Rc<BTreeMap<String, Entry>>>,
    /// Changes made since `lower_fs` was computed (a `RUN` taken from the
    /// cache), applied when the files are next needed.
    pending: Vec<Pending>,
    /// Its files on disk, kept between `RUN`s.
    disk: DiskSlot,
    /// Files this stage (or the stage it started from) added.
    files: BTreeMap<String, Entry>,
    /// All layers, bottom first.
    layers: Vec<Layer>,
    history: Vec<Value>,
    runtime: RuntimeConfig,
    /// ARG and ENV values for substitution.
    vars: BTreeMap<String, String>,
    shell: Vec<String>,
    cmd_set: bool,
    author: Option<String>,
}

impl Stage {
    fn lower_fs(&mut self) -> Result<Rc<BTreeMap<String, Entry>>, String> {
        match &self.lower_fs {
            Some(fs) if self.pending.is_empty() => return Ok(fs.clone()),
            Some(fs) => {
                let mut files = (**fs).clone();
                for change in self.pending.drain(..) {
                    match change {
                        Pending::Files(added) => {
                            for (path, entry) in added {
                                if !matches!(entry.kind, Kind::Dir) {
                                    remove_under(&mut files, &path);
                                }
                                files.insert(path, entry);
                            }
                        }
                        Pending::Layer(layer) => crate::fs::overlay::apply(&mut files, &layer)?,
                    }
                }
                self.lower_fs = Some(Rc::new(files));
            }
            None => {
                // `lower` holds every layer, pending ones included.
                self.pending.clear();
                self.lower_fs = Some(Rc::new(crate::fs::overlay::filesystem(&self.lower)?));
            }
        }
        Ok(self.lower_fs.clone().unwrap_or_default())
    }

    /// The whole filesystem: the base's, then this stage's files.
    fn filesystem(&mut self) -> Result<BTreeMap<String, Entry>, String> {
        let mut fs = (*self.lower_fs()?).clone();
        for (path, entry) in &self.files {
            if !matches!(entry.kind, Kind::Dir) {
                remove_under(&mut fs, path);
            }
            fs.insert(path.clone(), entry.clone());
        }
        Ok(fs)
    }

    /// An entry of the filesystem, without building all of it.
    fn lookup(&mut self, path: &str) -> Result<Option<Entry>, String> {
        if let Some(e) = self.files.get(path) {
            return Ok(Some(e.clone()));
        }
        if self.lower.is_empty() {
            return Ok(None);
        }
        Ok(self.lower_fs()?.get(path).cloned())
    }
}

/// A stage's files on disk, kept between its `RUN`s; a copy of the stage
/// (`FROM earlier`) starts without them.
#[derive(Default)]
pub(crate) struct DiskSlot(Option<OnDisk>);

/// How a stage's files are on disk.
pub(crate) enum OnDisk {
    /// Written out ([`crate::runtime::rootfs::DiskRoot`]).
    Copy(Box<crate::runtime::rootfs::DiskRoot>),
    /// Folders an overlay stacks ([`crate::runtime::overlay::Stack`]).
    Overlay(crate::runtime::overlay::Stack),
}

impl OnDisk {
    /// How many of the stage's layers they reflect.
    fn layers(&self) -> usize {
        match self {
            OnDisk::Copy(d) => d.layers,
            OnDisk::Overlay(s) => s.layers,
        }
    }
}

impl Clone for DiskSlot {
    fn clone(&self) -> Self {
        DiskSlot(None)
    }
}

/// A change to a stage's files not yet applied to its `lower_fs`.
#[derive(Clone)]
enum Pending {
    /// Files a `COPY` added.
    Files(BTreeMap<String, Entry>),
    /// A layer from the cache.
    Layer(Layer),
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The builder's state across stages.
struct Run<'a, 'i> {
    input: &'i BuildInput<'a>,
    escape: char,
    global_args: BTreeMap<String, String>,
    stages: Vec<Stage>,
    layers_made: usize,
    layers_cached: usize,
    /// Every ARG name the built stages (and the global scope) declare.
    declared: std::collections::BTreeSet<String>,
}

impl Run<'_, '_> {
    /// The base named by `FROM` or `COPY --from`: not a stage.
    fn image(&self, name: &str, platform: &Platform, line: usize) -> Result<Base, BuildError> {
        let spec = self.input.contexts.get(name).map(String::as_str);
        match spec {
            Some(s) if s.starts_with("oci-layout://") => {
                sources::from_layout(&s["oci-layout://".len()..], platform).map_err(|e| at(line, e))
            }
            Some(s) if s.starts_with("docker-image://") => {
                (self.input.pull)(&s["docker-image://".len()..], platform)
                    .map_err(|e| pull_failed(line, e))
            }
            Some(s) => Err(at(line, format!(
                "build context {name}={s}: only oci-layout:// and docker-image:// contexts are supported"
            ))),
            None => (self.input.pull)(name, platform).map_err(|e| pull_failed(line, e)),
        }
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.stages.len())
            })
    }

    /// The platform of the stage `spec` starts (`image` is its expanded
    /// image): `--platform`, else that of the earlier stage it starts
    /// from, else the build's.
    fn stage_platform(
        &self,
        spec: &FromSpec,
        image: &str,
        line: usize,
    ) -> Result<Platform, BuildError> {
        if let Some(p) = &spec.platform {
            let text =
                dockerfile::expand(p, &self.global_args, self.escape).map_err(|e| at(line, e))?;
            return Platform::parse(&text).map_err(|e| at(line, e));
        }
        let earlier = self
            .stage_index(image)
            .filter(|_| !self.input.contexts.contains_key(image))
            .and_then(|i| self.stages[i].platform.clone());
        Ok(earlier.unwrap_or_else(|| self.input.platform.clone()))
    }

    fn from(&mut self, ins: &Instruction, spec: &FromSpec) -> Result<(), BuildError> {
        let line = ins.line;
        let expand = |text: &str| {
            dockerfile::expand(text, &self.global_args, self.escape).map_err(|e| at(line, e))
        };
        let image_name = expand(&spec.image)?;
        let image = image_name.as_str();
        let platform = self.stage_platform(spec, image, line)?;
        let name = spec.name.clone();
        let mut stage = if image.eq_ignore_ascii_case("scratch") {
            Stage {
                runtime: RuntimeConfig {
                    env: vec![DEFAULT_PATH.into()],
                    ..Default::default()
                },
                ..Default::default()
            }
        } else if let Some(i) = self
            .stage_index(image)
            .filter(|_| !self.input.contexts.contains_key(image))
        {
            let mut s = self.stages[i].clone();
            s.cmd_set = false;
            s
        } else {
            let base = self.image(image, &platform, line)?;
            let runtime = base
                .config
                .get("config")
                .map(RuntimeConfig::from_config)
                .unwrap_or_default();
            let history = base
                .config
                .get("history")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            Stage {
                vars: BTreeMap::new(),
                shell: runtime.shell.clone().unwrap_or_default(),
                runtime,
                history,
                lower: base.layers.clone(),
                layers: base.layers,
                base_config: Some(base.config),
                ..Default::default()
            }
        };
        stage.name = name;
        stage.platform = Some(platform);
        if stage.shell.is_empty() {
            stage.shell = vec!["/bin/sh".into(), "-c".into()];
        }
        stage.vars = stage
            .runtime
            .env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The base's ONBUILD triggers run now, and are not inherited.
        let triggers = std::mem::take(&mut stage.runtime.on_build);
        self.stages.push(stage);
        for trigger in triggers {
            let parsed = dockerfile::parse(&trigger).map_err(|e| {
                at(
                    line,
                    format!("ONBUILD trigger {trigger:?} of {image}: {}", e.message),
                )
            })?;
            for t in parsed.instructions {
                if matches!(t.keyword.as_str(), "FROM" | "ONBUILD" | "MAINTAINER") {
                    return Err(at(
                        line,
                        format!(
                            "{image} has the ONBUILD trigger {trigger:?}, which the daemonless `oci` \
                             builder cannot run: build with the `local` builder (--builder-flavor local)"
                        ),
                    ));
                }
                let t = Instruction { line, ..t };
                let command = Command::parse(&t)?;
                self.instruction(&t, &command)?;
            }
        }
        Ok(())
    }

    fn instruction(&mut self, ins: &Instruction, command: &Command) -> Result<(), BuildError> {
        let line = ins.line;
        let escape = self.escape;
        let Some(current) = self.stages.len().checked_sub(1) else {
            return Err(at(line, format!("{} before the first FROM", ins.keyword)));
        };
        let vars = self.stages[current].vars.clone();
        let expand = |text: &str| dockerfile::expand(text, &vars, escape).map_err(|e| at(line, e));
        let text = || expand(&ins.original);
        let failed = |e: String| at(line, e);
        let mut layer = false;
        let stage = &mut self.stages[current];
        match command {
            Command::Arg => {
                let declared = declare_args(
                    &ins.original,
                    &vars,
                    escape,
                    &self.input.build_args,
                    &self.global_args,
                    &mut self.declared,
                )
                .map_err(failed)?;
                stage.vars.extend(declared);
            }
            Command::Env => metadata::env(stage, &ins.original, &vars, escape).map_err(failed)?,
            Command::Label => {
                metadata::label(stage, &ins.original, &vars, escape).map_err(failed)?
            }
            Command::Workdir => metadata::workdir(stage, &text()?),
            Command::User => stage.runtime.user = Some(text()?),
            Command::StopSignal => stage.runtime.stop_signal = Some(text()?),
            Command::Expose => metadata::expose(stage, &text()?).map_err(failed)?,
            Command::Volume => {
                let list = match &ins.args {
                    Args::Exec(l) => l.iter().map(|v| expand(v)).collect::<Result<Vec<_>, _>>()?,
                    Args::Shell(t) => expand(t)?.split_whitespace().map(str::to_string).collect(),
                };
                metadata::volume(stage, list).map_err(failed)?;
            }
            Command::Shell(shell) => {
                stage.shell = shell.clone();
                stage.runtime.shell = Some(shell.clone());
            }
            Command::Cmd => metadata::cmd(stage, &ins.args),
            Command::Entrypoint => metadata::entrypoint(stage, &ins.args),
            Command::Healthcheck(check) => stage.runtime.healthcheck = Some(check.clone()),
            Command::Onbuild(trigger) => stage.runtime.on_build.push(trigger.clone()),
            Command::Maintainer(author) => stage.author = Some(author.clone()),
            Command::Copy(flags) | Command::Add(flags) => {
                self.copy(ins, flags, current, &vars)?;
                layer = true;
            }
            Command::Run(flags) => {
                self.run(ins, flags, current)?;
                layer = true;
            }
            Command::From(_) => return Err(at(line, "FROM is handled by the stage loop")),
        }
        let created_by = format!("{} {}", ins.keyword, ins.original.trim());
        self.stages[current]
            .history
            .push(history_entry(self.input.created, &created_by, !layer));
        Ok(())
    }
}

/// The values of the `ARG`s declared in `text` (as written; defaults read
/// with `vars`): the `--build-arg` given, else the default, else the global
/// ARG of that name; an ARG with none of these stays unset. Each name goes
/// into `declared`.
fn declare_args(
    text: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
    build_args: &BTreeMap<String, String>,
    global: &BTreeMap<String, String>,
    declared: &mut std::collections::BTreeSet<String>,
) -> Result<Vec<(String, String)>, String> {
    Ok(dockerfile::arg_decls(text, vars, escape)?
        .into_iter()
        .filter_map(|(name, default)| {
            declared.insert(name.clone());
            let value = build_args
                .get(&name)
                .cloned()
                .or(default)
                .or_else(|| global.get(&name).cloned())?;
            Some((name, value))
        })
        .collect())
}

/// What a walk over the Dockerfile does with each instruction of a stage
/// the target needs.
enum Step<'x> {
    /// A stage starts.
    From(&'x Instruction, &'x FromSpec),
    /// An instruction of the current stage.
    Instruction(&'x Instruction, &'x Command),
}

/// Walk the Dockerfile in order: global `ARG`s are declared, stages the
/// target does not need are skipped (as BuildKit does) with a placeholder
/// that keeps stage numbering, and every other instruction goes to `step`.
/// Every instruction is typed and its flags checked before any stage runs.
/// Returns the target stage's index.
fn walk<'a, 'i>(
    run: &mut Run<'a, 'i>,
    file: &dockerfile::Dockerfile,
    mut step: impl FnMut(&mut Run<'a, 'i>, Step<'_>) -> Result<(), BuildError>,
) -> Result<usize, BuildError> {
    if !file.instructions.iter().any(|i| i.keyword == "FROM") {
        return Err(at(0, "the Dockerfile has no FROM"));
    }
    let typed = instructions::typed(file)?;
    let needed = stages::needed(file, run.input.target)?;
    let mut index = 0usize;
    let mut skipping = false;
    for (ins, command) in &typed {
        if *command == Command::Arg && run.stages.is_empty() && !skipping {
            let declared = declare_args(
                &ins.original,
                &run.global_args,
                run.escape,
                &run.input.build_args,
                &run.global_args,
                &mut run.declared,
            )
            .map_err(|e| at(ins.line, e))?;
            run.global_args.extend(declared);
            continue;
        }
        if let Command::From(from) = command {
            skipping = !needed.contains(&index);
            index += 1;
            if skipping {
                run.stages.push(Stage {
                    name: from.name.clone(),
                    ..Default::default()
                });
                continue;
            }
            step(run, Step::From(ins, from))?;
            continue;
        }
        if !skipping {
            step(run, Step::Instruction(ins, command))?;
        }
    }
    Ok(needed.iter().max().copied().unwrap_or(0))
}

impl<'a, 'i> Run<'a, 'i> {
    fn new(input: &'i BuildInput<'a>, escape: char) -> Self {
        Run {
            input,
            escape,
            // BuildKit's automatic platform ARGs are global (usable in
            // `FROM`; a stage sees them once it declares them).
            global_args: input.platform.build_args(),
            stages: Vec::new(),
            layers_made: 0,
            layers_cached: 0,
            declared: Default::default(),
        }
    }
}

/// The platforms `RUN` would run for when `input` is built, each with the
/// line of its first `RUN`: found from the Dockerfile alone, before any
/// work, so that a platform this machine cannot run is refused up front.
pub fn run_platforms(input: &BuildInput<'_>) -> Result<Vec<(usize, Platform)>, BuildError> {
    let file = dockerfile::parse(input.dockerfile).map_err(|e| at(e.line, e.message))?;
    let mut run = Run::new(input, file.escape);
    let mut found: Vec<(usize, Platform)> = Vec::new();
    walk(&mut run, &file, |run, step| {
        match step {
            Step::From(ins, spec) => {
                let image = dockerfile::expand(&spec.image, &run.global_args, run.escape)
                    .map_err(|e| at(ins.line, e))?;
                let platform = run.stage_platform(spec, &image, ins.line)?;
                run.stages.push(Stage {
                    name: spec.name.clone(),
                    platform: Some(platform),
                    ..Default::default()
                });
            }
            Step::Instruction(ins, Command::Run(_)) => {
                let platform = run.stages.last().and_then(|s| s.platform.clone());
                if let Some(p) = platform.filter(|p| !found.iter().any(|(_, f)| f == p)) {
                    found.push((ins.line, p));
                }
            }
            Step::Instruction(..) => {}
        }
        Ok(())
    })?;
    Ok(found)
}

/// Build the target stage of `input` into an image.
pub fn build(input: &BuildInput<'_>) -> Result<Built, BuildError> {
    let file = dockerfile::parse(input.dockerfile).map_err(|e| at(e.line, e.message))?;
    let mut run = Run::new(input, file.escape);
    let target = walk(&mut run, &file, |run, step| match step {
        Step::From(ins, spec) => run.from(ins, spec),
        Step::Instruction(ins, command) => run.instruction(ins, command),
    })?;
    let mut stage = run.stages.swap_remove(target);
    stage.runtime.labels.extend(input.labels.clone());
    let image = image::assemble(image::Assembly {
        base_config: stage.base_config.as_ref(),
        runtime: &stage.runtime,
        layers: stage.layers,
        history: stage.history,
        author: stage.author.as_deref(),
        created: input.created,
        platform: &input.platform,
    })
    .map_err(|e| at(0, e))?;
    // Docker's predefined ARGs are usable without a declaration.
    const PREDEFINED: &[&str] = &[
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    ];
    let unused_args = input
        .build_args
        .keys()
        .filter(|k| !run.declared.contains(*k))
        .filter(|k| !PREDEFINED.contains(&k.to_ascii_uppercase().as_str()))
        .cloned()
        .collect();
    Ok(Built {
        image,
        layers_made: run.layers_made,
        layers_cached: run.layers_cached,
        unused_args,
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    fn no_pull(name: &str, _: &Platform) -> Result<Base, CallError> {
        Err(CallError::Failed(format!(
            "no registry in this test: {name}"
        )))
    }

    #[test]
    fn run_without_a_runtime_names_what_to_install() {
        let runner = Runner {
            runtime: crate::runtime::Runtime::find("auto", Some(std::ffi::OsStr::new("/none"))),
            work_dir: std::path::PathBuf::from("/nonexistent"),
            output: &|_| {},
            step: &|_| {},
            cancelled: &|| false,
            secrets: &[],
            cache_mounts: std::path::PathBuf::from("/nonexistent"),
            snapshotter: Snapshotter::Native,
            snapshots: None,
        };
        let input = BuildInput {
            dockerfile: "FROM scratch\nRUN echo hi\n",
            context: &ContextFiles::default(),
            context_sha1: None,
            build_args: BTreeMap::new(),
            target: None,
            labels: BTreeMap::new(),
            created: 0,
            platform: Platform::parse("linux/amd64").expect("platform"),
            contexts: BTreeMap::new(),
            no_cache: false,
            store: None,
            pull: &no_pull,
            runner: Some(&runner),
            events: None,
        };
        let e = build(&input).err().expect("RUN refused");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("apt-get install crun"), "{}", e.message);
        assert_eq!(e.cause, crate::error::Cause::BuildFailed);
    }

    #[test]
    fn stages_the_target_does_not_need_are_skipped() {
        let f = dockerfile::parse(
            "FROM scratch AS a\nFROM scratch AS b\nCOPY --from=a x y\nFROM scratch AS c\nFROM b\n",
        )
        .expect("parse");
        assert_eq!(
            stages::needed(&f, None).expect("ok"),
            [0, 1, 3].into_iter().collect()
        );
        assert_eq!(
            stages::needed(&f, Some("c")).expect("ok"),
            [2].into_iter().collect()
        );
        let f = dockerfile::parse(
            "FROM scratch AS uv\nFROM scratch AS no\nFROM scratch\n\
             RUN --mount=type=cache,target=/c --mount=target=/u,FROM=UV,source=/uv x\n",
        )
        .expect("parse");
        assert_eq!(
            stages::needed(&f, None).expect("ok"),
            [0, 2].into_iter().collect()
        );
        assert!(stages::needed(&f, Some("zzz")).is_err());
    }

    /// A context archive holding `files` (a path ending in `/` is a folder,
    /// `->` makes a symlink), and a build of `dockerfile` over it.
    fn build_over(dockerfile: &str, files: &[(&str, &[u8])]) -> Result<Built, BuildError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            if let Some((link, target)) = path.split_once(" -> ") {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, link, target).expect("link");
            } else if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, path, std::io::empty())
                    .expect("dir");
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, *data).expect("file");
            }
        }
        let context = dir.path().join("context.tar");
        std::fs::write(&context, tar.into_inner().expect("tar")).expect("write");
        build(&BuildInput {
            dockerfile,
            context: &ContextFiles::open(&context)?,
            context_sha1: None,
            build_args: [("FROM_CLI".to_string(), "cli value".to_string())].into(),
            target: None,
            labels: BTreeMap::new(),
            created: 0,
            platform: Platform::parse("linux/arm64").expect("platform"),
            contexts: BTreeMap::new(),
            no_cache: false,
            store: None,
            pull: &no_pull,
            runner: None,
            events: None,
        })
    }

    fn config(built: &Built) -> Value {
        serde_json::from_slice(&built.image.config).expect("config")
    }

    fn paths(layer: &Layer) -> Vec<String> {
        crate::fs::overlay::filesystem(std::slice::from_ref(layer))
            .expect("layer")
            .into_keys()
            .collect()
    }

    #[test]
    fn run_platforms_are_found_before_any_work() {
        let runs = |dockerfile: &str, target: Option<&str>| {
            let input = BuildInput {
                dockerfile,
                context: &ContextFiles::default(),
                context_sha1: None,
                build_args: BTreeMap::new(),
                target,
                labels: BTreeMap::new(),
                created: 0,
                platform: Platform::parse("linux/riscv64").expect("platform"),
                contexts: BTreeMap::new(),
                no_cache: false,
                store: None,
                pull: &no_pull,
                runner: None,
                events: None,
            };
            run_platforms(&input)
                .expect("walk")
                .into_iter()
                .map(|(line, p)| format!("{line}:{p}"))
                .collect::<Vec<_>>()
        };
        let host = format!("linux/{}", image::host_architecture());
        let file = "FROM --platform=$BUILDPLATFORM scratch AS tools\nRUN make\n\
                    FROM tools AS more\nRUN more\n\
                    FROM scratch AS unused\nRUN never\n\
                    FROM --platform=linux/s390x scratch AS other\n\
                    FROM scratch\nCOPY --from=more /x /x\nRUN one\nRUN two\n";
        // `more` starts from `tools`, so runs natively too; `unused` is not
        // needed and `other` has no RUN.
        assert_eq!(
            runs(file, None),
            [format!("2:{host}"), "10:linux/riscv64".to_string()]
        );
        assert_eq!(runs(file, Some("unused")), ["6:linux/riscv64"]);
        assert!(runs("FROM scratch\nCOPY a b\n", None).is_empty());
    }

    #[test]
    fn build_args_no_arg_declares_are_reported() {
        let built = build_over("FROM scratch\nARG OTHER\n", &[]).expect("build");
        assert_eq!(built.unused_args, ["FROM_CLI"]);
        let built = build_over("ARG FROM_CLI\nFROM scratch\n", &[]).expect("build");
        assert!(built.unused_args.is_empty());
    }

    #[test]
    fn args_keep_quotes_and_platform_args_are_global() {
        let built = build_over(
            "ARG BASE=scratch\nFROM --platform=$BUILDPLATFORM $BASE\n\
             ARG MSG=\"hello world\" FROM_CLI TARGETARCH\n\
             LABEL msg=\"$MSG\" cli=\"$FROM_CLI\" arch=$TARGETARCH\n",
            &[],
        )
        .expect("build");
        assert!(built.unused_args.is_empty(), "{:?}", built.unused_args);
        let c = config(&built);
        assert_eq!(c["config"]["Labels"]["msg"], "hello world");
        assert_eq!(c["config"]["Labels"]["cli"], "cli value");
        assert_eq!(c["config"]["Labels"]["arch"], "arm64");
        assert_eq!(c["architecture"], "arm64");
        // ARG values are not left in the image's environment.
        assert!(!c["config"]["Env"].to_string().contains("hello world"));
    }

    #[test]
    fn add_unpacks_local_tar_archives_and_copies_other_files() {
        let mut inner = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o600);
        h.set_uid(7);
        h.set_size(3);
        h.set_entry_type(tar::EntryType::Regular);
        inner
            .append_data(&mut h, "pkg/data.txt", &b"abc"[..])
            .expect("inner");
        let inner = inner.into_inner().expect("inner");
        let gz = image::gzip_parallel(&inner).expect("gzip");
        let built = build_over(
            "FROM scratch\nADD bundle.tgz plain.tar notes.gz /opt/\n",
            &[
                ("bundle.tgz", &gz),
                ("plain.tar", &inner),
                ("notes.gz", b"\x1f\x8bnot gzip"),
            ],
        )
        .expect("build");
        let fs = crate::fs::overlay::filesystem(&built.image.layers).expect("fs");
        assert_eq!(fs["opt/pkg/data.txt"].mode, 0o600);
        assert_eq!(fs["opt/pkg/data.txt"].uid, 7, "ownership from the archive");
        assert!(fs.contains_key("opt/notes.gz"), "not an archive: copied");
        assert!(!fs.contains_key("opt/bundle.tgz"));
        let e = build_over(
            "FROM scratch\nADD a.tar.xz /\n",
            &[("a.tar.xz", b"\xfd7zXZ\x00rest")],
        )
        .err()
        .expect("xz refused");
        assert!(e.message.contains("xz") && e.line == 2, "{e}");
        let e = build_over("FROM scratch\nADD https://example.com/x /\n", &[])
            .err()
            .expect("url refused");
        assert!(e.message.contains("network"), "{e}");
    }

    #[test]
    fn copies_follow_symlinked_folders_and_dockers_destination_rules() {
        let built = build_over(
            "FROM scratch AS root\nCOPY rootfs/ /\nCOPY link /followed\n\
             FROM root\nCOPY tool /bin/\nCOPY tool /renamed\nCOPY dir/ /into/\n\
             WORKDIR /w\nCOPY one two ./\nWORKDIR /new\nCOPY one .\n",
            &[
                ("rootfs/", b""),
                ("rootfs/usr/", b""),
                ("rootfs/usr/bin/", b""),
                ("rootfs/usr/bin/x", b"x"),
                ("rootfs/bin -> usr/bin", b""),
                ("link -> tool", b""),
                ("tool", b"t"),
                ("dir/", b""),
                ("dir/sub/f", b"f"),
                ("one", b"1"),
                ("two", b"2"),
            ],
        )
        .expect("build");
        let layers = &built.image.layers;
        // A symlink inside a copied folder stays a link; a source that is
        // a link is followed (BuildKit's FollowSymlinks).
        let root = crate::fs::overlay::filesystem(&layers[..1]).expect("fs");
        assert_eq!(root["bin"].kind, Kind::Symlink("usr/bin".into()));
        assert_eq!(paths(&layers[1]), vec!["followed"]);
        assert_eq!(paths(&layers[2]), vec!["usr", "usr/bin", "usr/bin/tool"]);
        assert_eq!(paths(&layers[3]), vec!["renamed"]);
        assert_eq!(paths(&layers[4]), vec!["into", "into/sub", "into/sub/f"]);
        assert_eq!(paths(&layers[5]), vec!["w", "w/one", "w/two"]);
        // `.` names the working folder, made when missing (ZenML's `COPY . .`).
        assert_eq!(paths(&layers[6]), vec!["new", "new/one"]);
        let e = build_over(
            "FROM scratch\nCOPY one two /file\n",
            &[("one", b"1"), ("two", b"2")],
        )
        .err()
        .expect("many into a file");
        assert!(e.message.contains("must be a directory"), "{e}");
        let e = build_over("FROM scratch\nCOPY missing /\n", &[])
            .err()
            .expect("missing");
        assert!(e.message.contains("missing") && e.line == 2, "{e}");
        assert!(e.message.contains(".dockerignore"), "{e}");
        for escaping in ["../one", "sub/../../one", "/../one"] {
            let e = build_over(
                &format!("FROM scratch\nCOPY {escaping} /\n"),
                &[("one", b"1")],
            )
            .err()
            .expect("outside the context");
            assert!(
                e.message.contains("outside the build context"),
                "{escaping}: {e}"
            );
        }
        // Inside the context, `..` is fine.
        build_over("FROM scratch\nCOPY sub/../one /\n", &[("one", b"1")]).expect("inside");
    }

    #[test]
    fn heredocs_become_files() {
        let built = build_over(
            "FROM scratch\nARG WHO=kiln\nCOPY <<EOF <<'RAW' /etc/app/\nhello $WHO\nEOF\nraw $WHO\nRAW\n\
             COPY --chmod=755 <<-SCRIPT /run.sh\n\t#!/bin/sh\n\techo hi\n\tSCRIPT\n",
            &[],
        )
        .expect("build");
        let fs = crate::fs::overlay::filesystem(&built.image.layers).expect("fs");
        assert_eq!(
            fs["etc/app/EOF"].kind,
            Kind::File(crate::data::Data::from("hello kiln\n"))
        );
        assert_eq!(
            fs["etc/app/RAW"].kind,
            Kind::File(crate::data::Data::from("raw $WHO\n"))
        );
        assert_eq!(
            fs["run.sh"].kind,
            Kind::File(crate::data::Data::from("#!/bin/sh\necho hi\n"))
        );
        assert_eq!(fs["run.sh"].mode, 0o755);
    }

    #[test]
    fn metadata_instructions_reach_the_config() {
        let built = build_over(
            "FROM scratch AS base\nCMD [\"base-cmd\"]\nONBUILD LABEL from=onbuild\n\
             FROM base\nENTRYPOINT [\"/app\"]\nHEALTHCHECK --interval=1m30s --retries=3 CMD [\"/app\", \"check\"]\n\
             EXPOSE 80 53/UDP\nSTOPSIGNAL SIGQUIT\nSHELL [\"/bin/bash\", \"-c\"]\nCMD run it\nMAINTAINER someone\n",
            &[],
        )
        .expect("build");
        let c = config(&built);
        let cfg = &c["config"];
        assert_eq!(cfg["Entrypoint"], serde_json::json!(["/app"]));
        // CMD after ENTRYPOINT in the same stage is kept; shell form uses SHELL.
        assert_eq!(cfg["Cmd"], serde_json::json!(["/bin/bash", "-c", "run it"]));
        assert_eq!(
            cfg["Healthcheck"]["Test"],
            serde_json::json!(["CMD", "/app", "check"])
        );
        assert_eq!(cfg["Healthcheck"]["Interval"], 90_000_000_000i64);
        assert_eq!(cfg["Healthcheck"]["Retries"], 3);
        assert!(cfg["ExposedPorts"].get("53/udp").is_some());
        assert!(cfg["ExposedPorts"].get("80/tcp").is_some());
        assert_eq!(cfg["StopSignal"], "SIGQUIT");
        assert_eq!(cfg["Labels"]["from"], "onbuild", "the base's trigger ran");
        assert!(cfg.get("OnBuild").is_none(), "triggers are not inherited");
        assert_eq!(c["author"], "someone");
        let history = c["history"].as_array().expect("history");
        assert!(history.iter().all(|h| h["empty_layer"] == true));
        // ENTRYPOINT drops a CMD inherited from the base stage.
        let built = build_over(
            "FROM scratch AS b\nCMD [\"x\"]\nFROM b\nENTRYPOINT [\"/e\"]\n",
            &[],
        )
        .expect("build");
        assert!(config(&built)["config"].get("Cmd").is_none());
    }
}
