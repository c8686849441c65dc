//! `RUN` in the daemonless `oci` builder, end to end: the real `kiln` and
//! plugins, the real OCI runtime (runc), bases made without any daemon or
//! pull (busybox from `/bin/busybox`), images checked with the real Docker
//! Engine (`docker load`, `docker run`, `docker inspect`) and by reading
//! the archive's layers. After every case nothing is left behind: no
//! bundle in the cache folder, no container in the runtime's list.

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::util::{daemon_and, docker, shipped_plugin, unique, write, TestProject, Untag};

/// A project with the oci plugin, and its plugins folder.
fn project() -> (TestProject, PathBuf) {
    let p = TestProject::initialised();
    let dir = p.root().join("plugins");
    let f = shipped_plugin("kiln-oci");
    fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy plugin");
    (p, dir)
}

/// A context whose Dockerfile starts from busybox (installed by `RUN`
/// itself) and goes on with `rest`.
fn busybox_app(dir: &Path, rest: &str) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::copy("/bin/busybox", dir.join("busybox")).expect("busybox");
    write(
        dir,
        "Dockerfile",
        &format!(
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n{rest}"
        ),
    );
}

/// Nothing of a build is left: no bundle in the cache's run folder, no
/// container of this test's in the runtime.
fn assert_nothing_left(p: &TestProject) {
    let run_dir = p.root().join("home/.cache/kiln/oci/run");
    let left: Vec<_> = fs::read_dir(&run_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", run_dir.display());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&run_dir.to_string_lossy().into_owned()),
        "a mount is left under {}",
        run_dir.display()
    );
}

/// Every member of a tar archive, by path.
fn archive_files(archive: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut a = tar::Archive::new(fs::File::open(archive).expect("archive"));
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read");
        files.insert(path, data);
    }
    files
}

/// The members of a gzip'd layer blob, with their contents.
fn layer_files(blob: &[u8]) -> Vec<(String, Vec<u8>)> {
    layer_files_raw(blob)
        .into_iter()
        .map(|(path, data)| (String::from_utf8_lossy(&path).into_owned(), data))
        .collect()
}

/// The members of a gzip'd layer blob by their names' bytes, in order,
/// with their contents.
fn layer_files_raw(blob: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut plain)
        .expect("gunzip");
    let mut t = tar::Archive::new(plain.as_slice());
    t.entries()
        .expect("entries")
        .map(|e| {
            let mut e = e.expect("entry");
            let path = e.path_bytes().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read");
            (path, data)
        })
        .collect()
}

/// What a `docker save` archive's image is made of: its layers (by digest,
/// in order) and its config without the inputs kiln records (which name
/// the builder's config, so they differ between builds that differ only in
/// it).
fn image_made_of(archive: &Path) -> (Value, Value) {
    let files = archive_files(archive);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest");
    let config_name = manifest[0]["Config"].as_str().expect("config");
    let mut config: Value = serde_json::from_slice(&files[config_name]).expect("config");
    let labels = config["config"]["Labels"].as_object_mut().expect("labels");
    assert!(labels.remove("dev.kiln.inputs").is_some(), "{labels:?}");
    (manifest[0]["Layers"].clone(), config)
}

/// The members of every layer of a `docker save` archive, in order.
fn layer_members(archive: &Path) -> Vec<Vec<String>> {
    let files = archive_files(archive);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest");
    manifest[0]["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            layer_files(&files[l.as_str().expect("layer")])
                .into_iter()
                .map(|(path, _)| path)
                .collect()
        })
        .collect()
}

#[test]
fn run_makes_a_layer_of_its_changes_and_the_image_runs() {
    if !daemon_and(&["runc"]) {
        return;
    }
    let (p, plugins) = project();
    let tag = format!("{}:1", unique("kiln-run"));
    let _untag = Untag(vec![tag.clone()]);
    busybox_app(
        &p.work().join("app"),
        "ARG GREETING=hi\n\
         ENV APP=/app\n\
         WORKDIR /app\n\
         RUN echo \"$GREETING from $(id -u) in $(pwd), APP=$APP\" | tee hello.txt && rm /bin/rmdir\n\
         RUN echo gone > /app/scratch && rm /app/scratch && mkdir -p /tmp/made && chmod 777 /tmp/made\n\
         RUN [\"/bin/sh\", \"-c\", \"echo exec form > /app/exec.txt\"]\n\
         RUN printf 'root:x:0:0::/root:/bin/sh\\napp:x:1000:1000::/home/app:/bin/sh\\n' > /etc/passwd && \
             printf 'root:x:0:\\napp:x:1000:\\n' > /etc/group\n\
         USER app\n\
         RUN id -u > /tmp/made/uid && ls /sys/class/net > /tmp/made/net\n\
         RUN --network=none ls /sys/class/net > /tmp/made/net-none\n\
         CMD [\"cat\", \"/app/hello.txt\", \"/app/exec.txt\", \"/tmp/made/uid\"]\n",
    );
    let out = p.root().join("out.tar");
    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .tag(&tag)
        .arg("--output")
        .arg(format!("type=docker,dest={}", out.display()))
        .run();
    r.ok();
    // The command's output streamed as it ran.
    assert!(
        r.stderr.contains("   hi from 0 in /app, APP=/app"),
        "{}",
        r.stderr
    );
    assert_nothing_left(&p);
    let layers = layer_members(&out);
    // busybox, its links, then one layer per RUN.
    assert_eq!(layers.len(), 8, "{layers:?}");
    assert!(
        layers[2].contains(&"bin/.wh.rmdir".to_string()),
        "{:?}",
        layers[2]
    );
    assert!(
        layers[2].contains(&"app/hello.txt".to_string()),
        "{:?}",
        layers[2]
    );
    // A file made and removed by the same RUN is in no layer; the folder
    // the runtime mounted /proc on is in none either.
    assert!(layers
        .iter()
        .flatten()
        .all(|m| !m.contains("scratch") && !m.starts_with("proc")));
    docker(&["load", "-i", out.to_str().expect("utf8")]);
    let printed = docker(&["run", "--rm", &tag]);
    assert_eq!(printed, "hi from 0 in /app, APP=/app\nexec form\n1000\n");
    let net = docker(&[
        "run",
        "--rm",
        &tag,
        "cat",
        "/tmp/made/net",
        "/tmp/made/net-none",
    ]);
    // The default network is the host's; --network=none has only loopback.
    let (default_net, none_net) = net.split_at(net.rfind("lo\n").unwrap_or(0));
    assert!(default_net.lines().count() > 1, "{net}");
    assert_eq!(none_net, "lo\n", "{net}");
    // Build args reach RUN but are not kept in the image.
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &tag]);
    assert!(
        env.contains("APP=/app") && !env.contains("GREETING"),
        "{env}"
    );
    assert_eq!(
        docker(&[
            "run",
            "--rm",
            "--entrypoint",
            "stat",
            &tag,
            "-c",
            "%a",
            "/bin/busybox"
        ])
        .trim(),
        "755"
    );
}

#[test]
fn a_failing_run_exits_6_naming_the_line_status_and_output() {
    if !daemon_and(&["runc"]) {
        return;
    }
    let (p, plugins) = project();
    busybox_app(
        &p.work().join("app"),
        "RUN echo first; echo boom >&2; exit 3\nRUN echo never\n",
    );
    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .tag("x:1")
        .output(p.root().join("x.tar"))
        .run();
    r.code(6);
    // (runc copies the command's stdout and stderr separately, so their
    // order between the two is not kept.)
    let (_, shown) = r
        .stderr
        .split_once("Dockerfile line 4: RUN echo first; echo boom >&2; exit 3 failed with exit status 3; its last output:\n")
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(
        shown.contains("  first\n") && shown.contains("  boom\n"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("never"), "{}", r.stderr);
    assert!(!p.root().join("x.tar").exists());
    assert_nothing_left(&p);
}

#[test]
fn run_steps_are_cached_and_reproducible() {
    if !daemon_and(&["runc"]) {
        return;
    }
    let (p, plugins) = project();
    busybox_app(
        &p.work().join("app"),
        "RUN echo made > /made && cat /proc/sys/kernel/random/uuid > /ran-at\n",
    );
    let build = |extra: &[&str], name: &str| {
        let r = p
            .cmd()
            .plugins(&plugins)
            .build("app")
            .tag("x:1")
            .args(extra)
            .output(p.root().join(name))
            .json()
            .run();
        r.ok();
        let digest = r.json()["digest"].as_str().expect("digest").to_owned();
        (digest, r.stderr.clone())
    };
    let (first, _) = build(&[], "a.tar");
    let (again, log) = build(&[], "b.tar");
    assert_eq!(first, again);
    assert!(
        log.contains(
            "RUN echo made > /made && cat /proc/sys/kernel/random/uuid > /ran-at (cached)"
        ),
        "{log}"
    );
    // --no-cache runs it again: a different layer (the time it ran).
    let (fresh, log) = build(&["--no-cache"], "c.tar");
    assert!(!log.contains("(cached)"), "{log}");
    assert_ne!(first, fresh);
    // A deterministic command gives the same image every time.
    write(
        &p.work().join("app"),
        "Dockerfile",
        &fs::read_to_string(p.work().join("app/Dockerfile"))
            .expect("read")
            .replace(" && cat /proc/sys/kernel/random/uuid > /ran-at", ""),
    );
    let (one, _) = build(&["--no-cache"], "d.tar");
    let (two, _) = build(&["--no-cache"], "e.tar");
    assert_eq!(one, two);
    assert_nothing_left(&p);
}

/// The two ways of putting a stage's files on disk give the same image:
/// an overlay over layers unpacked once into the cache (`overlayfs`, the
/// default where it works) and a copy written out (`native`), on a
/// Dockerfile that deletes (whiteouts), empties folders (opaque), turns a
/// folder into a file and back, links, changes modes, COPYs between RUNs,
/// uses a cache mount and a FIFO. The second overlay build finds the base's
/// layers unpacked; a held unpacked layer is never pruned.
#[test]
fn overlay_and_native_snapshotters_make_the_same_image() {
    if !daemon_and(&["runc"]) {
        return;
    }
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "overlay mounts need root (CI=true)"
        );
        return;
    }
    let (p, plugins) = project();
    // The base: busybox as an OCI archive, its layers to be unpacked.
    busybox_app(&p.work().join("base"), "");
    let base = p.root().join("base.tar");
    p.cmd()
        .plugins(&plugins)
        .build("base")
        .tag("base:1")
        .output(&base)
        .run()
        .ok();
    let app = p.work().join("app");
    fs::create_dir_all(&app).expect("mkdir");
    write(
        &app,
        "Dockerfile",
        "FROM base\n\
         RUN mkdir -p /opt/x/y /etc/keep /data /tmp && echo hi > /opt/x/y/f && ln -s /opt/x /opt/l \
             && ln /opt/x/y/f /opt/x/hard && echo 1 > /etc/keep/a && echo 2 > /etc/keep/b \
             && echo d > /data/d && mkdir /was-dir && echo w > /was-dir/w && echo f > /was-file\n\
         COPY a.txt /srv/a.txt\n\
         RUN rm -rf /opt/x/y /bin/rmdir && rm /etc/keep/* && chmod 700 /srv && touch /data/d \
             && rm -rf /was-dir && echo now-a-file > /was-dir && rm /was-file && mkdir /was-file \
             && mkfifo /tmp/fifo\n\
         WORKDIR /work/deep\n\
         COPY b.txt ./\n\
         RUN --mount=type=cache,target=/root/.cache/x echo x > /root/.cache/x/y \
             && cat b.txt /srv/a.txt > c && rm /srv/a.txt /tmp/fifo && rm -rf /data && mkdir /data \
             && echo new > /data/n\n",
    );
    write(&app, "a.txt", "A\n");
    write(&app, "b.txt", "B\n");
    let build = |snapshotter: &str, name: &str| {
        let r = p
            .cmd()
            .plugins(&plugins)
            .build("app")
            .tag("same:1")
            .arg("--build-context")
            .arg(format!("base=oci-layout://{}", base.display()))
            .args([
                "--no-cache",
                "--builder-flavor",
                "oci",
                "--builder-config",
                &format!("{{\"snapshotter\": \"{snapshotter}\"}}"),
            ])
            .output(p.root().join(name))
            .json()
            .run();
        r.ok();
        assert_nothing_left(&p);
        image_made_of(&p.root().join(name))
    };
    let native = build("native", "native.tar");
    let snapshots = p.root().join("home/.cache/kiln/oci/snapshots");
    let units = || fs::read_dir(&snapshots).map_or(0, |d| d.count());
    assert_eq!(units(), 0, "the base build or native unpacked layers");
    let overlay = build("overlayfs", "overlay.tar");
    assert_eq!(native, overlay);
    // busybox and its links, unpacked once, whole (marked) and held by none.
    let made = units();
    assert_eq!(made, 2, "unpacked layers");
    for unit in fs::read_dir(&snapshots).expect("snapshots") {
        let unit = unit.expect("unit").path();
        let names: Vec<String> = fs::read_dir(&unit)
            .expect("unit")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.contains(&".kiln-unit".to_string()) && names.contains(&"root".to_string()),
            "{}: {names:?}",
            unit.display()
        );
        assert!(
            !names.iter().any(|n| n.starts_with("build-")),
            "a finished build still holds {}: {names:?}",
            unit.display()
        );
    }
    assert_eq!(build("overlayfs", "again.tar"), native);
    assert_eq!(units(), made, "the base was unpacked again");
    // `kiln cache prune` removes them whole.
    p.cmd().args(["cache", "prune"]).run().ok();
    assert_eq!(units(), 0);
    assert_eq!(build("auto", "auto.tar"), native);
}

/// `/proc/<pid>/stat`: (state, parent pid).
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the `(comm)` field, which may hold spaces: state, ppid.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|c| proc_stat(*c).is_some_and(|(_, ppid)| ppid == pid))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` still runs (a zombie waiting to be reaped does not).
fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z')
}

#[test]
fn ctrl_c_during_run_kills_the_container_and_exits_130() {
    if !daemon_and(&["runc"]) {
        return;
    }
    let (p, plugins) = project();
    let marker = unique("kiln-run-sleep");
    busybox_app(
        &p.work().join("app"),
        &format!("RUN echo {marker} && sleep 60\n"),
    );
    let d = plugins.to_str().expect("utf8");
    let out = p.root().join("x.tar");
    // Pressed while the command runs, and as its step starts (the runtime
    // may still be creating the container: the kill is sent again); then
    // SIGTERM (as `timeout` and service managers send), and kill -9 of kiln
    // itself, after which its worker is told to stop as if by Ctrl-C.
    for (early, signal) in [
        (false, "-INT"),
        (true, "-INT"),
        (false, "-TERM"),
        (false, "-KILL"),
    ] {
        let mut child = p
            .command(&[
                "--plugins-dir",
                d,
                "build",
                "app",
                "-t",
                "x:1",
                "--output",
                &format!("type=oci,dest={}", out.display()),
            ])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn kiln");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines.next().expect("kiln ended before RUN").expect("line");
            // The command's own output, or the `=> RUN` step naming it.
            if (!early && line.trim() == marker) || (early && line.starts_with("=> RUN")) {
                break;
            }
        }
        let workers = children_of(child.id());
        assert!(!workers.is_empty(), "kiln runs its build in a worker");
        let pressed = Instant::now();
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let code = child.wait().expect("wait").code();
        if signal == "-KILL" {
            assert_eq!(code, None, "killed by the signal");
        } else {
            assert_eq!(code, Some(130), "{signal}");
        }
        // The sleeping command is gone with its container (after kill -9
        // the orphaned worker cleans up on its own: waited for).
        let running = || {
            let ps = Command::new("ps")
                .args(["-eo", "args"])
                .output()
                .expect("ps");
            let text = String::from_utf8_lossy(&ps.stdout).into_owned();
            text.contains(&marker) || workers.iter().any(|pid| alive(*pid))
        };
        while running() && pressed.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !running(),
            "{signal}: the command or the worker is still running"
        );
        assert!(
            pressed.elapsed() < Duration::from_secs(10),
            "{signal}: {:?}",
            pressed.elapsed()
        );
        assert!(!out.exists());
        assert_nothing_left(&p);
    }
}

/// Ctrl-C while kiln packs the context (a 4 GiB sparse file: seconds of
/// reading): exit 130 at once, and no archive left in the cache.
#[test]
fn ctrl_c_while_packing_the_context_leaves_no_archive() {
    let (p, plugins) = project();
    let app = p.work().join("app");
    write(&app, "Dockerfile", "FROM scratch\nCOPY big /big\n");
    let big = fs::File::create(app.join("big")).expect("create");
    big.set_len(4 << 30).expect("sparse file");
    let contexts = p.root().join("home/.cache/kiln/contexts");
    let d = plugins.to_str().expect("utf8");
    let mut child = p
        .command(&[
            "--plugins-dir",
            d,
            "build",
            "app",
            "-t",
            "x:1",
            "--output",
            "type=oci,dest=x.tar",
        ])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kiln");
    // Packing has begun once its archive grows.
    let started = Instant::now();
    let growing = || {
        fs::read_dir(&contexts).ok().is_some_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.metadata().is_ok_and(|m| m.len() > (1 << 20)))
        })
    };
    while !growing() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "packing never began"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "kiln ended before packing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pressed = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    assert_eq!(child.wait().expect("wait").code(), Some(130));
    assert!(
        pressed.elapsed() < Duration::from_secs(5),
        "{:?}",
        pressed.elapsed()
    );
    let left: Vec<_> = fs::read_dir(&contexts)
        .expect("contexts")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", contexts.display());
}

/// Every byte sequence a path holds, files below folders included.
fn files_below(path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(p) = pending.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            for e in fs::read_dir(&p).expect("read_dir").filter_map(|e| e.ok()) {
                pending.push(e.path());
            }
        } else if meta.is_file() {
            out.push((p.clone(), fs::read(&p).unwrap_or_default()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    // memchr's search: the cache holds unpacked base layers, hundreds of
    // megabytes that a byte-by-byte search in a debug build takes minutes on.
    memchr::memmem::find(haystack, needle).is_some()
}

/// A Flyte-shaped Dockerfile: the syntax directive, a cache mount that the
/// second build finds warm, a secret as a file and as a variable, a tmpfs.
/// The secret is then searched for in every layer (unpacked), the config,
/// the archive, the cache folder and everything kiln printed: absent.
/// The secret is in no file kiln wrote: the archive (layers unpacked), the
/// cache folder, the project's state.
fn assert_secret_nowhere(p: &TestProject, archive: &Path, secret: &str) {
    let mut unpacked = Vec::new();
    for (_, data) in archive_files(archive) {
        let mut plain = Vec::new();
        if flate2::read::MultiGzDecoder::new(data.as_slice())
            .read_to_end(&mut plain)
            .is_ok()
        {
            unpacked.push(plain);
        }
        unpacked.push(data);
    }
    assert!(
        unpacked.iter().all(|d| !contains(d, secret.as_bytes())),
        "secret in the archive"
    );
    for (path, data) in files_below(&p.root().join("home"))
        .into_iter()
        .chain(files_below(&p.root().join("work/.kiln")))
    {
        assert!(
            !contains(&data, secret.as_bytes()),
            "secret in {}",
            path.display()
        );
    }
}

#[test]
fn cache_and_secret_mounts_and_the_secret_is_nowhere() {
    if !daemon_and(&["runc"]) {
        return;
    }
    let (p, plugins) = project();
    let secret = "kiln-SECRET-7f3a9c21-never-stored";
    write(p.root(), "token.txt", secret);
    let app = p.work().join("app");
    busybox_app(&app, "");
    let dockerfile = fs::read_to_string(app.join("Dockerfile")).expect("read");
    write(
        &app,
        "Dockerfile",
        &format!(
            "# syntax=docker/dockerfile:1.10\n{dockerfile}\
             RUN --mount=type=cache,target=/root/.cache/uv,id=uv \
                 ls /root/.cache/uv | wc -l > /cache-entries-before && touch /root/.cache/uv/wheel-$$\n\
             RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /token-length\n\
             RUN --mount=type=secret,id=token,env=TOKEN,target=/etc/token \
                 test \"$TOKEN\" = \"$(cat /etc/token)\" && echo secret seen\n\
             RUN --mount=type=tmpfs,target=/scratch echo in memory > /scratch/x && cat /scratch/x\n"
        ),
    );
    let out = p.root().join("out.tar");
    let build = |no_cache: bool| {
        let mut cmd = p
            .cmd()
            .plugins(&plugins)
            .build("app")
            .tag("flyte:1")
            .arg("--secret")
            .arg(format!(
                "id=token,src={}",
                p.root().join("token.txt").display()
            ))
            .arg("--output")
            .arg(format!("type=docker,dest={}", out.display()))
            .json();
        if no_cache {
            cmd = cmd.arg("--no-cache");
        }
        let r = cmd.run();
        r.ok();
        assert!(r.stderr.contains("   secret seen"), "{}", r.stderr);
        assert!(r.stderr.contains("   in memory"), "{}", r.stderr);
        assert!(!r.all_output().contains(secret), "secret printed");
        r.json()["digest"].as_str().expect("digest").to_owned()
    };
    build(false);
    build(true);
    assert_nothing_left(&p);
    // The second run of the cache step found the first one's file.
    let _untag = Untag(vec!["flyte:1".to_string()]);
    docker(&["load", "-i", out.to_str().expect("utf8")]);
    let seen = docker(&[
        "run",
        "--rm",
        "flyte:1",
        "cat",
        "/cache-entries-before",
        "/token-length",
    ]);
    assert_eq!(
        seen.split_whitespace().collect::<Vec<_>>(),
        ["1", &secret.len().to_string()]
    );
    // The mount targets and the cache's files are in no layer.
    let layers = layer_members(&out);
    for m in layers.iter().flatten() {
        assert!(
            !m.starts_with("run/")
                && !m.starts_with("root/.cache")
                && !m.starts_with("scratch")
                && m != "etc/token",
            "{m} in a layer: {layers:?}"
        );
    }
    assert_secret_nowhere(&p, &out, secret);
    // The plan names the secret, never its value.
    let plan = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .tag("flyte:1")
        .arg("--secret")
        .arg(format!(
            "id=token,src={}",
            p.root().join("token.txt").display()
        ))
        .dry_run()
        .run();
    plan.ok();
    assert!(
        plan.stdout.contains("secrets: token") && !plan.all_output().contains(secret),
        "{}",
        plan.stdout
    );
    // A required secret the build was not given: the line and what to pass.
    write(
        &app,
        "Dockerfile",
        &format!("{dockerfile}RUN --mount=type=secret,id=missing,required true\n"),
    );
    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .tag("x:1")
        .output(p.root().join("x.tar"))
        .run();
    r.code(6);
    assert!(
        r.stderr.contains("line 4") && r.stderr.contains("--secret id=missing"),
        "{}",
        r.stderr
    );
    assert_nothing_left(&p);
}

/// The Debian base `scripts/docker-env.sh` made with debootstrap (outside
/// the repo), as an OCI archive kiln builds from it (`FROM scratch`,
/// `COPY rootfs/ /`): no daemon, no pull. `None` (test not run) when it is
/// missing outside CI.
#[allow(clippy::print_stderr)]
fn debian_base(p: &TestProject, plugins: &Path) -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("KILN_TEST_DEBIAN").unwrap_or_else(|_| "/var/cache/kiln-test/debian".into()),
    );
    if !dir.join("Dockerfile").is_file() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "no Debian base at {} (CI=true): scripts/test.sh makes it",
            dir.display()
        );
        eprintln!("no Debian base at {}: this test did not run", dir.display());
        return None;
    }
    let out = p.root().join("debian.tar");
    p.cmd()
        .plugins(plugins)
        .arg("build")
        .arg(&dir)
        .tag("kiln-test-debian:bookworm")
        .output(&out)
        .run()
        .ok();
    Some(out)
}

/// A Python app's context: `requirements` asking for six 1.17.0 and a
/// `main.py` that prints `what with six 1.17.0`. This machine reaches PyPI
/// through its own CA bundle, so an image built here must carry it (after
/// apt-get, which rewrites the file): the returned step copies it in.
fn python_app(p: &TestProject, requirements: &str, what: &str) -> (PathBuf, &'static str) {
    let app = p.work().join("app");
    write(&app, requirements, "six==1.17.0\n");
    write(
        &app,
        "main.py",
        &format!("import six\nprint('{what} with six', six.__version__)\n"),
    );
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let ca_step = if ca.is_file() {
        fs::copy(ca, app.join("host-ca.crt")).expect("ca");
        "COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt\n"
    } else {
        ""
    };
    (app, ca_step)
}

/// A ZenML-shaped Dockerfile on a real Debian base: `apt-get install`, `pip
/// install -r requirements.txt` from PyPI, `COPY . .`, `RUN chmod -R a+rw
/// .`; loaded into Docker and run, and pushed to a real registry, pulled by
/// Docker and run. The unchanged rebuild takes every step from the cache
/// and gives the same image.
#[test]
fn a_zenml_shaped_image_on_debian_installs_packages_and_runs() {
    if !daemon_and(&["runc"]) {
        return;
    }
    let (p, plugins) = project();
    let Some(base) = debian_base(&p, &plugins) else {
        return;
    };
    let (app, ca_step) = python_app(&p, "requirements.txt", "pipeline step");
    write(
        &app,
        "Dockerfile",
        &format!(
            "FROM debian\n\
             ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1\n\
             RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \
                 && rm -rf /var/lib/apt/lists/*\n\
             {ca_step}\
             WORKDIR /app\n\
             COPY requirements.txt .\n\
             RUN pip install --break-system-packages --default-timeout=60 --no-cache-dir -r requirements.txt\n\
             COPY . .\n\
             RUN chmod -R a+rw .\n\
             CMD [\"python3\", \"main.py\"]\n"
        ),
    );
    let f = shipped_plugin("kiln-registry");
    fs::copy(&f, plugins.join(f.file_name().expect("name"))).expect("copy plugin");
    let registry = crate::util::TestRegistry::start(None);
    let host = registry.host();
    crate::registry::register(
        &p,
        plugins.to_str().expect("utf-8"),
        "reg",
        &[&format!("uri={host}/team")],
    );
    let tag = format!("{host}/team/{}:1", unique("kiln-zenml"));
    let _untag = Untag(vec![tag.clone()]);
    let out = p.root().join("zen.tar");
    let build = |extra: &[&str]| {
        let r = p
            .cmd()
            .plugins(&plugins)
            .build("app")
            .tag(&tag)
            .arg("--build-context")
            .arg(format!("debian=oci-layout://{}", base.display()))
            .arg("--output")
            .arg(format!("type=docker,dest={}", out.display()))
            .registry("reg")
            .args(extra.iter().copied())
            .json()
            .run();
        r.ok();
        (
            r.json()["pushed"].as_str().expect("pushed").to_owned(),
            r.stderr.clone(),
        )
    };
    let (first, log) = build(&[]);
    assert!(log.contains("Successfully installed six-1.17.0"), "{log}");
    assert!(first.starts_with(&format!("{host}/team/")), "{first}");
    assert_nothing_left(&p);
    docker(&["load", "-i", out.to_str().expect("utf8")]);
    let run = || {
        assert_eq!(
            docker(&["run", "--rm", &tag]),
            "pipeline step with six 1.17.0\n"
        );
        let mode = docker(&["run", "--rm", &tag, "stat", "-c", "%A", "/app/main.py"]);
        assert_eq!(mode.trim(), "-rw-rw-rw-");
    };
    run();
    // Pushed as built: pulled back by Docker, it runs the same.
    docker(&["rmi", &tag]);
    docker(&["pull", &tag]);
    run();
    let pulled = docker(&["inspect", "--format", "{{index .RepoDigests 0}}", &tag]);
    assert_eq!(pulled.trim(), first);
    // Unchanged and forced past the registry's answer: every step from the
    // cache, the same image.
    let (again, log) = build(&["--force"]);
    assert_eq!(first, again);
    assert!(!log.contains("Successfully installed"), "{log}");
}

/// BuildKit's here-documents in `RUN`: `RUN <<EOF` runs the document as a
/// shell script, or with a `#!` line as a file of its own; documents fed to
/// commands go to the shell with the command line, quoting as written.
#[test]
fn heredocs_run_as_scripts_or_feed_commands() {
    if !daemon_and(&["runc"]) {
        return;
    }
    let (p, plugins) = project();
    busybox_app(
        &p.work().join("app"),
        "RUN <<EOF\nset -e\nmkdir -p /made\necho \"from a heredoc\" > /made/by-heredoc\nEOF\n\
         RUN <<EOF\n#!/bin/sh -e\necho \"script $0\" > /made/by-script\nEOF\n\
         ENV X=ex\n\
         RUN cat <<ONE > /made/one && cat <<-\"TWO\" > /made/two\n1 $X\nONE\n\t2 $X\n\tTWO\n\
         CMD [\"cat\", \"/made/by-heredoc\", \"/made/by-script\", \"/made/one\", \"/made/two\"]\n",
    );
    let out = p.root().join("h.tar");
    let tag = format!("{}:1", unique("kiln-heredoc"));
    let _untag = Untag(vec![tag.clone()]);
    p.cmd()
        .plugins(&plugins)
        .build("app")
        .tag(&tag)
        .arg("--output")
        .arg(format!("type=docker,dest={}", out.display()))
        .run()
        .ok();
    docker(&["load", "-i", out.to_str().expect("utf8")]);
    assert_eq!(
        docker(&["run", "--rm", &tag]),
        "from a heredoc\nscript /dev/pipes/EOF\n1 ex\n2 $X\n"
    );
    // The script's file is in no layer.
    for m in layer_members(&out).iter().flatten() {
        assert!(!m.starts_with("dev/"), "{m} in a layer");
    }
    assert_nothing_left(&p);
}

/// `--platform` with the host's platform and a foreign one: one image each,
/// `RUN` under QEMU for the foreign one, and an OCI index, in the archive
/// (read by skopeo; `docker load` takes the host's image and runs it) and
/// pushed to a real registry (the same index bytes, read back by skopeo).
#[test]
#[allow(clippy::print_stderr)]
fn several_platforms_make_an_index_and_run_is_emulated() {
    if !daemon_and(&["runc", "skopeo", "docker-registry"]) {
        return;
    }
    let (native, native_uname, foreign, foreign_uname) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", "x86_64", "arm64", "aarch64"),
        "aarch64" => ("arm64", "aarch64", "amd64", "x86_64"),
        other => {
            eprintln!("no foreign platform known for {other}: this test did not run");
            return;
        }
    };
    let foreign_busybox = PathBuf::from(format!("/var/cache/kiln-test/busybox-{foreign}"));
    if !foreign_busybox.is_file() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "no {} (CI=true): scripts/test.sh fetches it",
            foreign_busybox.display()
        );
        eprintln!("no {}: this test did not run", foreign_busybox.display());
        return;
    }
    let (p, plugins) = project();
    let f = shipped_plugin("kiln-registry");
    fs::copy(&f, plugins.join(f.file_name().expect("name"))).expect("copy plugin");
    let registry = crate::util::TestRegistry::start(None);
    let host = registry.host();
    crate::registry::register(
        &p,
        plugins.to_str().expect("utf-8"),
        "reg",
        &[&format!("uri={host}/team")],
    );
    let app = p.work().join("app");
    fs::create_dir_all(&app).expect("mkdir");
    fs::copy("/bin/busybox", app.join(format!("busybox-{native}"))).expect("busybox");
    fs::copy(&foreign_busybox, app.join(format!("busybox-{foreign}"))).expect("busybox");
    write(
        &app,
        "Dockerfile",
        "# syntax=docker/dockerfile:1.10\nFROM scratch\nARG TARGETARCH\n\
         COPY busybox-$TARGETARCH /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n",
    );
    let tag = format!("{host}/team/multi:1");
    let out = p.root().join("multi.tar");
    let r = p
        .cmd()
        .plugins(&plugins)
        .build(&app)
        .tag(&tag)
        .args(["--platform", &format!("linux/{native},linux/{foreign}")])
        .output(&out)
        .registry("reg")
        .json()
        .run();
    r.ok();
    let pushed = r.json()["pushed"].as_str().expect("pushed").to_string();
    let (_, digest) = pushed.split_once('@').expect("repo@digest");

    // The archive's index and the registry's are the same bytes.
    let raw = |target: &str| {
        let o = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", target])
            .output()
            .expect("skopeo");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let from_archive = raw(&format!("oci-archive:{}", out.display()));
    assert_eq!(raw(&format!("docker://{tag}")), from_archive);
    let index: Value = serde_json::from_slice(&from_archive).expect("index");
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let index_file = p.root().join("index.raw");
    fs::write(&index_file, &from_archive).expect("write");
    let sum = Command::new("sha256sum")
        .arg(&index_file)
        .output()
        .expect("sha256sum");
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(
        format!("sha256:{}", sum.split_whitespace().next().unwrap_or("")),
        digest
    );
    let manifests = index["manifests"].as_array().expect("manifests");
    let archs: Vec<&str> = manifests
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    assert_eq!(archs, [native, foreign]);

    // Each image's last layer holds what `uname -m` said for its platform.
    let files = archive_files(&out);
    let blob = |d: &str| &files[&format!("blobs/sha256/{}", &d["sha256:".len()..])];
    for (m, uname) in manifests.iter().zip([native_uname, foreign_uname]) {
        let manifest: Value =
            serde_json::from_slice(blob(m["digest"].as_str().expect("digest"))).expect("manifest");
        let config: Value =
            serde_json::from_slice(blob(manifest["config"]["digest"].as_str().expect("config")))
                .expect("config");
        assert_eq!(config["architecture"], m["platform"]["architecture"]);
        let last = manifest["layers"]
            .as_array()
            .expect("layers")
            .last()
            .cloned();
        let layer = layer_files(blob(
            last.expect("a layer")["digest"].as_str().expect("digest"),
        ));
        let arch = layer
            .iter()
            .find(|(path, _)| path == "arch")
            .expect("/arch");
        assert_eq!(String::from_utf8_lossy(&arch.1).trim(), uname);
    }

    // docker load takes this machine's image, which runs.
    let local = unique("kiln-multi");
    let _untag = Untag(vec![local.clone()]);
    let loaded = Command::new("docker")
        .args(["load", "-i"])
        .arg(&out)
        .output()
        .expect("docker load");
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    docker(&["tag", &tag, &local]);
    let _untag_pushed = Untag(vec![tag.clone()]);
    assert_eq!(docker(&["run", "--rm", &local]).trim(), native_uname);
    assert_nothing_left(&p);
}

/// A platform this machine cannot run is refused before any work, naming
/// the platform and what to install; a Dockerfile without `RUN` builds for
/// it all the same.
#[test]
fn run_for_a_platform_without_emulation_is_refused_up_front() {
    // An architecture with no binfmt_misc handler here (Debian's
    // qemu-user-static registers most, not this one).
    let missing = "wasm";
    let (p, plugins) = project();
    let app = p.work().join("app");
    write(&app, "a.txt", "a\n");
    write(&app, "Dockerfile", "FROM scratch\nCOPY a.txt /\nRUN true\n");
    let native = format!("linux/{}", kiln_distribution::platform::host_architecture());
    let r = p
        .cmd()
        .plugins(&plugins)
        .build(&app)
        .tag("x:1")
        .args(["--platform", &format!("{native},linux/{missing}")])
        .output(p.root().join("x.tar"))
        .run();
    r.code(6);
    assert!(
        r.stderr.contains(&format!("RUN for linux/{missing}"))
            && r.stderr.contains("qemu-user-static")
            && r.stderr.contains("line 3"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("building for"),
        "work was done: {}",
        r.stderr
    );
    assert!(!p.root().join("x.tar").exists());

    write(&app, "Dockerfile", "FROM scratch\nCOPY a.txt /\n");
    p.cmd()
        .plugins(&plugins)
        .build(&app)
        .tag("x:1")
        .args(["--platform", &format!("{native},linux/{missing}")])
        .output(p.root().join("x.tar"))
        .run()
        .ok();
    let files = archive_files(&p.root().join("x.tar"));
    let index: Value = serde_json::from_slice(&files["index.json"]).expect("index.json");
    assert_eq!(
        index["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_nothing_left(&p);
}

/// A Flyte-shaped Dockerfile (as flyte's docker builder writes them) on a
/// real Debian base: `# syntax=docker/dockerfile:1.10`, a tool from another
/// stage bound with `--mount=from=...` (Flyte binds uv this way),
/// `--mount=type=cache` for apt and pip (sharing=locked, mode=0777), the
/// requirements bound from the context (`--mount=type=bind`, relative
/// target), a `--mount=type=secret` read by `RUN`, `SHELL`. The second
/// build (`--no-cache`) finds both caches warm; the secret is in no layer,
/// the config, the cache folder or the outputs; the bound files are in no
/// layer; a changed requirements file runs the step again.
#[test]
fn a_flyte_shaped_image_on_debian_with_cache_bind_and_secret_mounts() {
    if !daemon_and(&["runc"]) {
        return;
    }
    let (p, plugins) = project();
    let Some(base) = debian_base(&p, &plugins) else {
        return;
    };
    let secret = "flyte-SECRET-51c0ffee-never-stored";
    write(p.root(), "pip_token", secret);
    let (app, ca_step) = python_app(&p, "requirements_uv.txt", "flyte task");
    write(
        &app,
        "Dockerfile",
        &format!(
            "# syntax=docker/dockerfile:1.10\n\
             FROM debian as tools\n\
             RUN printf '#!/bin/sh\\necho \"tool ran: $*\"\\n' > /tool && chmod 755 /tool\n\
             FROM debian\n\
             USER root\n\
             ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1\n\
             RUN --mount=type=cache,sharing=locked,mode=0777,target=/var/cache/apt,id=apt \\\n\
             \x20   apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \\\n\
             \x20   && rm -rf /var/lib/apt/lists/*\n\
             {ca_step}\
             RUN --mount=type=cache,sharing=locked,mode=0777,target=/root/.cache/pip,id=pip \\\n\
             \x20   --mount=from=tools,source=/tool,target=/usr/bin/tool \\\n\
             \x20   --mount=type=bind,target=requirements_uv.txt,src=requirements_uv.txt \\\n\
             \x20   --mount=type=secret,id=pip_token,env=PIP_TOKEN \\\n\
             \x20   tool install && test -n \"$PIP_TOKEN\" && echo \"token of ${{#PIP_TOKEN}} bytes\" \\\n\
             \x20   && pip download --default-timeout=60 --dest /root/.cache/pip/wheels \\\n\
             \x20   --find-links /root/.cache/pip/wheels -r requirements_uv.txt \\\n\
             \x20   && pip install --break-system-packages --no-index \\\n\
             \x20   --find-links /root/.cache/pip/wheels -r requirements_uv.txt\n\
             COPY main.py /root/\n\
             ENV _F_IMG_ID=kiln-flyte-test\n\
             WORKDIR /root\n\
             SHELL [\"/bin/bash\", \"-c\"]\n\
             CMD [\"python3\", \"main.py\"]\n"
        ),
    );
    let tag = format!("{}:1", unique("kiln-flyte"));
    let _untag = Untag(vec![tag.clone()]);
    let out = p.root().join("flyte.tar");
    let build = |extra: &[&str]| {
        let r = p
            .cmd()
            .plugins(&plugins)
            .build("app")
            .tag(&tag)
            .arg("--build-context")
            .arg(format!("debian=oci-layout://{}", base.display()))
            .arg("--secret")
            .arg(format!(
                "id=pip_token,src={}",
                p.root().join("pip_token").display()
            ))
            .arg("--output")
            .arg(format!("type=docker,dest={}", out.display()))
            .args(extra.iter().copied())
            .json()
            .run();
        r.ok();
        assert!(!r.all_output().contains(secret), "secret printed");
        r.stderr.clone()
    };
    let log = build(&[]);
    assert!(log.contains("tool ran: install"), "{log}");
    assert!(
        log.contains(&format!("token of {} bytes", secret.len())),
        "{log}"
    );
    assert!(log.contains("Successfully installed six-1.17.0"), "{log}");
    assert_nothing_left(&p);
    // Both caches are warm the second time: apt downloads nothing, pip
    // finds the wheel it downloaded.
    let log = build(&["--no-cache"]);
    assert!(log.contains("Need to get 0 B"), "{log}");
    assert!(log.contains("File was already downloaded"), "{log}");
    assert_nothing_left(&p);

    docker(&["load", "-i", out.to_str().expect("utf8")]);
    assert_eq!(
        docker(&["run", "--rm", &tag]),
        "flyte task with six 1.17.0\n"
    );
    for m in layer_members(&out).iter().flatten() {
        assert!(
            !m.starts_with("var/cache/apt/archives/python3")
                && !m.starts_with("root/.cache/pip")
                && m != "requirements_uv.txt"
                && m != "usr/bin/tool"
                && !m.starts_with("run/secrets"),
            "{m} in a layer"
        );
    }
    assert_secret_nowhere(&p, &out, secret);

    // The bound requirements are part of the step's key: a change runs it.
    write(&app, "requirements_uv.txt", "six==1.16.0\n");
    let log = build(&[]);
    assert!(log.contains("Successfully installed six-1.16.0"), "{log}");
    assert_nothing_left(&p);
}

/// `--build-arg KEY` takes its value from the environment (buildx's rule;
/// unset, it is left out), and a build arg no ARG declares is warned about.
/// The value's spaces survive `LABEL who=$WHO`, as in Docker.
#[test]
fn build_args_from_the_environment_and_unused_ones_warned() {
    let (p, plugins) = project();
    let app = p.work().join("app");
    write(
        &app,
        "Dockerfile",
        "FROM scratch\nARG WHO=nobody\nLABEL who=$WHO\n",
    );
    let out = p.root().join("x.tar");
    let r = p
        .cmd()
        .plugins(&plugins)
        .build(&app)
        .tag("x:1")
        .args(["--build-arg", "WHO", "--build-arg", "EXTRA=1"])
        .args(["--build-arg", "NOT_SET_ANYWHERE"])
        .env("WHO", "from the environment")
        .output(&out)
        .run();
    r.ok();
    assert!(
        r.stderr
            .contains("build args not consumed by the Dockerfile (no ARG declares them): EXTRA"),
        "{}",
        r.stderr
    );
    let files = archive_files(&out);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    let config: Value =
        serde_json::from_slice(&files[manifest[0]["Config"].as_str().expect("config")])
            .expect("config");
    assert_eq!(config["config"]["Labels"]["who"], "from the environment");
}

/// `-o type=docker,dest=-` (buildx's spelling) writes the archive to
/// standard output and the report to standard error; with `--json`, which
/// would share standard output, it is refused before any work.
#[test]
fn output_to_standard_output() {
    let (p, plugins) = project();
    let app = p.work().join("app");
    write(&app, "a.txt", "to stdout\n");
    write(&app, "Dockerfile", "FROM scratch\nCOPY a.txt /\n");
    let d = plugins.to_str().expect("utf8");
    let args = [
        "--plugins-dir",
        d,
        "build",
        "app",
        "-t",
        "x:1",
        "-o",
        "type=docker,dest=-",
    ];
    let out = p.command(&args).output().expect("run kiln");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("built x:1"), "{stderr}");
    assert!(!p.work().join("-").exists(), "a file named -");
    let archive = p.root().join("from-stdout.tar");
    fs::write(&archive, &out.stdout).expect("write");
    let files = archive_files(&archive);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    assert_eq!(manifest[0]["RepoTags"][0], "x:1");
    let layers = layer_members(&archive);
    assert_eq!(layers, [["a.txt"]]);

    let r = p.kiln(&[&args[..], &["--json"]].concat());
    r.code(2);
    assert!(r
        .stderr
        .contains("--output dest=- writes the image to standard output"));
}

/// `kiln build -`, as `docker build -` and ZenML's subprocess path use it:
/// a gzip tar on standard input is the context (its `.dockerignore`
/// applies, `-f` names a file inside it), plain text is a Dockerfile with
/// an empty context, and a hostile archive is refused naming the entry.
/// Nothing is left in the temporary folder afterwards.
#[test]
fn context_from_standard_input() {
    use std::io::Write;
    use std::process::Stdio;
    let (p, plugins) = project();
    let app = p.work().join("app");
    write(&app, "kept.txt", "from stdin\n");
    write(&app, "ignored.txt", "not sent\n");
    write(&app, ".dockerignore", "ignored.txt\n");
    write(&app, "build/Containerfile", "FROM scratch\nCOPY *.txt /\n");
    let tmp = p.root().join("tmp");
    fs::create_dir_all(&tmp).expect("tmp");
    let tar = std::process::Command::new("tar")
        .args(["-C", app.to_str().expect("utf8"), "-cz", "."])
        .output()
        .expect("tar");
    assert!(tar.status.success());
    let d = plugins.to_str().expect("utf8");
    let kiln_with = |args: &[&str], input: &[u8]| {
        let mut child = p
            .command(&[&["--plugins-dir", d, "build", "-"], args].concat())
            .env("TMPDIR", &tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kiln");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait");
        feeder.join().expect("feeder");
        out
    };
    let out = kiln_with(
        &[
            "-f",
            "build/Containerfile",
            "-t",
            "in:1",
            "-o",
            "type=oci,dest=-",
        ],
        &tar.stdout,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let archive = p.root().join("in.tar");
    fs::write(&archive, &out.stdout).expect("write");
    assert_eq!(layer_members(&archive), [["kept.txt"]]);

    let out = kiln_with(&["--dry-run"], b"FROM scratch\nLABEL from=stdin\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("build stdin:"), "{stdout}");
    assert!(stdout.contains("1 files"), "{stdout}");

    // An archive entry that climbs out of the context: refused by name.
    let mut evil = vec![0u8; 512];
    evil[..9].copy_from_slice(b"../escape");
    evil[100..107].copy_from_slice(b"0000644");
    evil[124..135].copy_from_slice(b"00000000001");
    evil[156] = b'0';
    evil[257..263].copy_from_slice(b"ustar\0");
    evil[263..265].copy_from_slice(b"00");
    evil[148..156].copy_from_slice(b"        ");
    let sum: u32 = evil.iter().map(|&b| u32::from(b)).sum();
    evil[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    evil.push(b'x');
    evil.resize(512 * 4, 0);
    let out = kiln_with(&[], &evil);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("../escape"), "{stderr}");
    assert!(!p.work().join("escape").exists());
    let left: Vec<_> = fs::read_dir(&tmp).expect("tmp").collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

/// `--push`, buildx's flag: no project, no registry component; the
/// registry is the host of `-t`. An explicit tag is built and pushed every
/// time (it may move); a derived tag is skipped once the registry has it.
/// `kiln image exists` then finds what was pushed.
#[test]
fn push_flag_needs_no_project() {
    if !daemon_and(&["docker-registry"]) {
        return;
    }
    let p = TestProject::new();
    let plugins = p.root().join("plugins");
    fs::create_dir_all(&plugins).expect("mkdir");
    for f in [shipped_plugin("kiln-oci"), shipped_plugin("kiln-registry")] {
        fs::copy(&f, plugins.join(f.file_name().expect("name"))).expect("copy plugin");
    }
    let registry = crate::util::TestRegistry::start(None);
    let host = registry.host();
    let app = p.work().join("app");
    write(&app, "a.txt", "pushed\n");
    write(&app, "Dockerfile", "FROM scratch\nCOPY a.txt /\n");
    let build = |tag: &str| {
        let r = p
            .cmd()
            .plugins(&plugins)
            .build("app")
            .tag(tag)
            .arg("--push")
            .json()
            .run();
        r.ok();
        r.json()
    };
    let tag = format!("{host}/team/app:1");
    let first = build(&tag);
    assert_eq!(first["status"], "built", "{first}");
    let again = build(&tag);
    assert_eq!(
        again["status"], "built",
        "an explicit tag is pushed again: {again}"
    );
    assert_eq!(first["digest"], again["digest"]);
    let exists = p
        .cmd()
        .plugins(&plugins)
        .args(["image", "exists", &tag, "--json"])
        .run();
    exists.ok();
    assert_eq!(exists.json()["state"], "exists");

    let derived = format!("{host}/team/derived");
    assert_eq!(build(&derived)["status"], "built");
    let second = build(&derived);
    assert_eq!(second["status"], "skipped", "{second}");

    let r = p.cmd().plugins(&plugins).build("app").arg("--push").run();
    r.code(2);
    assert!(r.stderr.contains("--push needs -t"), "{}", r.stderr);
}

/// `--load`, buildx's flag: the image goes into the local Docker Engine;
/// an engine that does not answer is exit 5 before any build work, naming
/// where kiln looked, and no temporary archive is left.
#[test]
fn load_puts_the_image_into_the_engine() {
    if !daemon_and(&[]) {
        return;
    }
    let (p, plugins) = project();
    let app = p.work().join("app");
    write(&app, "a.txt", "loaded\n");
    write(
        &app,
        "Dockerfile",
        "FROM scratch\nCOPY a.txt /\nLABEL kiln.test=load\n",
    );
    let tag = format!("{}:1", unique("kiln-load"));
    let _untag = Untag(vec![tag.clone()]);
    let tmp = p.root().join("tmp");
    fs::create_dir_all(&tmp).expect("tmp");
    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .tag(&tag)
        .arg("--load")
        .args(["--iidfile", "iid.txt", "--metadata-file", "meta.json"])
        .env("TMPDIR", &tmp)
        .json()
        .run();
    r.ok();
    assert!(
        r.json()["loaded"].as_str().expect("loaded").contains(&tag),
        "{}",
        r.stdout
    );
    // --iidfile holds the ID Docker gives the loaded image, as with buildx.
    let iid = fs::read_to_string(p.work().join("iid.txt")).expect("iidfile");
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &tag]);
    assert_eq!(iid, id.trim());
    assert_eq!(r.json()["image_id"], iid.as_str());
    let meta: Value =
        serde_json::from_slice(&fs::read(p.work().join("meta.json")).expect("metadata"))
            .expect("json");
    assert_eq!(meta["containerimage.config.digest"], iid.as_str());
    assert_eq!(meta["image.name"], tag.as_str());
    assert_eq!(meta["kiln.status"], "built");
    assert!(
        meta["containerimage.digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:") && d != iid),
        "{meta}"
    );
    let label = docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"kiln.test\"}}",
        &tag,
    ]);
    assert_eq!(label.trim(), "load");

    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .tag(&tag)
        .arg("--load")
        .env("TMPDIR", &tmp)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .run();
    r.code(5);
    assert!(
        r.stderr.contains("unix:///nonexistent/docker.sock"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("building "), "{}", r.stderr);
    let left: Vec<_> = fs::read_dir(&tmp).expect("tmp").collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");

    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .arg("--load")
        .arg("-o")
        .arg("type=oci,dest=x.tar")
        .run();
    r.code(2);
}

/// buildx's `--progress` and `-q`: quiet prints nothing on stderr and the
/// image ID alone on stdout (as `docker build -q`); rawjson makes every
/// stderr line one JSON object, the RUN step's output among them.
#[test]
fn quiet_and_rawjson_progress() {
    if !daemon_and(&["runc"]) {
        return;
    }
    let (p, plugins) = project();
    let app = p.work().join("app");
    busybox_app(
        &app,
        "RUN echo said-by-run && printf '\\033[31mred\\033[0m \\033]0;title\\007\\033[2Jdone\\n'\n",
    );
    let out = p.root().join("q.tar");
    let build = |flag: &str| {
        let mut cmd = p
            .cmd()
            .plugins(&plugins)
            .build("app")
            .tag("q:1")
            .output(&out)
            .arg("--no-cache");
        if !flag.is_empty() {
            cmd = cmd.arg(flag);
        }
        cmd.run()
    };
    let r = build("-q");
    r.ok();
    assert_eq!(r.stderr, "", "quiet wrote to stderr");
    let id = r.stdout.trim();
    assert!(
        id.len() == 71 && id.starts_with("sha256:") && !id.contains('\n'),
        "{:?}",
        r.stdout
    );

    let r = build("--progress=rawjson");
    r.ok();
    let mut saw_run_output = false;
    for line in r.stderr.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["kind"].is_string() && v["level"].is_string(), "{line}");
        saw_run_output |= v["message"] == "said-by-run";
    }
    assert!(saw_run_output, "{}", r.stderr);
    build("--progress=fancy").code(2);

    // Plain lines to a pipe: no colour, and no escape sequence at all from
    // the builder's output (a title change, a screen clear) gets through.
    let r = build("");
    r.ok();
    assert!(r.stderr.contains("   red done"), "{}", r.stderr);
    assert!(!r.stderr.contains('\u{1b}'), "{:?}", r.stderr);
}

/// `--progress=tty` (and `auto` on a terminal): a live line with the
/// current step and the time taken, the command's output printed above
/// it, cleared before the result; refused when stderr is no terminal.
/// The terminal is a real pseudo-terminal (`script` from util-linux).
#[test]
fn tty_progress_draws_a_live_line_on_a_terminal() {
    if !daemon_and(&["runc", "script"]) {
        return;
    }
    let (p, plugins) = project();
    let app = p.work().join("app");
    busybox_app(&app, "RUN echo tty-one && sleep 0.5 && echo tty-two\n");
    let out = p.root().join("tty.tar");
    let base = p.command(&[]);
    let line = format!(
        "{} --plugins-dir {} build {} -t tty:1 -o type=oci,dest={} --no-cache",
        base.get_program().to_string_lossy(),
        plugins.display(),
        app.display(),
        out.display()
    );
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    if let Some(dir) = base.get_current_dir() {
        script.current_dir(dir);
    }
    let done = script.output().expect("script");
    let text = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{text}");
    assert!(text.contains("=> RUN echo tty-one"), "{text}");
    assert!(
        text.contains("tty-one") && text.contains("tty-two"),
        "{text}"
    );
    // The live line: the elapsed time and the step, redrawn in place.
    assert!(text.contains("s] RUN echo tty-one"), "{text}");
    assert!(text.contains("\u{1b}[2K"), "{text}");
    assert!(text.contains("built tty:1"), "{text}");

    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .arg("--progress=tty")
        .run();
    r.code(2);
    assert!(r.stderr.contains("needs a terminal"), "{}", r.stderr);
}

/// Two machines share a cache through a registry (buildx's `--cache-to
/// type=registry,ref=REF,mode=max` and `--cache-from REF`): the second, with
/// an empty cache folder, rebuilds with no `RUN` executed (a step that
/// writes random bytes would give another digest) and the same image. Only
/// layers and digests go to the registry: the secret and the cache mount's
/// files are in none of its blobs, unpacked or not.
#[test]
fn two_machines_share_a_cache_through_a_registry() {
    if !daemon_and(&["runc", "docker-registry"]) {
        return;
    }
    let (p, plugins) = project();
    let registry = crate::util::TestRegistry::start(None);
    let host = registry.host();
    let secret = "kiln-SECRET-5d1e-shared-cache";
    let app = p.work().join("app");
    busybox_app(
        &app,
        "RUN --mount=type=cache,target=/root/.cache/pip touch /root/.cache/pip/wheel-in-cache-mount\n\
         RUN --mount=type=secret,id=token,env=TOKEN head -c 16 /dev/urandom | od -x > /random && \
             echo \"${#TOKEN}\" > /token-length\n",
    );
    let cache = format!("{host}/team/app-cache:main");
    let build = |cache_dir: &str, extra: &[&str], out: &str| {
        let mut cmd = p
            .cmd()
            .plugins(&plugins)
            .env("KILN_CACHE_DIR", p.root().join(cache_dir))
            .env("TOKEN", secret)
            .build("app")
            .tag("shared:1")
            .arg("--secret")
            .arg("id=token,env=TOKEN")
            .output(p.root().join(out))
            .json();
        for a in extra {
            cmd = cmd.arg(*a);
        }
        let r = cmd.run();
        r.ok();
        assert!(!r.all_output().contains(secret), "secret printed");
        let digest = r.json()["digest"].as_str().expect("digest").to_owned();
        (digest, r.stderr.clone())
    };
    // Machine one: no cache there yet; it builds and exports every step.
    let (first, log) = build(
        "machine-one",
        &[
            "--cache-from",
            &cache,
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
        ],
        "one.tar",
    );
    assert!(log.contains("no cache there yet"), "{log}");
    assert!(
        log.contains("--cache-to") && log.contains("mode=max"),
        "{log}"
    );
    // Machine two: an empty cache folder, the cache from the registry.
    let (second, log) = build("machine-two", &["--cache-from", &cache], "two.tar");
    assert_eq!(first, second, "{log}");
    assert_eq!(log.matches("(cached)").count(), 3, "{log}");
    assert!(
        log.contains("4 made by this build, 4 of them from the cache"),
        "{log}"
    );
    // A fresh checkout (new file times, so another context archive): the
    // COPY layer is made again, byte-identical, and the RUN steps after it
    // still come from the cache.
    fs::copy("/bin/busybox", app.join("busybox")).expect("busybox");
    let (fourth, log) = build("machine-four", &["--cache-from", &cache], "four.tar");
    assert_eq!(first, fourth, "{log}");
    assert_eq!(log.matches("(cached)").count(), 3, "{log}");
    // A registry that lies: the largest blob (busybox's COPY layer) is
    // replaced in its storage, so it serves other bytes under the digest.
    // The layer is refused with a warning and made here; the rest still
    // comes from the cache, and the image is the same.
    let blobs_dir = registry.data_dir().join("docker/registry/v2/blobs");
    let (largest, _) = files_below(&blobs_dir)
        .into_iter()
        .filter(|(p, _)| p.ends_with("data"))
        .max_by_key(|(_, d)| d.len())
        .expect("a blob in the registry");
    let original = fs::read(&largest).expect("read blob");
    fs::write(&largest, vec![0x1fu8; original.len()]).expect("tamper");
    let (fifth, log) = build("machine-five", &["--cache-from", &cache], "five.tar");
    fs::write(&largest, &original).expect("restore");
    assert_eq!(first, fifth, "{log}");
    assert!(
        log.contains("the step is built here") && log.contains("sent content with digest"),
        "{log}"
    );
    // Without --cache-from, machine three runs every step: another image.
    let (third, _) = build("machine-three", &[], "three.tar");
    assert_ne!(first, third);
    assert_nothing_left(&p);
    // Only layers and digests went to the registry.
    let blobs = files_below(&registry.data_dir());
    assert!(!blobs.is_empty());
    for (path, data) in &blobs {
        let mut plain = Vec::new();
        let _ = flate2::read::MultiGzDecoder::new(data.as_slice()).read_to_end(&mut plain);
        for needle in [secret.as_bytes(), b"wheel-in-cache-mount"] {
            assert!(
                !contains(data, needle) && !contains(&plain, needle),
                "{} holds {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    for (path, data) in files_below(&p.root().join("machine-two")) {
        assert!(
            !contains(&data, secret.as_bytes()),
            "secret in {}",
            path.display()
        );
    }
    // Cache kinds kiln does not keep, and the builder that keeps none.
    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .tag("x:1")
        .arg("--cache-to")
        .arg("type=local,dest=/tmp/x")
        .run();
    r.code(2);
    assert!(r.stderr.contains("type=local"), "{}", r.stderr);
}

#[test]
fn names_that_are_not_utf8_are_kept_exactly_by_copy_and_run() {
    use std::os::unix::ffi::OsStrExt;
    if !daemon_and(&["runc"]) {
        return;
    }
    let (p, plugins) = project();
    let app = p.work().join("app");
    busybox_app(
        &app,
        "COPY names /data/\n\
         RUN for f in /data/*; do echo \"$f\"; done > /listing && \
             printf made > \"/data/b$(printf '\\377')\"\n",
    );
    let names = app.join("names");
    fs::create_dir_all(&names).expect("mkdir");
    for (name, body) in [
        (&b"a\xff.txt"[..], "ff"),
        (b"a\xfe.txt", "fe"),
        (b"a.txt", "plain"),
    ] {
        fs::write(names.join(std::ffi::OsStr::from_bytes(name)), body).expect("write");
    }
    let out = p.root().join("out.tar");
    p.cmd()
        .plugins(&plugins)
        .build("app")
        .tag(&format!("{}:1", unique("kiln-names")))
        .arg("--output")
        .arg(format!("type=docker,dest={}", out.display()))
        .run()
        .ok();
    let files = archive_files(&out);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest");
    let layers: Vec<_> = manifest[0]["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            layer_files_raw(&files[l.as_str().expect("layer")])
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .collect();
    let copied = &layers[layers.len() - 2];
    // Three names, three files, each with its own bytes and contents.
    assert_eq!(
        copied.get(&b"data/a\xff.txt"[..]).map(Vec::as_slice),
        Some(&b"ff"[..])
    );
    assert_eq!(
        copied.get(&b"data/a\xfe.txt"[..]).map(Vec::as_slice),
        Some(&b"fe"[..])
    );
    assert_eq!(
        copied.get(&b"data/a.txt"[..]).map(Vec::as_slice),
        Some(&b"plain"[..])
    );
    // RUN saw them by their bytes, and its own such name is kept too.
    let ran = &layers[layers.len() - 1];
    assert_eq!(
        ran.get(&b"data/b\xff"[..]).map(Vec::as_slice),
        Some(&b"made"[..])
    );
    let listing = ran.get(&b"listing"[..]).expect("the listing");
    for name in [&b"/data/a\xff.txt"[..], b"/data/a\xfe.txt", b"/data/a.txt"] {
        assert!(
            listing.split(|&b| b == b'\n').any(|l| l == name),
            "{} not in {}",
            name.escape_ascii(),
            listing.escape_ascii()
        );
    }
    assert_nothing_left(&p);
}
