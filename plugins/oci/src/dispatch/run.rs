//! `RUN`: the command runs in a container on the stage's filesystem,
//! through an OCI runtime ([`crate::runtime`]); what it changed becomes one
//! layer. Shell form runs through the stage's `SHELL` (`/bin/sh -c`), exec
//! form as written; neither is expanded by the builder. The command sees
//! the stage's `ENV` and its declared `ARG`s (build args are not kept in
//! the image), runs as `USER` (by name or id, through the image's
//! `/etc/passwd` and `/etc/group`) in `WORKDIR` (created when missing).
//!
//! A step is reused from the cache when its parent layers, command,
//! environment, user, working folder, network, mount declarations and the
//! contents of its bind mounts are unchanged, unless `--no-cache`.

use std::{collections::BTreeMap, rc::Rc};

use crate::{
    dockerfile::{Args, Instruction},
    error::{at, failed, BuildError, Cause},
    image::{Entry, Kind, Layer},
    instructions::{RunFlags, RunMount, Sharing},
    runtime::{
        overlay::{Lower, Mounted, Stack},
        rootfs::{self, DiskRoot},
        spec::{self, Process},
        Container, Ended,
    },
};

use super::{DiskSlot, OnDisk, Run, Snapshotter, Stage};

/// How many of a failed command's last output lines its error shows.
const TAIL_LINES: usize = 20;

/// The text of `file` in the stage's filesystem, when it is a file.
fn text_of(stage: &mut Stage, file: &str) -> Result<Option<String>, String> {
    Ok(match stage.lookup(file)? {
        Some(Entry {
            kind: Kind::File(data),
            ..
        }) => {
            let data = data.bytes().map_err(|e| format!("reading /{file}: {e}"))?;
            Some(String::from_utf8_lossy(&data).into_owned())
        }
        _ => None,
    })
}

/// `USER`'s value as ids: `name` or `uid`, optionally `:group` or `:gid`;
/// supplementary groups from `/etc/group`. Docker's rules: a name must be
/// in `/etc/passwd`, an id need not (its group is then 0).
fn resolve_user(stage: &mut Stage, value: &str) -> Result<(u32, u32, Vec<u32>), String> {
    let passwd = text_of(stage, "etc/passwd")?.unwrap_or_default();
    let group = text_of(stage, "etc/group")?.unwrap_or_default();
    let fields = |l: &str| l.split(':').map(str::to_string).collect::<Vec<_>>();
    let (user, grp) = match value.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value, None),
    };
    let entry = passwd
        .lines()
        .map(fields)
        .find(|f| f.len() >= 4 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let uid: u32 = match user.parse() {
        Ok(n) => n,
        Err(_) => entry
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| format!("USER {value}: no user {user:?} in the image's /etc/passwd"))?,
    };
    let primary: u32 = entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0);
    let gid = match grp {
        None => primary,
        Some(g) => match g.parse() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(fields)
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("USER {value}: no group {g:?} in the image's /etc/group"))?,
        },
    };
    let name = entry.as_ref().map(|f| f[0].clone());
    let mut extra: Vec<u32> = match (&name, grp) {
        (Some(name), None) => group
            .lines()
            .map(fields)
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        _ => Vec::new(),
    };
    extra.sort_unstable();
    extra.dedup();
    Ok((uid, gid, extra))
}

/// How a shell-form `RUN` uses its here-documents (BuildKit's rules).
enum Heredoc<'i> {
    /// It has none.
    None,
    /// `RUN <<EOF` alone: the document is the script (run by its `#!`
    /// interpreter when it has one, else by the shell).
    Script(&'i crate::dockerfile::Heredoc),
    /// Documents fed to a command (`RUN cat <<EOF > f`), or several: the
    /// shell gets the command line with the documents, as written.
    Fed(String),
}

fn heredoc_use(ins: &Instruction) -> Heredoc<'_> {
    let marker = ins.original.trim();
    match ins.heredocs.as_slice() {
        [] => Heredoc::None,
        [doc]
            if marker.strip_prefix("<<").map(|m| {
                m.trim_start_matches('-')
                    .trim_matches(|c| c == '"' || c == '\'')
            }) == Some(doc.name.as_str()) =>
        {
            Heredoc::Script(doc)
        }
        docs => {
            let mut text = format!("{marker}\n");
            for doc in docs {
                text.push_str(&doc.body);
                text.push_str(&doc.name);
                text.push('\n');
            }
            Heredoc::Fed(text)
        }
    }
}

/// The cache key of a `RUN` step: its parent layers, process, mount
/// declarations and the contents of its bind mounts.
fn step_key(
    stage: &Stage,
    process: &Process,
    mounts: &[RunMount],
    binds: &[Option<BindSource>],
    platform: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"kiln-oci-run-v1\0");
    h.update(platform.as_bytes());
    h.update([0]);
    for layer in &stage.layers {
        h.update(layer.diff_id.as_bytes());
        h.update([0]);
    }
    let parts = serde_json::json!({
        "args": process.args,
        "env": process.env,
        "cwd": process.cwd,
        "user": [process.uid, process.gid, &process.additional_gids],
        "network": format!("{:?}", process.network),
        // Declarations only: never a secret's value or a cache's contents.
        "mounts": format!("{mounts:?}"),
        "binds": binds.iter().map(|b| b.as_ref().map(|b| b.digest.clone())).collect::<Vec<_>>(),
    });
    h.update(parts.to_string().as_bytes());
    format!("sha256:{:x}", h.finalize())
}

impl Run<'_, '_> {
    pub(super) fn run(
        &mut self,
        ins: &Instruction,
        flags: &RunFlags,
        current: usize,
    ) -> Result<(), BuildError> {
        let line = ins.line;
        let Some(runner) = self.input.runner else {
            return Err(failed(
                line,
                "RUN needs an OCI runtime, and none was given to this build".into(),
            ));
        };
        let cwd = self.stages[current]
            .runtime
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".to_string());
        let mounts: Vec<RunMount> = flags
            .mounts
            .iter()
            .cloned()
            .map(|m| m.in_dir(&cwd))
            .collect();
        let binds = mounts
            .iter()
            .map(|m| match m {
                RunMount::Bind { source, from, .. } => {
                    let files = self.source_files(from.as_deref(), current, line)?;
                    let place = from.as_deref().unwrap_or("the build context");
                    BindSource::of(&files, source)
                        .map(Some)
                        .map_err(|e| at(line, format!("--mount=type=bind from {place}: {e}")))
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let stage = &mut self.stages[current];
        // A `#!` here-document is a file the command runs (BuildKit's
        // /dev/pipes/NAME).
        let mut script: Option<(String, &str)> = None;
        let args: Vec<String> = match &ins.args {
            Args::Exec(list) => list.clone(),
            Args::Shell(_) => {
                let mut a = stage.shell.clone();
                match heredoc_use(ins) {
                    Heredoc::None => a.push(ins.original.trim().to_string()),
                    Heredoc::Script(doc) if doc.body.starts_with("#!") => {
                        let path = format!("/dev/pipes/{}", doc.name);
                        script = Some((path.clone(), &doc.body));
                        a = vec![path];
                    }
                    Heredoc::Script(doc) => a.push(doc.body.clone()),
                    Heredoc::Fed(text) => a.push(text),
                }
                a
            }
        };
        if args.is_empty() {
            return Err(at(line, "RUN needs a command"));
        }
        let mut env: Vec<String> = stage.runtime.env.clone();
        let keys: Vec<String> = env
            .iter()
            .map(|e| e.split_once('=').map_or(e.clone(), |(k, _)| k.to_string()))
            .collect();
        for (k, v) in &stage.vars {
            if !keys.contains(k) {
                env.push(format!("{k}={v}"));
            }
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(super::DEFAULT_PATH.to_string());
        }
        let (uid, gid, additional_gids) = match stage.runtime.user.clone() {
            Some(u) if !u.is_empty() => resolve_user(stage, &u).map_err(|e| at(line, e))?,
            _ => (0, 0, Vec::new()),
        };
        let process = Process {
            args,
            env,
            cwd: cwd.clone(),
            uid,
            gid,
            additional_gids,
            network: flags.network,
        };
        let platform = stage
            .platform
            .clone()
            .unwrap_or_else(|| self.input.platform.clone());
        crate::runtime::emulation::check(
            &platform,
            std::path::Path::new(crate::runtime::emulation::BINFMT_DIR),
        )
        .map_err(|e| failed(line, e))?;
        let key = step_key(stage, &process, &mounts, &binds, &platform.to_string());
        let store = self.input.store.filter(|_| !self.input.no_cache);
        if let Some(layer) = store.and_then(|s| s.recipe(&key)) {
            (runner.output)(&format!("RUN {} (cached)", ins.original.trim()));
            self.layers_made += 1;
            self.layers_cached += 1;
            let stage = &mut self.stages[current];
            // Its files on disk no longer match the stage.
            stage.disk = DiskSlot::default();
            apply(stage, layer, None);
            return Ok(());
        }
        let runtime = runner
            .runtime
            .as_ref()
            .map_err(|e| failed(line, e.clone()))?;
        (runner.step)(&format!("RUN {}", ins.original.trim()));
        // The stage's files on disk: kept from its last RUN when nothing
        // but COPY happened since, else made anew.
        let mut kept = stage
            .disk
            .0
            .take()
            .filter(|d| stage.pending.is_empty() && d.layers() == stage.lower.len());
        let overlay = match runner.snapshotter {
            Snapshotter::Native => false,
            Snapshotter::Overlayfs => {
                crate::runtime::overlay::available(&runner.work_dir)
                    .map_err(|e| failed(line, format!("snapshotter overlayfs: {e}")))?;
                true
            }
            Snapshotter::Auto => {
                runner.snapshots.is_some()
                    && crate::runtime::overlay::available(&runner.work_dir).is_ok()
            }
        };
        let mounted = if overlay {
            let stack = match kept.take() {
                Some(OnDisk::Overlay(s)) => Some(s),
                _ => None,
            };
            match overlay_root(stage, stack, runner) {
                Ok(root) => Some(root),
                Err(e) if runner.snapshotter == Snapshotter::Overlayfs => {
                    return Err(failed(line, e))
                }
                // Written out instead (a stack deeper than a mount takes).
                Err(_) => None,
            }
        } else {
            None
        };
        let (mut disk, before) = match mounted {
            Some(root) => root,
            None => {
                let disk = match kept {
                    Some(OnDisk::Copy(mut d)) => {
                        d.apply(&stage.files).map_err(|e| failed(line, e))?;
                        d
                    }
                    _ => {
                        let tree = stage.filesystem().map_err(|e| at(line, e))?;
                        Box::new(
                            DiskRoot::create(&runner.work_dir, &tree)
                                .map_err(|e| failed(line, e))?,
                        )
                    }
                };
                let before = disk.tree.clone();
                (Root::Copy(disk), before)
            }
        };
        if process.args[0].starts_with('/')
            && script.is_none()
            && !rootfs::exists(&before, &process.args[0])
        {
            let hint = match &ins.args {
                Args::Shell(_) => {
                    " (the shell form runs SHELL; an image without a shell needs \
                                   the exec form, RUN [\"/path/to/program\", ...])"
                }
                Args::Exec(_) => "",
            };
            return Err(failed(
                line,
                format!("RUN: {} is not in the image{hint}", process.args[0]),
            ));
        }
        let container =
            Container::create(runtime, &runner.work_dir).map_err(|e| failed(line, e))?;
        // WORKDIR exists when the command starts, and is in its layer.
        let mut workdir: BTreeMap<String, Entry> = BTreeMap::new();
        let work = cwd.trim_start_matches('/');
        if !work.is_empty() {
            let mut path = String::new();
            for part in work.split('/') {
                path = if path.is_empty() {
                    part.to_string()
                } else {
                    format!("{path}/{part}")
                };
                if !before.contains_key(&path) {
                    workdir.insert(
                        path.clone(),
                        Entry {
                            kind: Kind::Dir,
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                        },
                    );
                }
            }
        }
        let root = match &mut disk {
            Root::Copy(d) => {
                d.apply(&workdir).map_err(|e| failed(line, e))?;
                d.dir().to_path_buf()
            }
            Root::Overlay { mount, .. } => {
                rootfs::write(mount.merged(), &workdir).map_err(|e| failed(line, e))?;
                mount.merged().to_path_buf()
            }
        };
        fn host_file(p: &'static str) -> Option<&'static std::path::Path> {
            let p = std::path::Path::new(p);
            p.is_file().then_some(p)
        }
        let mounts =
            prepare_mounts(&mounts, &binds, &container, runner).map_err(|e| failed(line, e))?;
        let mut mounts = mounts;
        if let Some((path, body)) = script {
            use std::os::unix::fs::PermissionsExt;
            let file = container
                .scratch("heredoc")
                .map_err(|e| failed(line, e))?
                .join("script");
            std::fs::write(&file, body)
                .and_then(|()| {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                })
                .map_err(|e| failed(line, format!("{}: {e}", file.display())))?;
            mounts.spec.push(serde_json::json!({
                "destination": path, "type": "bind", "source": file,
                "options": ["rbind", "ro"],
            }));
        }
        let mut process = process;
        process.env.extend(mounts.env);
        let config = spec::config(
            &process,
            &root,
            host_file("/etc/resolv.conf"),
            host_file("/etc/hosts"),
            &mounts.spec,
        );
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let ended = container
            .run(
                &config,
                &mut |text: &str| {
                    (runner.output)(text);
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(text.to_string());
                },
                runner.cancelled,
            )
            .map_err(|e| failed(line, e))?;
        match ended {
            Ended::Cancelled => {
                return Err(BuildError {
                    line,
                    message: "RUN was interrupted; its container was stopped".into(),
                    cause: Cause::Cancelled,
                })
            }
            Ended::Exited(0) => {}
            Ended::Exited(code) => {
                let shown: Vec<String> = tail.iter().map(|l| format!("  {l}")).collect();
                let output = if shown.is_empty() {
                    "it printed nothing".to_string()
                } else {
                    format!("its last output:\n{}", shown.join("\n"))
                };
                return Err(failed(
                    line,
                    format!(
                        "RUN {} failed with exit status {code}; {output}",
                        ins.original.trim()
                    ),
                ));
            }
        }
        let mut after = match &mut disk {
            Root::Copy(d) => d.rescan(),
            Root::Overlay { mount, .. } => crate::runtime::overlay::after(&before, mount.upper()),
        }
        .map_err(|e| failed(line, e))?;
        drop(mounts.locks);
        drop(container);
        let mut targets: Vec<&str> = spec::MOUNT_TARGETS.to_vec();
        targets.extend(mounts.targets.iter().map(|t| t.trim_start_matches('/')));
        let dropped = rootfs::drop_mount_targets(&before, &mut after, &targets);
        let changes = rootfs::diff(&before, &after);
        let layer = self.layer(&changes, line)?;
        self.layers_made += 1;
        if let Some(store) = self.input.store {
            // The cache is an optimisation: a full disk must not fail the build.
            let _ = store.put_recipe(&key, &layer.diff_id);
        }
        let stage = &mut self.stages[current];
        apply(stage, layer, Some(after));
        let on_disk = match disk {
            Root::Copy(mut d) => {
                d.layers = stage.lower.len();
                OnDisk::Copy(d)
            }
            Root::Overlay { mut stack, mount } => {
                // Its upper folder holds this layer's files for later RUNs.
                crate::runtime::overlay::prune_upper(mount.upper(), &dropped);
                stack
                    .lowers
                    .push(mount.into_lower().map_err(|e| failed(line, e))?);
                stack.layers = stage.lower.len();
                OnDisk::Overlay(stack)
            }
        };
        stage.disk = DiskSlot(Some(on_disk));
        Ok(())
    }
}

/// A stage's files on disk for one `RUN`.
enum Root {
    /// Written out.
    Copy(Box<DiskRoot>),
    /// An overlay over `stack`.
    Overlay { stack: Stack, mount: Mounted },
}

/// The stage's files as an overlay: its layers unpacked in the cache (or
/// the folders its last `RUN` left, `kept`), the files `COPY` added since
/// in a folder above them; and the files as they are before the command.
fn overlay_root(
    stage: &mut Stage,
    kept: Option<Stack>,
    runner: &super::Runner<'_>,
) -> Result<(Root, BTreeMap<String, Entry>), String> {
    let snapshots = runner
        .snapshots
        .as_ref()
        .ok_or_else(|| "no cache folder to unpack layers in".to_string())?;
    let mut stack = match kept {
        Some(s) => s,
        None => {
            let mut lowers = Vec::new();
            for layer in &stage.lower {
                lowers.push(Lower::held(snapshots.get(layer)?));
            }
            Stack {
                lowers,
                layers: stage.lower.len(),
            }
        }
    };
    if !stage.files.is_empty() {
        stack
            .lowers
            .push(Lower::written(&runner.work_dir, &stage.files)?);
    }
    let before = stage.filesystem()?;
    let mount = Mounted::mount(&runner.work_dir, &stack)?;
    Ok((Root::Overlay { stack, mount }, before))
}

/// A `RUN`'s mounts, ready: spec mounts, environment entries (secrets
/// given as variables), the targets (never part of the layer) and the
/// locks of `sharing=locked` caches, held until the command ends.
struct Mounts {
    spec: Vec<serde_json::Value>,
    env: Vec<String>,
    targets: Vec<String>,
    locks: Vec<std::fs::File>,
}

/// The files a bind mount shows: one file, or a folder's entries (paths
/// relative to it), and a digest of them for the step's cache key.
struct BindSource {
    files: BTreeMap<String, Entry>,
    /// A single file, kept under the name `file`.
    single: bool,
    digest: String,
}

impl BindSource {
    /// `source` (cleaned; `""` is the root) in `files`.
    fn of(files: &BTreeMap<String, Entry>, source: &str) -> Result<Self, String> {
        let (picked, single): (BTreeMap<String, Entry>, bool) = match files.get(source) {
            Some(e) if !matches!(e.kind, Kind::Dir) => {
                if let Kind::Symlink(to) = &e.kind {
                    return Err(format!(
                        "source {source} is a symbolic link (to {to}); name what it points to"
                    ));
                }
                ([("file".to_string(), e.clone())].into(), true)
            }
            _ if source.is_empty() => (files.clone(), false),
            found => {
                let prefix = format!("{source}/");
                let under: BTreeMap<String, Entry> = files
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, e)| (k[prefix.len()..].to_string(), e.clone()))
                    .collect();
                if found.is_none() && under.is_empty() {
                    return Err(format!("source {source} is not there"));
                }
                (under, false)
            }
        };
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (path, e) in &picked {
            h.update(format!("{path}\0{:o}\0{}\0{}\0", e.mode, e.uid, e.gid).as_bytes());
            match &e.kind {
                Kind::File(data) => {
                    h.update(b"f");
                    h.update(data.len().to_le_bytes());
                    data.chunks(|c| {
                        h.update(c);
                        Ok(())
                    })
                    .map_err(|e| format!("reading {source}/{path}: {e}"))?;
                }
                Kind::Dir => h.update(b"d"),
                Kind::Symlink(to) => {
                    h.update(b"l");
                    h.update(to.as_bytes());
                }
            }
            h.update([0]);
        }
        Ok(Self {
            files: picked,
            single,
            digest: format!("sha256:{:x}", h.finalize()),
        })
    }
}

fn prepare_mounts(
    declared: &[RunMount],
    binds: &[Option<BindSource>],
    container: &Container,
    runner: &super::Runner<'_>,
) -> Result<Mounts, String> {
    use std::os::unix::fs::{lchown, PermissionsExt};
    let mut out = Mounts {
        spec: Vec::new(),
        env: Vec::new(),
        targets: Vec::new(),
        locks: Vec::new(),
    };
    let own = |p: &std::path::Path, mode: u32, uid: u32, gid: u32| -> Result<(), String> {
        lchown(p, Some(uid), Some(gid)).map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let bind = |source: &std::path::Path, target: &str, ro: bool| {
        let mut options = vec!["rbind"];
        options.push(if ro { "ro" } else { "rw" });
        serde_json::json!({"destination": target, "type": "bind", "source": source, "options": options})
    };
    for (n, mount) in declared.iter().enumerate() {
        match mount {
            RunMount::Cache {
                target,
                id,
                sharing,
                mode,
                uid,
                gid,
            } => {
                use sha2::{Digest, Sha256};
                let dir = match sharing {
                    Sharing::Private => container.scratch(&format!("cache-{n}"))?,
                    _ => {
                        let name = format!("{:x}", Sha256::digest(id.as_bytes()));
                        runner.cache_mounts.join(&name[..32])
                    }
                };
                if !dir.exists() {
                    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                    own(&dir, *mode, *uid, *gid)?;
                }
                if *sharing == Sharing::Locked {
                    let lock_path = dir.with_extension("lock");
                    let lock = std::fs::File::create(&lock_path)
                        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
                    // SAFETY: flock(2) on a file this function opened.
                    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }
                        != 0
                    {
                        return Err(format!("locking {}", lock_path.display()));
                    }
                    out.locks.push(lock);
                }
                out.spec.push(bind(&dir, target, false));
                out.targets.push(target.clone());
            }
            RunMount::Secret {
                id,
                target,
                env,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(secret) = runner.secrets.iter().find(|s| &s.id == id) else {
                    if *required {
                        return Err(format!(
                            "--mount=type=secret,id={id} is required, and the build has no such \
                             secret: pass --secret id={id},src=FILE (or env=VAR)"
                        ));
                    }
                    continue;
                };
                if let Some(var) = env {
                    out.env
                        .push(format!("{var}={}", String::from_utf8_lossy(&secret.value)));
                }
                if let Some(target) = target {
                    let dir = container.scratch("secrets")?;
                    let file = dir.join(n.to_string());
                    std::fs::write(&file, &secret.value)
                        .map_err(|e| format!("writing a secret for the container: {e}"))?;
                    own(&file, *mode, *uid, *gid)?;
                    out.spec.push(bind(&file, target, true));
                    out.targets.push(target.clone());
                }
            }
            RunMount::Bind {
                target, readwrite, ..
            } => {
                let Some(Some(source)) = binds.get(n) else {
                    return Err(format!("--mount=type=bind,target={target}: no source"));
                };
                // A copy, so that nothing the command does reaches the source.
                let dir = container.scratch(&format!("bind-{n}"))?;
                rootfs::write(&dir, &source.files)?;
                let path = if source.single { dir.join("file") } else { dir };
                out.spec.push(bind(&path, target, !readwrite));
                out.targets.push(target.clone());
            }
            RunMount::Tmpfs { target, size } => {
                let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
                if *size > 0 {
                    options.push(format!("size={size}"));
                }
                out.spec.push(serde_json::json!({
                    "destination": target, "type": "tmpfs", "source": "tmpfs", "options": options
                }));
                out.targets.push(target.clone());
            }
        }
    }
    Ok(out)
}

/// The stage after a `RUN` layer: every layer so far is its base. Its
/// files are `after` when the command ran here; for a layer from the cache
/// they are brought up to date when next needed (only that layer is read).
fn apply(stage: &mut Stage, layer: Layer, after: Option<BTreeMap<String, Entry>>) {
    stage.layers.push(layer.clone());
    stage.lower = stage.layers.clone();
    let added = std::mem::take(&mut stage.files);
    match after {
        Some(files) => {
            stage.pending.clear();
            stage.lower_fs = Some(Rc::new(files));
        }
        None if stage.lower_fs.is_some() => {
            if !added.is_empty() {
                stage.pending.push(super::Pending::Files(added));
            }
            stage.pending.push(super::Pending::Layer(layer));
        }
        // Not read yet: `lower` has every layer.
        None => stage.pending.clear(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn stage_with(files: &[(&str, &str)]) -> Stage {
        let mut s = Stage::default();
        for (p, text) in files {
            s.files.insert(
                p.to_string(),
                Entry {
                    kind: Kind::File(crate::data::Data::from(text.to_string())),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
            );
        }
        s
    }

    #[test]
    fn users_resolve_by_name_and_id_with_their_groups() {
        let mut s = stage_with(&[
            (
                "etc/passwd",
                "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            ),
            (
                "etc/group",
                "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\n",
            ),
        ]);
        assert_eq!(resolve_user(&mut s, "app"), Ok((1000, 1000, vec![50])));
        assert_eq!(resolve_user(&mut s, "1000"), Ok((1000, 1000, vec![50])));
        assert_eq!(resolve_user(&mut s, "4242"), Ok((4242, 0, vec![])));
        assert_eq!(resolve_user(&mut s, "app:staff"), Ok((1000, 50, vec![])));
        assert_eq!(resolve_user(&mut s, "7:8"), Ok((7, 8, vec![])));
        assert!(resolve_user(&mut s, "nobody").is_err());
        assert!(resolve_user(&mut s, "app:nogroup").is_err());
    }
}
