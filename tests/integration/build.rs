//! `kiln build` end to end: the real `kiln` binary, the real `kiln-docker`
//! plugin, a real Docker Engine (started by scripts/test.sh), and `docker
//! run` to check what the images contain.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::util::{fixture, shipped_plugin, unique, write, TestProject};

/// Whether a Docker Engine answers (under `CI=true` a missing one fails).
fn daemon() -> bool {
    crate::util::daemon_and(&[])
}

/// A project with the docker plugin in its plugins folder.
fn project() -> (TestProject, String) {
    let p = TestProject::new();
    let dir = p.root().join("plugins");
    let src = shipped_plugin("kiln-docker");
    fs::copy(&src, dir.join(src.file_name().expect("name"))).expect("copy plugin");
    let dir = dir.to_string_lossy().into_owned();
    (p, dir)
}

fn docker_run(image: &str, cmd: &[&str]) -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", image])
        .args(cmd)
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "docker run {image} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Containers (running or not) whose command mentions `marker`.
fn containers_with(marker: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(marker))
        .map(str::to_owned)
        .collect()
}

#[test]
fn builds_run_copy_and_honour_dockerignore() {
    if !daemon() {
        return;
    }
    let (p, plugins) = project();
    let c = p.work().join("app");
    write(
        &c,
        "Dockerfile",
        "FROM local/busybox:1\nCOPY . /ctx/\nRUN echo built-by-run > /built.txt\n\
         CMD [\"sh\", \"-c\", \"cat /built.txt /ctx/hello.txt\"]\n",
    );
    write(&c, "hello.txt", "hello from COPY\n");
    write(&c, "secret.env", "TOKEN=do-not-ship\n");
    write(&c, "logs/app.log", "noise\n");
    write(&c, ".dockerignore", "secret.env\nlogs\n");
    let image = format!("{}:1", unique("kiln-e2e-copy"));
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "--builder-flavor",
        "local",
        "app",
        "-t",
        &image,
        "--json",
    ]);
    r.ok();
    let v = r.json();
    assert_eq!(v["status"], "built");
    assert_eq!(v["image"], image.as_str());
    assert_eq!(v["context_sha1"].as_str().map(str::len), Some(40));
    assert!(v["seconds"].as_f64().is_some());
    assert!(
        r.stderr.contains("Step 3/5 : RUN echo built-by-run"),
        "live progress: {}",
        r.stderr
    );
    assert_eq!(docker_run(&image, &[]), "built-by-run\nhello from COPY\n");
    // The image ID, as `docker build -q` and `--iidfile` give it.
    let id = Command::new("docker")
        .args(["inspect", "--format", "{{.Id}}", &image])
        .output()
        .expect("docker inspect");
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(v["image_id"], id.as_str());
    assert_eq!(v["digest"], id.as_str());
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "--builder-flavor",
        "local",
        "app",
        "-t",
        &image,
        "-q",
        "--iidfile",
        "iid.txt",
    ]);
    r.ok();
    assert_eq!(r.stdout.trim(), id);
    assert_eq!(
        std::fs::read_to_string(p.work().join("iid.txt")).expect("iidfile"),
        id
    );
    let listing = docker_run(&image, &["ls", "-a", "/ctx"]);
    assert!(listing.contains("hello.txt") && listing.contains("Dockerfile"));
    assert!(
        !listing.contains("secret.env"),
        "ignored file shipped: {listing}"
    );
    assert!(!listing.contains("logs"), "ignored dir shipped: {listing}");
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
}

#[test]
fn limits_of_two_gib_and_more_reach_run_at_full_width() {
    if !daemon() {
        return;
    }
    let (p, plugins) = project();
    let c = p.work().join("limits");
    // What the RUN container was given: cgroup v2's or v1's memory limit,
    // and /dev/shm's size in KiB.
    write(
        &c,
        "Dockerfile",
        "FROM local/busybox:1\n\
         RUN (cat /sys/fs/cgroup/memory.max 2>/dev/null || \
              cat /sys/fs/cgroup/memory/memory.limit_in_bytes) > /mem && \
             df -k /dev/shm | tail -1 | awk '{print $2}' > /shm\n\
         CMD [\"cat\", \"/mem\", \"/shm\"]\n",
    );
    let image = format!("{}:1", unique("kiln-e2e-limits"));
    // 3 GiB of memory and swap, 2.5 GiB of /dev/shm: past 32 bits.
    let config = r#"{"docker_build_options": {"memory": 3221225472, "memswap": 3221225472, "shmsize": 2684354560}}"#;
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "--builder-flavor",
        "local",
        "--builder-config",
        config,
        "limits",
        "-t",
        &image,
    ]);
    r.ok();
    assert_eq!(docker_run(&image, &[]), "3221225472\n2621440\n");
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
}

/// A build past `build_timeout_seconds` is stopped (exit 6, naming the
/// limit) and the daemon removes its `RUN` container.
#[test]
fn a_build_past_its_time_limit_is_stopped_and_leaves_no_container() {
    if !daemon() {
        return;
    }
    let (p, plugins) = project();
    let marker = unique("kiln-time-limit");
    write(
        &p.work().join("slow"),
        "Dockerfile",
        &format!("FROM local/busybox:1\nRUN echo {marker} && sleep 60\n"),
    );
    let started = std::time::Instant::now();
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "--builder-flavor",
        "local",
        "--builder-config",
        r#"{"build_timeout_seconds": 2}"#,
        "slow",
        "-t",
        &format!("{marker}:1"),
    ]);
    r.code(6);
    assert!(
        r.stderr.contains("longer than build_timeout_seconds (2 s)"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let containers = || {
        let out = Command::new("docker")
            .args(["ps", "-a", "--no-trunc", "--format", "{{.Command}}"])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout).contains(&marker)
    };
    let gone = (0..150).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !containers()
    });
    assert!(
        gone,
        "the RUN container of the stopped build is still there"
    );
}

#[test]
fn build_args_target_and_labels_reach_the_build() {
    if !daemon() {
        return;
    }
    let (p, plugins) = project();
    let c = p.work().join("multi");
    write(
        &c,
        "Dockerfile",
        "FROM local/busybox:1 AS first\nARG FLAVOUR=plain\nRUN echo \"first:$FLAVOUR\" > /out.txt\n\
         CMD [\"cat\", \"/out.txt\"]\n\
         FROM local/busybox:1 AS second\nRUN echo second > /out.txt\nCMD [\"cat\", \"/out.txt\"]\n",
    );
    let image = format!("{}:t", unique("kiln-e2e-args"));
    p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "--builder-flavor",
        "local",
        "multi",
        "-t",
        &image,
        "--target",
        "first",
        "--build-arg",
        "FLAVOUR=spicy",
        "--label",
        "org.kiln.test=yes",
    ])
    .ok();
    assert_eq!(docker_run(&image, &[]), "first:spicy\n");
    let label = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{index .Config.Labels \"org.kiln.test\"}}",
            &image,
        ])
        .output()
        .expect("docker inspect");
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "yes");
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
}

#[test]
fn failing_run_and_bad_dockerfile_fail_with_the_daemons_message() {
    if !daemon() {
        return;
    }
    let (p, plugins) = project();
    let marker = unique("kiln-e2e-fail");
    let c = p.work().join("failing");
    write(
        &c,
        "Dockerfile",
        &format!("FROM local/busybox:1\nRUN echo {marker} && exit 3\n"),
    );
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "--builder-flavor",
        "local",
        "failing",
        "-t",
        &format!("{marker}:x"),
    ]);
    r.code(6);
    assert!(
        r.stderr.contains("returned a non-zero code: 3"),
        "daemon's message: {}",
        r.stderr
    );
    assert!(
        containers_with(&marker).is_empty(),
        "containers left: {:?}",
        containers_with(&marker)
    );

    write(&c, "Dockerfile", "FROM local/busybox:1\nFROMM nothing\n");
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "--builder-flavor",
        "local",
        "failing",
        "-t",
        "kiln-e2e-syntax:x",
    ]);
    r.code(6);
    assert!(
        r.stderr.to_lowercase().contains("unknown instruction"),
        "{}",
        r.stderr
    );
}

/// A builder that does not declare `named-contexts` (the classic builder)
/// refuses `--build-context` instead of ignoring it.
#[test]
fn named_contexts_are_refused_by_a_builder_without_them() {
    let (p, plugins) = project();
    write(&p.work().join("ctx"), "Dockerfile", "FROM base\n");
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "ctx",
        "-t",
        "x:1",
        "--builder-flavor",
        "local",
        "--build-context",
        "base=docker-image://alpine:3",
        "--dry-run",
    ]);
    r.code(2);
    assert!(
        r.stderr.contains("--build-context base")
            && r.stderr.contains("does not take named contexts"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_unreachable_daemon_is_one_clear_error_naming_it() {
    let (p, plugins) = project();
    write(&p.work().join("ctx"), "Dockerfile", "FROM scratch\n");
    let with_socket = |socket: &Path| {
        let config = format!(r#"{{"docker_host": "unix://{}"}}"#, socket.display());
        let args = ["--plugins-dir", &plugins, "build", "ctx", "-t", "x:1"];
        let flavor = ["--builder-flavor", "local", "--builder-config", &config];
        p.kiln(&[&args[..], &flavor[..]].concat())
    };
    let missing = p.root().join("no-such-docker.sock");
    let r = with_socket(&missing);
    r.code(5);
    let named = missing.display().to_string();
    assert!(
        r.stderr.contains(&named) && r.stderr.contains("does not exist"),
        "{}",
        r.stderr
    );

    // A socket that exists but nobody listens on.
    let dead = p.root().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).expect("bind"));
    let r = with_socket(&dead);
    r.code(5);
    let named = dead.display().to_string();
    assert!(
        r.stderr.contains("cannot connect to the Docker daemon"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&named), "{}", r.stderr);

    // tcp:// with nothing listening.
    let r = p.kiln_env(
        &[
            "--plugins-dir",
            &plugins,
            "build",
            "ctx",
            "-t",
            "x:1",
            "--builder-flavor",
            "local",
        ],
        &[("DOCKER_HOST", "tcp://127.0.0.1:1")],
    );
    r.code(5);
    assert!(r.stderr.contains("tcp://127.0.0.1:1"), "{}", r.stderr);

    // A config the schema refuses never reaches the plugin.
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "ctx",
        "--builder-flavor",
        "local",
        "--builder-config",
        r#"{"docker_hots": "unix:///x"}"#,
    ]);
    r.code(2);
    assert!(r.stderr.contains("docker_hots"), "{}", r.stderr);
}

const ABORTS_CONFIG: &str = r#"{"host": "example"}"#;

#[test]
fn dry_run_plans_without_constructing_or_contacting_anything() {
    let p = TestProject::new();
    let dir = p.root().join("plugins");
    for f in [fixture("constructor-aborts"), shipped_plugin("kiln-docker")] {
        fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy");
    }
    let plugins = dir.to_string_lossy().into_owned();
    let c = p.work().join("proj");
    write(&c, "Dockerfile", "FROM scratch\nCOPY a /a\n");
    write(&c, "a", "one");
    // The `aborts` flavor kills the process if constructed.
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "--plugins-dir",
            plugins.as_str(),
            "build",
            "proj",
            "--dry-run",
            "--json",
        ];
        args.extend_from_slice(extra);
        p.kiln(&args).ok().json()
    };
    let v = plan(&[
        "--builder-flavor",
        "aborts",
        "--builder-config",
        ABORTS_CONFIG,
    ]);
    assert_eq!(v["status"], "planned");
    assert_eq!(v["flavor"], "aborts");
    let image = v["image"].as_str().expect("image").to_string();
    assert!(image.starts_with("proj:"), "{image}");
    // Unchanged input: the same derived tag; changed content or args: another.
    assert_eq!(
        plan(&[
            "--builder-flavor",
            "aborts",
            "--builder-config",
            ABORTS_CONFIG
        ])["image"],
        image.as_str()
    );
    assert_ne!(
        plan(&[
            "--builder-flavor",
            "aborts",
            "--builder-config",
            ABORTS_CONFIG,
            "--build-arg",
            "A=1"
        ])["image"],
        image.as_str()
    );
    write(&c, "a", "two");
    let changed = plan(&[
        "--builder-flavor",
        "aborts",
        "--builder-config",
        ABORTS_CONFIG,
    ]);
    assert_ne!(changed["image"], image.as_str());
    assert_ne!(changed["context_sha1"], v["context_sha1"]);
    // An explicit tag is kept; `latest` always builds.
    let v = plan(&[
        "--builder-flavor",
        "aborts",
        "--builder-config",
        ABORTS_CONFIG,
        "-t",
        "reg.example/app:latest",
    ]);
    assert_eq!(v["image"], "reg.example/app:latest");
    assert!(v["checks"].as_str().expect("checks").contains("latest"));
    // The docker builder pointed at nothing: the plan still succeeds.
    let v = plan(&[
        "--builder-flavor",
        "local",
        "--builder-config",
        r#"{"docker_host":"tcp://127.0.0.1:1"}"#,
    ]);
    assert_eq!(v["status"], "planned");
}

#[test]
fn two_builds_at_once_both_succeed() {
    if !daemon() {
        return;
    }
    let (p, plugins) = project();
    let mut children = Vec::new();
    let mut images = Vec::new();
    for i in 0..2 {
        let c = p.work().join(format!("par{i}"));
        write(
            &c,
            "Dockerfile",
            &format!(
                "FROM local/busybox:1\nRUN echo parallel-{i} > /n.txt\nCMD [\"cat\", \"/n.txt\"]\n"
            ),
        );
        let image = format!("{}:{i}", unique("kiln-e2e-par"));
        let child = p
            .command(&[
                "--plugins-dir",
                &plugins,
                "build",
                "--builder-flavor",
                "local",
                &format!("par{i}"),
                "-t",
                &image,
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln");
        children.push(child);
        images.push(image);
    }
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "build {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(docker_run(&images[i], &[]), format!("parallel-{i}\n"));
        let _ = Command::new("docker")
            .args(["rmi", "-f", &images[i]])
            .output();
    }
}

#[test]
fn ctrl_c_stops_the_build_in_the_daemon_and_exits_130() {
    if !daemon() {
        return;
    }
    let (p, plugins) = project();
    let marker = unique("kiln-e2e-sleep");
    let c = p.work().join("slow");
    write(
        &c,
        "Dockerfile",
        &format!("FROM local/busybox:1\nRUN echo {marker} && sleep 60\n"),
    );
    let mut child = p
        .command(&[
            "--plugins-dir",
            &plugins,
            "build",
            "--builder-flavor",
            "local",
            "slow",
            "-t",
            &format!("{marker}:x"),
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // Wait until the RUN step is running in the daemon.
    let started = Instant::now();
    loop {
        let line = lines
            .next()
            .expect("kiln ended before the RUN step")
            .expect("line");
        if line.contains(&marker) && containers_with(&marker).iter().any(|_| true) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "RUN step never started"
        );
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let interrupted = Instant::now();
    let code = child.wait().expect("wait").code();
    assert_eq!(code, Some(130));
    assert!(
        interrupted.elapsed() < Duration::from_secs(20),
        "took {:?}",
        interrupted.elapsed()
    );
    // The daemon stops the RUN container and removes it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !containers_with(&marker).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        containers_with(&marker).is_empty(),
        "left: {:?}",
        containers_with(&marker)
    );
}

#[test]
fn a_registry_component_owns_the_names_answers_the_check_and_receives_the_push() {
    let p = TestProject::initialised();
    let dir = p.root().join("plugins");
    for f in [
        fixture("good"),
        fixture("constructor-aborts"),
        shipped_plugin("kiln-docker"),
    ] {
        fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy");
    }
    let plugins = dir.to_string_lossy().into_owned();
    p.kiln(&[
        "--plugins-dir",
        &plugins,
        "component",
        "register",
        "reg",
        "--type",
        "container-registry",
        "--flavor",
        "fixture-registry",
        "--set",
        "uri=127.0.0.1:5999/team",
    ])
    .ok();
    write(
        &p.work().join("ctx"),
        "Dockerfile",
        "FROM local/busybox:1\nRUN true\n",
    );
    // The docker builder pointed at a dead socket: any contact would fail.
    let dead_builder = [
        "--builder-flavor",
        "local",
        "--builder-config",
        r#"{"docker_host": "unix:///nonexistent/docker.sock"}"#,
    ];
    let build = |tag: &str, extra: &[&str]| {
        let base = [
            "--plugins-dir",
            plugins.as_str(),
            "build",
            "ctx",
            "-t",
            tag,
            "--registry",
            "reg",
        ];
        p.kiln(&[&base[..], extra].concat())
    };
    // A name outside the registry: refused before anything is built.
    let r = build("other.example/app:1", &dead_builder);
    r.code(2);
    assert!(
        r.stderr.contains("does not belong to registry reg"),
        "{}",
        r.stderr
    );
    // Membership is not a string prefix: team vs teammate.
    build("127.0.0.1:5999/teammate/app:1", &dead_builder).code(2);
    // The plan names the check.
    let v = build(
        "127.0.0.1:5999/team/app:1",
        &[&dead_builder[..], &["--dry-run", "--json"]].concat(),
    )
    .ok()
    .json();
    assert!(
        v["checks"]
            .as_str()
            .expect("checks")
            .contains("registry reg"),
        "{v}"
    );

    if !daemon() {
        return;
    }
    // The fixture registry answers "absent", so the image is built, then the
    // builder pushes it through its daemon to the registry's host, where
    // nothing listens: a clear push error naming it.
    let r = build("127.0.0.1:5999/team/app:1", &["--builder-flavor", "local"]);
    r.code(5);
    assert!(r.stderr.contains("Successfully built"), "{}", r.stderr);
    assert!(
        r.stderr.contains("pushing 127.0.0.1:5999/team/app:1"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_oci_builder_writes_an_archive_docker_loads() {
    let p = TestProject::new();
    let dir = p.root().join("plugins");
    let f = shipped_plugin("kiln-oci");
    fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy");
    let plugins = dir.to_string_lossy().into_owned();
    let c = p.work().join("daemonless");
    fs::create_dir_all(c.join("bin")).expect("mkdir");
    if let Ok(busybox) = fs::read("/bin/busybox") {
        fs::write(c.join("bin/busybox"), busybox).expect("busybox");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(c.join("bin/busybox"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    write(&c, "site/index.html", "<h1>built without a daemon</h1>\n");
    write(&c, "secret.env", "TOKEN=x\n");
    write(&c, ".dockerignore", "secret.env\n");
    write(
        &c,
        "Dockerfile",
        "FROM scratch\nCOPY bin/busybox /bin/busybox\nCOPY site/ /srv/\nWORKDIR /srv\n\
         ENTRYPOINT [\"/bin/busybox\", \"cat\", \"index.html\"]\n",
    );
    let out = p.root().join("image.tar");
    let tag = format!("{}:1", unique("kiln-e2e-oci"));
    let dest = format!("type=oci,dest={}", out.display());
    let build = |extra: &[&str]| {
        let base = [
            "--plugins-dir",
            plugins.as_str(),
            "build",
            "daemonless",
            "-t",
            tag.as_str(),
            "--builder-flavor",
            "oci",
        ];
        p.kiln(&[&base[..], extra].concat())
    };
    let v = build(&["--output", &dest, "--json"]).ok().json();
    assert_eq!(v["status"], "built");
    let digest = v["digest"].as_str().expect("digest").to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    // Reproducible: the same input, the same digest.
    let again = build(&["--output", &dest, "--json"]).ok().json();
    assert_eq!(again["digest"], digest.as_str());
    // Without --output the builder says what it needs.
    let r = build(&[]);
    r.code(2);
    assert!(
        r.stderr.contains("--output type=oci,dest=FILE"),
        "{}",
        r.stderr
    );
    // RUN's shell form in an image without a shell: the line, and why.
    write(
        &c,
        "Dockerfile",
        "FROM scratch\nCOPY site/ /srv/\nRUN echo no\n",
    );
    let r = build(&["--output", &dest]);
    r.code(6);
    assert!(
        r.stderr.contains(
            "Dockerfile line 3: RUN: /bin/sh is not in the image (the shell form runs SHELL"
        ),
        "{}",
        r.stderr
    );

    if !daemon() {
        return;
    }
    let load = Command::new("docker")
        .arg("load")
        .arg("-i")
        .arg(&out)
        .output()
        .expect("docker load");
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert_eq!(docker_run(&tag, &[]), "<h1>built without a daemon</h1>\n");
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
}

/// A plugin that aborts during a build takes its worker process down, never
/// kiln: kiln names the plugin, the step and the signal, exits 3, and leaves
/// no context archive behind.
#[test]
fn a_plugin_that_aborts_during_a_build_is_reported_not_fatal() {
    let p = TestProject::new();
    let dir = p.root().join("plugins");
    let lib = fixture("constructor-aborts");
    fs::copy(&lib, dir.join(lib.file_name().expect("name"))).expect("copy");
    write(&p.work().join("app"), "Dockerfile", "FROM scratch\n");
    let tmp = p.root().join("tmp");
    fs::create_dir_all(&tmp).expect("tmp");
    let r = p
        .cmd()
        .plugins(&dir)
        .build("app")
        .tag("app:1")
        .builder_flavor("aborts")
        .builder_config(ABORTS_CONFIG)
        .env("TMPDIR", &tmp)
        .run();
    r.code(3);
    assert!(
        r.stderr.contains("plugin fixture-constructor-aborts (")
            && r.stderr
                .contains("crashed during build: signal 6 (SIGABRT)"),
        "{}",
        r.stderr
    );
    let left: Vec<_> = fs::read_dir(&tmp).expect("tmp").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `kiln push` runs its registry plugin in a worker too: a plugin that
/// aborts or hangs while pushing is reported, naming it and the step.
#[test]
fn a_registry_plugin_that_aborts_while_pushing_is_reported_not_fatal() {
    let p = TestProject::initialised();
    let dir = p.root().join("plugins");
    let lib = fixture("good");
    fs::copy(&lib, dir.join(lib.file_name().expect("name"))).expect("copy");
    let sets = ["uri=127.0.0.1:5999/team"];
    p.cmd()
        .plugins(&dir)
        .register("reg", "container-registry", "fixture-registry", &sets)
        .run()
        .ok();
    let push = |image: &str| p.cmd().plugins(&dir).push(image, "reg");
    let r = push("127.0.0.1:5999/team/crash-me:1").run();
    r.code(3);
    assert!(
        r.stderr.contains("crashed during push: signal 6 (SIGABRT)"),
        "{}",
        r.stderr
    );
    // A plugin that hangs is ended after KILN_PLUGIN_TIMEOUT seconds.
    let r = push("127.0.0.1:5999/team/hang-me:1")
        .env("KILN_PLUGIN_TIMEOUT", "1")
        .run();
    r.code(3);
    assert!(
        r.stderr
            .contains("crashed during push: it did not finish within 1 s"),
        "{}",
        r.stderr
    );
    let r = push("127.0.0.1:5999/team/app:1")
        .env("KILN_PLUGIN_TIMEOUT", "soon")
        .run();
    r.code(2);
    assert!(r.stderr.contains("KILN_PLUGIN_TIMEOUT"), "{}", r.stderr);
    // An ordinary failure of the same plugin is its own error, not a crash.
    let r = push("127.0.0.1:5999/team/app:1").run();
    assert_ne!(r.code, 0);
    assert!(!r.stderr.contains("crashed"), "{}", r.stderr);
}

/// Secrets are resolved once, by kiln, before the worker gets the config: a
/// secret whose value happens to look like a reference is passed as it is.
#[test]
fn a_secret_is_resolved_once_even_when_its_value_looks_like_a_reference() {
    let p = TestProject::initialised();
    let dir = p.root().join("plugins");
    let lib = fixture("good");
    fs::copy(&lib, dir.join(lib.file_name().expect("name"))).expect("copy");
    p.cmd()
        .plugins(&dir)
        .register("ci", "image-builder", "echo", &["token=${env:CI_TOKEN}"])
        .run()
        .ok();
    write(&p.work().join("app"), "Dockerfile", "FROM scratch\n");
    let value = "${env:NOT_SET_ANYWHERE}";
    let r = p
        .cmd()
        .plugins(&dir)
        .build("app")
        .tag("app:1")
        .arg("--builder")
        .arg("ci")
        .env("CI_TOKEN", value)
        .run();
    r.ok();
    assert!(
        r.stderr
            .contains(&format!("token of {} bytes", value.len())),
        "{}",
        r.stderr
    );
    assert!(!r.all_output().contains(value), "secret printed");
}

/// Every way a plugin can die, in the build and in the context hook (both
/// run in a worker): kiln names the plugin, the step and how it ended,
/// exits 3, and leaves no temporary files behind.
#[test]
fn a_plugin_that_dies_in_a_build_or_its_context_hook_is_reported_not_fatal() {
    let p = TestProject::new();
    let dir = p.root().join("plugins");
    let lib = fixture("good");
    fs::copy(&lib, dir.join(lib.file_name().expect("name"))).expect("copy");
    write(&p.work().join("app"), "Dockerfile", "FROM scratch\n");
    let tmp = p.root().join("tmp");
    fs::create_dir_all(&tmp).expect("tmp");
    for (how, said) in [
        ("abort", "signal 6 (SIGABRT)"),
        ("segfault", "signal 11 (SIGSEGV)"),
        ("exit", "it exited with status 0"),
        ("hang", "it did not finish within 1 s (KILN_PLUGIN_TIMEOUT)"),
    ] {
        for (when, step) in [("build", "build"), ("hook", "context hook")] {
            let config = serde_json::json!({ "fault": format!("{how}@{when}") }).to_string();
            let r = p
                .cmd()
                .plugins(&dir)
                .build("app")
                .tag("app:1")
                .builder_flavor("echo")
                .builder_config(&config)
                .env("TMPDIR", &tmp)
                .env("KILN_PLUGIN_TIMEOUT", "1")
                .run();
            r.code(3);
            assert!(
                r.stderr.contains(&format!(
                    "plugin fixture-good ({}) crashed during {step}: {said}",
                    dir.join(lib.file_name().expect("name")).display()
                )),
                "{how}@{when}: {}",
                r.stderr
            );
            let left: Vec<_> = fs::read_dir(&tmp).expect("tmp").collect();
            assert!(left.is_empty(), "{how}@{when} left behind: {left:?}");
        }
    }
}

/// Processes whose environment holds `marker` (`KILN_TEST_MARKER=...`).
fn processes_marked(marker: &str) -> Vec<String> {
    let needle = format!("KILN_TEST_MARKER={marker}");
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            fs::read(e.path().join("environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Ctrl-C while a plugin hangs in its context hook, its build or a push:
/// kiln exits 130 ("interrupted", not a crash), a second Ctrl-C ends a
/// plugin that does not stop by itself at once, and no worker is left.
#[test]
fn ctrl_c_while_a_plugin_hangs_exits_130_and_leaves_no_worker() {
    let p = TestProject::initialised();
    let dir = p.root().join("plugins");
    let lib = fixture("good");
    fs::copy(&lib, dir.join(lib.file_name().expect("name"))).expect("copy");
    write(&p.work().join("app"), "Dockerfile", "FROM scratch\n");
    p.cmd()
        .plugins(&dir)
        .register(
            "reg",
            "container-registry",
            "fixture-registry",
            &["uri=127.0.0.1:5999/team"],
        )
        .run()
        .ok();
    let d = dir.to_str().expect("utf8");
    let hook = r#"{"fault":"hang@hook"}"#;
    let build = r#"{"fault":"hang@build"}"#;
    let cases: [(&str, Vec<&str>, u32); 3] = [
        (
            "hook",
            vec![
                "build",
                "app",
                "-t",
                "app:1",
                "--builder-flavor",
                "echo",
                "--builder-config",
                hook,
            ],
            1,
        ),
        (
            "build",
            vec![
                "build",
                "app",
                "-t",
                "app:1",
                "--builder-flavor",
                "echo",
                "--builder-config",
                build,
            ],
            2,
        ),
        (
            "push",
            vec!["push", "127.0.0.1:5999/team/hang-me:1", "--registry", "reg"],
            2,
        ),
    ];
    for (when, args, presses) in cases {
        let marker = unique("kiln-ctrl-c");
        let mut all = vec!["--plugins-dir", d];
        all.extend(args);
        let mut child = p
            .command(&all)
            .env("KILN_TEST_MARKER", &marker)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn kiln");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let wanted = format!("fixture-good: hanging in {when}");
        let mut seen = Vec::new();
        loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{when}: kiln ended first: {seen:?}"))
                .expect("line");
            if line.contains(&wanted) {
                break;
            }
            seen.push(line);
        }
        for _ in 0..presses {
            let status = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .expect("kill -INT");
            assert!(status.success());
            std::thread::sleep(Duration::from_millis(200));
        }
        let code = child.wait().expect("wait").code();
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        assert_eq!(code, Some(130), "{when}: {rest:?}");
        assert!(
            rest.iter().all(|l| !l.contains("crashed")),
            "{when}: {rest:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_marked(&marker).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            processes_marked(&marker),
            Vec::<String>::new(),
            "{when}: a worker is left"
        );
    }
}

/// What the Docker Engine's classic builder cannot do is refused by name
/// before it is asked: several platforms in one run, and secrets.
#[test]
fn the_local_builder_refuses_several_platforms_and_secrets() {
    let (p, plugins) = project();
    let c = p.work().join("app");
    write(&c, "Dockerfile", "FROM scratch\nCOPY a /a\n");
    write(&c, "a", "x");
    let build = |extra: &[&str]| {
        p.cmd()
            .plugins(&plugins)
            .build(&c)
            .tag("x:1")
            .builder_flavor("local")
            .args(extra.iter().copied())
            .env("TOKEN", "s3cr3t")
            .run()
    };
    let r = build(&["--platform", "linux/amd64,linux/arm64"]);
    r.code(2);
    assert!(
        r.stderr.contains("--platform linux/amd64,linux/arm64")
            && r.stderr.contains("builds one platform per run"),
        "{}",
        r.stderr
    );
    let r = build(&["--secret", "id=tok,env=TOKEN"]);
    r.code(2);
    assert!(r.stderr.contains("cannot hand secrets"), "{}", r.stderr);
    assert!(!r.all_output().contains("s3cr3t"));
}
