//! The `default` registry plugin against real registries (Debian's
//! `docker-registry` on 127.0.0.1, with and without htpasswd auth), through
//! `kiln build --registry` and the real Docker Engine.

use std::{fs, path::Path, process::Command};

use serde_json::Value;

use crate::util::{fixture, shipped_plugin, TestProject, TestRegistry};

#[allow(clippy::print_stderr)]
fn tools_and_daemon() -> bool {
    let ok = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let up = ok("docker", &["info"]) && ok("docker-registry", &["--version"]);
    if !up {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the Docker Engine and docker-registry are required (CI=true); scripts/test.sh installs them");
        }
        eprintln!("no Docker Engine or docker-registry: this registry test did not run");
    }
    up
}

fn project() -> (TestProject, String) {
    let p = TestProject::initialised();
    let dir = p.root().join("plugins");
    for f in [
        shipped_plugin("kiln-docker"),
        shipped_plugin("kiln-registry"),
        fixture("constructor-aborts"),
    ] {
        fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy plugin");
    }
    let dir = dir.to_string_lossy().into_owned();
    (p, dir)
}

fn write(root: &Path, rel: &str, contents: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, contents).expect("write");
}

fn register(p: &TestProject, plugins: &str, name: &str, sets: &[&str]) {
    let mut args = vec![
        "--plugins-dir",
        plugins,
        "component",
        "register",
        name,
        "--type",
        "container-registry",
        "--flavor",
        "default",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    p.kiln(&args).ok();
}

fn build(p: &TestProject, plugins: &str, image: &str, extra: &[&str]) -> crate::util::Run {
    let base = [
        "--plugins-dir",
        plugins,
        "build",
        "app",
        "-t",
        image,
        "--registry",
        "reg",
        "--json",
    ];
    p.kiln(&[&base[..], extra].concat())
}

#[test]
fn push_then_skip_then_latest_and_force_rebuild() {
    if !tools_and_daemon() {
        return;
    }
    let registry = TestRegistry::start(None);
    let (p, plugins) = project();
    register(
        &p,
        &plugins,
        "reg",
        &[&format!("uri=http://{}/team/", registry.host())],
    );
    write(
        &p.work().join("app"),
        "Dockerfile",
        "FROM local/busybox:1\nRUN echo v1 > /v\n",
    );
    let image = format!("{}/team/app:v1", registry.host());

    let first = build(&p, &plugins, &image, &[]);
    first.ok();
    let v: Value = first.json();
    assert_eq!(v["status"], "built", "{v}");
    let digest = v["digest"].as_str().expect("digest").to_string();
    assert!(
        digest.starts_with(&format!("{}/team/app@sha256:", registry.host())),
        "{digest}"
    );

    // Same content again: the registry has it, so nothing is built, and the
    // daemon is not contacted (the builder points at a dead socket).
    let dead = r#"{"docker_host": "unix:///nonexistent/docker.sock"}"#;
    let skipped = build(
        &p,
        &plugins,
        &image,
        &["--builder-flavor", "local", "--builder-config", dead],
    );
    skipped.ok();
    let v: Value = skipped.json();
    assert_eq!(v["status"], "skipped", "{v}");
    assert_eq!(v["digest"], digest.as_str());
    assert!(v["reason"]
        .as_str()
        .expect("reason")
        .contains("registry reg"));

    // --force and :latest always build.
    let forced = build(&p, &plugins, &image, &["--force"]).json();
    assert_eq!(forced["status"], "built");
    let latest = build(
        &p,
        &plugins,
        &format!("{}/team/app:latest", registry.host()),
        &[],
    )
    .json();
    assert_eq!(latest["status"], "built");

    // The image the registry has is the one that was built: pull it back.
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    let pull = Command::new("docker")
        .args(["pull", &image])
        .output()
        .expect("docker pull");
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let run = Command::new("docker")
        .args(["run", "--rm", &image, "cat", "/v"])
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "v1\n");

    // A name outside the registry is refused before anything is built.
    let r = build(
        &p,
        &plugins,
        &format!("{}/other/app:v1", registry.host()),
        &[],
    );
    r.code(2);
}

#[test]
fn credentials_work_and_wrong_ones_are_an_auth_error_without_leaking() {
    if !tools_and_daemon() {
        return;
    }
    let password = "s3cret-Pa55word-kiln";
    let registry = TestRegistry::start(Some(("kiln", password)));
    let (p, plugins) = project();
    register(
        &p,
        &plugins,
        "reg",
        &[
            &format!("uri={}", registry.host()),
            "username=kiln",
            "password=${env:REG_PASSWORD}",
        ],
    );
    write(
        &p.work().join("app"),
        "Dockerfile",
        "FROM local/busybox:1\nRUN echo auth > /v\n",
    );
    let image = format!("{}/auth/app:1", registry.host());
    let base = [
        "--plugins-dir",
        plugins.as_str(),
        "build",
        "app",
        "-t",
        image.as_str(),
        "--registry",
        "reg",
        "--json",
    ];

    let good = p.kiln_env(&base, &[("REG_PASSWORD", password)]);
    good.ok();
    assert_eq!(good.json()["status"], "built");
    let again = p.kiln_env(&base, &[("REG_PASSWORD", password)]);
    assert_eq!(again.json()["status"], "skipped");

    let bad = p.kiln_env(&base, &[("REG_PASSWORD", "wrong-password")]);
    bad.code(7);
    assert!(
        bad.stderr.contains("refused the credentials"),
        "{}",
        bad.stderr
    );
    for run in [&good, &again, &bad] {
        assert!(!run.all_output().contains(password), "secret printed");
        assert!(
            !run.all_output().contains("wrong-password"),
            "secret printed"
        );
    }
    let state = fs::read_to_string(p.work().join(".kiln/components.json")).expect("state");
    assert!(!state.contains(password));
}

#[test]
fn a_registry_that_is_down_is_never_exists() {
    if !tools_and_daemon() {
        return;
    }
    let (p, plugins) = project();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    register(
        &p,
        &plugins,
        "reg",
        &[&format!("uri=127.0.0.1:{port}"), "retries=0"],
    );
    write(
        &p.work().join("app"),
        "Dockerfile",
        "FROM local/busybox:1\n",
    );
    // The check cannot tell, so kiln builds; the push then fails clearly.
    let r = build(&p, &plugins, &format!("127.0.0.1:{port}/app:1"), &[]);
    assert_ne!(r.code, 0);
    assert!(!r.stdout.contains("skipped"), "{}", r.stdout);
    assert!(r.stderr.contains("Successfully built"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        r.stderr
    );
}
