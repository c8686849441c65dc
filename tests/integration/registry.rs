//! The `default` registry plugin against real registries (Debian's
//! `docker-registry` on 127.0.0.1, with and without htpasswd auth), through
//! `kiln build --registry` and the real Docker Engine.

use std::{fs, path::Path, process::Command};

use serde_json::Value;

use crate::util::{fixture, shipped_plugin, write, TestProject, TestRegistry};

/// The Docker Engine and Debian's registry (under `CI=true` missing ones fail).
fn tools_and_daemon() -> bool {
    crate::util::daemon_and(&["docker-registry"])
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

/// [`project`], with the daemonless `oci` builder too.
fn project_with_oci() -> (TestProject, String) {
    let (p, plugins) = project();
    let oci = shipped_plugin("kiln-oci");
    fs::copy(
        &oci,
        Path::new(&plugins).join(oci.file_name().expect("name")),
    )
    .expect("copy");
    (p, plugins)
}

pub(crate) fn register(p: &TestProject, plugins: &str, name: &str, sets: &[&str]) {
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
    let cmd = p
        .cmd()
        .plugins(plugins)
        .build("app")
        .tag(image)
        .registry("reg")
        .json();
    // These tests exercise the Docker Engine builder unless told otherwise.
    let cmd = if extra.contains(&"--builder-flavor") {
        cmd
    } else {
        cmd.builder_flavor("local")
    };
    cmd.args(extra).run()
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
    let digest = v["pushed"].as_str().expect("pushed").to_string();
    assert!(
        digest.starts_with(&format!("{}/team/app@sha256:", registry.host())),
        "{digest}"
    );

    // Same inputs again: the registry has an image built from them, so
    // nothing is built.
    let skipped = build(&p, &plugins, &image, &[]);
    skipped.ok();
    let v: Value = skipped.json();
    assert_eq!(v["status"], "skipped", "{v}");
    assert_eq!(v["pushed"], digest.as_str());
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
    // Nothing left in the Docker Engine.
    let latest_name = format!("{}/team/app:latest", registry.host());
    let _ = Command::new("docker")
        .args(["rmi", "-f", &image, &latest_name])
        .output();

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
    let _untag = crate::util::Untag(vec![image.clone()]);
    let base = [
        "--plugins-dir",
        plugins.as_str(),
        "build",
        "--builder-flavor",
        "local",
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
    let _untag = crate::util::Untag(vec![format!("127.0.0.1:{port}/app:1")]);
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

/// A registry stand-in that answers 503 to everything and counts requests
/// (a failure to inject; the real registry cannot be made to do this).
fn always_503() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&count);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, count)
}

#[test]
fn a_503_is_retried_boundedly_then_unknown_and_never_exists() {
    let (p, plugins) = project();
    let (port, count) = always_503();
    register(
        &p,
        &plugins,
        "reg",
        // Retries wait 1 ms, then 2 ms: the test need not sleep.
        &[
            &format!("uri=127.0.0.1:{port}"),
            "retries=2",
            "retry_backoff_ms=1",
        ],
    );
    write(
        &p.work().join("app"),
        "Dockerfile",
        "FROM local/busybox:1\n",
    );
    let image = format!("127.0.0.1:{port}/app:1");
    let _untag = crate::util::Untag(vec![image.clone()]);
    // --on-unknown fail: stop, exit 7, after 1 + 2 retries.
    let r = build(
        &p,
        &plugins,
        &image,
        &["--on-unknown", "fail", "--builder-flavor", "local"],
    );
    r.code(7);
    assert!(r.stderr.contains("503"), "{}", r.stderr);
    assert!(r.stderr.contains("after 3 attempts"), "{}", r.stderr);
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 3);

    // A builder that does not build on this machine cannot use a loopback
    // registry: refused before it is constructed (`aborts` would kill kiln).
    let r = build(
        &p,
        &plugins,
        &image,
        &[
            "--builder-flavor",
            "aborts",
            "--builder-config",
            r#"{"host":"x"}"#,
        ],
    );
    r.code(2);
    assert!(
        r.stderr.contains("does not build on this machine"),
        "{}",
        r.stderr
    );

    if !tools_and_daemon() {
        return;
    }
    // By default unknown means build (Flyte's rule); the push then fails.
    let r = build(&p, &plugins, &image, &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no checker could tell"), "{}", r.stderr);
    assert!(!r.stdout.contains("skipped"));
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

/// Put `bytes` in the layout's blobs; return its descriptor fields.
fn blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let tmp = layout.join("tmp-blob");
    fs::write(&tmp, bytes).expect("write blob");
    let digest = sha256_of(&tmp);
    fs::rename(&tmp, layout.join("blobs/sha256").join(&digest)).expect("place blob");
    (format!("sha256:{digest}"), bytes.len())
}

/// An OCI layout with one index of two platforms (linux/amd64, linux/arm64/v8).
pub(crate) fn two_platform_layout(layout: &Path) {
    fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let mut compressor = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
    let empty_tar = [0u8; 1024];
    let mut gz = vec![0u8; compressor.gzip_compress_bound(empty_tar.len())];
    let n = compressor.gzip_compress(&empty_tar, &mut gz).expect("gzip");
    gz.truncate(n);
    let (layer, layer_size) = blob(layout, &gz);
    let diff_id = {
        let tmp = layout.join("tmp-tar");
        fs::write(&tmp, empty_tar).expect("tar");
        let d = sha256_of(&tmp);
        fs::remove_file(tmp).expect("rm");
        format!("sha256:{d}")
    };
    let mut entries = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let mut config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            config["variant"] = v.into();
            platform["variant"] = v.into();
        }
        let (config_digest, config_size) = blob(layout, config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
        });
        let (digest, size) = blob(layout, manifest.to_string().as_bytes());
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size, "platform": platform,
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    let (digest, size) = blob(layout, index.to_string().as_bytes());
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "1"},
        }],
    });
    fs::write(layout.join("index.json"), top.to_string()).expect("index.json");
}

/// A registry holding `team/multi:1`, an index over linux/amd64 and
/// linux/arm64/v8 (copied in by skopeo).
fn registry_with_two_platforms() -> TestRegistry {
    let registry = TestRegistry::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = dir.path().join("layout");
    two_platform_layout(&layout);
    let copy = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{}/team/multi:1", registry.host()))
        .output()
        .expect("skopeo copy");
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    registry
}

#[test]
fn an_index_with_two_platforms_answers_per_platform() {
    if !tools_and_daemon() {
        return;
    }
    let registry = registry_with_two_platforms();

    use kiln_plugin_api::{client::RegistryCalls, Existence};
    let catalog = kiln::plugins::Catalog::from_files(&[shipped_plugin("kiln-registry")]);
    let flavor = catalog
        .find(
            Some(kiln_plugin_api::ComponentType::CONTAINER_REGISTRY),
            "default",
        )
        .expect("default flavor");
    let config = serde_json::json!({"uri": registry.host()});
    let reg = flavor
        .plugin
        .construct_registry("default", config.as_object().expect("object"))
        .expect("construct");
    let repo = format!("{}/team/multi", registry.host());
    let ask = |platforms: &[&str]| {
        let p: Vec<String> = platforms.iter().map(|s| s.to_string()).collect();
        reg.image_exists(&repo, "1", &p).expect("check")
    };
    let any = ask(&[]);
    assert_eq!(any.state, Existence::EXISTS);
    assert!(any.detail.contains("/team/multi@sha256:"), "{}", any.detail);
    assert_eq!(ask(&["linux/amd64"]).state, Existence::EXISTS);
    assert_eq!(ask(&["linux/arm64"]).state, Existence::EXISTS);
    assert_eq!(
        ask(&["linux/arm64/v8", "linux/amd64"]).state,
        Existence::EXISTS
    );
    assert_eq!(ask(&["linux/s390x"]).state, Existence::ABSENT);
    assert_eq!(
        ask(&["linux/amd64", "linux/s390x"]).state,
        Existence::ABSENT
    );
    assert_eq!(
        reg.image_exists(&repo, "2", &[]).expect("check").state,
        Existence::ABSENT
    );
}

/// `kiln image exists`, as the adapters call it, with no project: the
/// `default` flavor at the image's host. Exit 0 with the digest when it is
/// there for every platform asked, 1 when not, 7 when the registry cannot
/// tell; `--registry` takes a project's component instead.
#[test]
fn kiln_image_exists_answers_with_its_exit_code() {
    if !tools_and_daemon() {
        return;
    }
    let registry = registry_with_two_platforms();

    let bare = TestProject::new();
    let plugins = bare.root().join("plugins");
    fs::create_dir_all(&plugins).expect("mkdir");
    let f = shipped_plugin("kiln-registry");
    fs::copy(&f, plugins.join(f.file_name().expect("name"))).expect("copy plugin");
    let plugins = plugins.to_str().expect("utf-8");
    let ask = |image: &str, extra: &[&str]| {
        let args = [
            &["--plugins-dir", plugins, "image", "exists", image, "--json"][..],
            extra,
        ]
        .concat();
        bare.kiln(&args)
    };
    let image = format!("{}/team/multi:1", registry.host());
    let r = ask(&image, &["--platform", "linux/amd64,linux/arm64"]);
    r.code(0);
    let v = r.json();
    assert_eq!(v["state"], "exists", "{v}");
    assert!(
        v["digest"]
            .as_str()
            .expect("digest")
            .contains("/team/multi@sha256:"),
        "{v}"
    );
    let r = ask(
        &image,
        &["--platform", "linux/amd64", "--platform", "linux/s390x"],
    );
    r.code(1);
    assert_eq!(r.json()["state"], "absent");
    ask(&format!("{}/team/multi:2", registry.host()), &[]).code(1);
    // Nothing answers on this port: unknown, never "absent".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let r = ask(
        &format!("127.0.0.1:{port}/team/multi:1"),
        &[
            "--registry-config",
            &format!(r#"{{"uri":"127.0.0.1:{port}","retries":0}}"#),
        ],
    );
    r.code(7);
    assert_eq!(r.json()["state"], "unknown");
    // A bad reference or platform stops before any plugin is asked.
    ask("Bad:1", &[]).code(2);
    ask(&image, &["--platform", "linux"]).code(2);

    // Through a project's component.
    let (p, plugins) = project();
    register(
        &p,
        &plugins,
        "reg",
        &[&format!("uri={}/team", registry.host())],
    );
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "image",
        "exists",
        &image,
        "--registry",
        "reg",
    ]);
    r.code(0);
    assert!(r.stdout.contains("exists: "), "{}", r.stdout);
}

#[test]
fn credentials_come_from_dockers_config_and_helpers_are_bounded() {
    if !tools_and_daemon() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let password = "from-docker-config-5ecret";
    let registry = TestRegistry::start(Some(("kiln", password)));
    let (p, plugins) = project();
    register(
        &p,
        &plugins,
        "reg",
        &[&format!("uri={}", registry.host()), "timeout_seconds=2"],
    );
    write(
        &p.work().join("app"),
        "Dockerfile",
        "FROM local/busybox:1\nRUN echo cfg > /v\n",
    );
    let image = format!("{}/cfg/app:1", registry.host());
    let _untag = crate::util::Untag(vec![image.clone()]);
    let base = [
        "--plugins-dir",
        plugins.as_str(),
        "build",
        "--builder-flavor",
        "local",
        "app",
        "-t",
        image.as_str(),
        "--registry",
        "reg",
        "--json",
    ];
    let docker_config = p.root().join("docker-config");
    fs::create_dir_all(&docker_config).expect("mkdir");
    let docker_config_s = docker_config.to_string_lossy().into_owned();

    // `auths` with the base64 user:password, as `docker login` writes it.
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("kiln:{password}"))
    };
    fs::write(
        docker_config.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .expect("config.json");
    let r = p.kiln_env(&base, &[("DOCKER_CONFIG", &docker_config_s)]);
    r.ok();
    assert_eq!(r.json()["status"], "built");
    assert!(!r.all_output().contains(password));

    // A credential helper that hangs: a bounded, clear error (exit 7).
    let bin = p.root().join("bin");
    fs::create_dir_all(&bin).expect("mkdir");
    let helper = bin.join("docker-credential-kilnhang");
    fs::write(&helper, "#!/bin/sh\nsleep 30\n").expect("helper");
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(
        docker_config.join("config.json"),
        r#"{"credsStore": "kilnhang"}"#,
    )
    .expect("config");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = std::time::Instant::now();
    let r = p.kiln_env(
        &base,
        &[("DOCKER_CONFIG", &docker_config_s), ("PATH", &path)],
    );
    r.code(7);
    assert!(
        r.stderr
            .contains("docker-credential-kilnhang did not answer within 2 s"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // A helper that answers: its credentials are used.
    fs::write(
        &helper,
        format!("#!/bin/sh\ncat >/dev/null\necho '{{\"Username\":\"kiln\",\"Secret\":\"{password}\"}}'\n"),
    )
    .expect("helper");
    let r = p.kiln_env(
        &[&base[..], &["--force"]].concat(),
        &[("DOCKER_CONFIG", &docker_config_s), ("PATH", &path)],
    );
    r.ok();
    assert!(!r.all_output().contains(password));
}

#[test]
fn kiln_push_pushes_an_explicit_tag_and_the_registry_agrees() {
    if !tools_and_daemon() {
        return;
    }
    let registry = TestRegistry::start(None);
    let (p, plugins) = project();
    register(
        &p,
        &plugins,
        "reg",
        &[&registry.host()]
            .map(|h| format!("uri={h}/base"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let image = format!("{}/base/busybox:1", registry.host());
    let _untag = crate::util::Untag(vec![image.clone()]);
    let tag = Command::new("docker")
        .args(["tag", "local/busybox:1", &image])
        .status()
        .expect("docker tag");
    assert!(tag.success());
    let v = p
        .kiln(&[
            "--plugins-dir",
            &plugins,
            "push",
            &image,
            "--registry",
            "reg",
            "--json",
        ])
        .ok()
        .json();
    let digest = v["digest"].as_str().expect("digest").to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{image}"))
        .output()
        .expect("skopeo inspect");
    assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), digest);
    // No tag, or a name outside the registry: refused.
    let untagged = format!("{}/base/busybox", registry.host());
    p.kiln(&[
        "--plugins-dir",
        &plugins,
        "push",
        &untagged,
        "--registry",
        "reg",
    ])
    .code(2);
    p.kiln(&[
        "--plugins-dir",
        &plugins,
        "push",
        "elsewhere.io/x:1",
        "--registry",
        "reg",
    ])
    .code(2);
}

#[test]
fn without_a_tag_the_name_comes_from_the_registry() {
    let (p, plugins) = project();
    register(
        &p,
        &plugins,
        "reg",
        &[
            "uri=https://127.0.0.1:5999/team/",
            "default_repository=svc/api",
        ],
    );
    register(&p, &plugins, "plain", &["uri=127.0.0.1:5999/team"]);
    write(&p.work().join("my-app"), "Dockerfile", "FROM scratch\n");
    let plan = |registry: &str| {
        p.kiln(&[
            "--plugins-dir",
            &plugins,
            "build",
            "--builder-flavor",
            "local",
            "my-app",
            "--registry",
            registry,
            "--dry-run",
            "--json",
        ])
        .ok()
        .json()
    };
    let v = plan("reg");
    let image = v["image"].as_str().expect("image");
    assert!(image.starts_with("127.0.0.1:5999/team/svc/api:"), "{image}");
    let v = plan("plain");
    let image = v["image"].as_str().expect("image");
    assert!(image.starts_with("127.0.0.1:5999/team/my-app:"), "{image}");
    // A bad default_repository is refused at registration.
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "component",
        "register",
        "bad",
        "--type",
        "container-registry",
        "--flavor",
        "default",
        "--set",
        "uri=reg.io",
        "--set",
        "default_repository=Bad Name",
    ]);
    r.code(2);
    assert!(r.stderr.contains("/default_repository"), "{}", r.stderr);
}

/// A registry behind a private CA (HTTPS on this machine's non-loopback
/// address, a certificate made here with openssl): kiln trusts what the
/// system trusts and `SSL_CERT_FILE` names, as Docker's tools do. With the
/// CA, the registry answers (absent, exit 1); without it, the registry
/// cannot be asked (exit 7, naming the certificate problem).
#[test]
fn a_registry_behind_a_private_ca_is_trusted_through_ssl_cert_file() {
    if !crate::util::daemon_and(&["docker-registry", "openssl"]) {
        return;
    }
    // A non-loopback IPv4 address of this machine (loopback is plain HTTP).
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("ip");
    let addr = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .find(|a| !a.starts_with("127."))
        .map(str::to_string)
        .expect("a non-loopback IPv4 address");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=kiln test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=registry",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    fs::write(d.join("san.ext"), format!("subjectAltName=IP:{addr}\n")).expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    let port = std::net::TcpListener::bind((addr.as_str(), 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    fs::write(
        d.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
            d.join("data").display(),
            d.join("server.pem").display(),
            d.join("server.key").display()
        ),
    )
    .expect("config");
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(d.join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect((addr.as_str(), port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "registry did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (p, plugins) = project();
    let image = format!("{addr}:{port}/team/none:1");
    let ask = |env: &[(&str, &str)]| {
        p.kiln_env(
            &[
                "--plugins-dir",
                &plugins,
                "image",
                "exists",
                &image,
                "--json",
            ],
            env,
        )
    };
    let ca = d.join("ca.pem");
    let trusted = ask(&[("SSL_CERT_FILE", ca.to_str().expect("utf-8"))]);
    let untrusted = ask(&[("SSL_CERT_FILE", "/dev/null")]);
    let _ = child.kill();
    let _ = child.wait();
    trusted.code(1);
    assert_eq!(trusted.json()["state"], "absent", "{}", trusted.stdout);
    untrusted.code(7);
    let reason = untrusted.json()["reason"]
        .as_str()
        .unwrap_or("")
        .to_lowercase();
    assert!(reason.contains("certificate"), "{reason}");
}

/// A skip is never wrong: the derived tag covers every input that can change
/// the image (here labels, the builder's config and the base image's content
/// under the same tag), and kiln says which input changed since the last
/// build. Built with the daemonless `oci` builder against a real registry.
#[test]
fn a_derived_tag_skips_only_when_no_input_changed() {
    if !tools_and_daemon() {
        return;
    }
    let registry = TestRegistry::start(None);
    let (p, plugins) = project_with_oci();
    register(&p, &plugins, "reg", &[&format!("uri={}", registry.host())]);
    let base = format!("{}/base:1", registry.host());
    let push_base = |content: &str| {
        write(&p.work().join("base"), "f.txt", content);
        write(
            &p.work().join("base"),
            "Dockerfile",
            "FROM scratch\nCOPY f.txt /\n",
        );
        p.cmd()
            .plugins(&plugins)
            .build("base")
            .tag(&base)
            .args(["--push", "--builder-flavor", "oci"])
            .run()
            .ok();
    };
    push_base("one\n");
    write(&p.work().join("app"), "a.txt", "app\n");
    write(
        &p.work().join("app"),
        "Dockerfile",
        &format!("FROM {base}\nCOPY a.txt /\n"),
    );
    let build = |extra: &[&str]| {
        let r = p
            .cmd()
            .plugins(&plugins)
            .build("app")
            .registry("reg")
            .builder_flavor("oci")
            .json()
            .args(extra)
            .run();
        r.ok();
        r
    };
    let status = |r: &crate::util::Run| r.json()["status"].as_str().unwrap_or("").to_string();
    let first = build(&[]);
    assert_eq!(status(&first), "built", "{}", first.stdout);
    // The builder was given the base by the digest the tag was derived
    // from, not by its tag (which may move meanwhile).
    let pinned = format!("pulling {}/base@sha256:", registry.host());
    assert!(first.stderr.contains(&pinned), "{}", first.stderr);
    let again = build(&[]);
    assert_eq!(status(&again), "skipped", "{}", again.stdout);
    assert_eq!(again.json()["image"], first.json()["image"]);
    // A skipped build exports no cache, and says so.
    let cache = format!("type=registry,ref={}/cache:1", registry.host());
    let skipped = build(&["--cache-to", &cache]);
    assert_eq!(status(&skipped), "skipped", "{}", skipped.stdout);
    assert!(
        skipped
            .stderr
            .contains("not exported, the build was skipped"),
        "{}",
        skipped.stderr
    );

    // Each input, changed alone, builds again under a new tag; the same
    // input again is skipped.
    for (extra, input) in [
        (&["--label", "team=ml"][..], "label:team"),
        (
            &[
                "--label",
                "team=ml",
                "--builder-config",
                r#"{"created": 5}"#,
            ][..],
            "builder",
        ),
    ] {
        let r = build(extra);
        assert_eq!(status(&r), "built", "{extra:?}: {}", r.stdout);
        assert!(
            r.stderr.contains("changed: ") && r.stderr.contains(input),
            "{extra:?}: {}",
            r.stderr
        );
        assert_eq!(status(&build(extra)), "skipped", "{extra:?}");
    }

    // The base moves under the same tag: the app is built again.
    let extra = &[
        "--label",
        "team=ml",
        "--builder-config",
        r#"{"created": 5}"#,
    ][..];
    push_base("two\n");
    let r = build(extra);
    assert_eq!(status(&r), "built", "{}", r.stdout);
    assert!(r.stderr.contains(&format!("base:{base}")), "{}", r.stderr);
    assert_eq!(status(&build(extra)), "skipped");
    let plan = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .registry("reg")
        .args(["--dry-run", "--json"])
        .run();
    plan.ok();
    assert_eq!(
        plan.json()["bases"][0]["digest"],
        Value::Null,
        "{}",
        plan.stdout
    );

    // A base that cannot be resolved turns the skip off, saying why.
    write(
        &p.work().join("app"),
        "Dockerfile",
        &format!("FROM {}/nowhere:1\nCOPY a.txt /\n", registry.host()),
    );
    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .registry("reg")
        .builder_flavor("oci")
        .args(["--dry-run"])
        .run();
    r.ok();
    assert!(r.stdout.contains("unresolved"), "{}", r.stdout);
    let r = p
        .cmd()
        .plugins(&plugins)
        .build("app")
        .registry("reg")
        .builder_flavor("oci")
        .run();
    assert_ne!(r.code, 0);
    assert!(
        r.stdout.contains("could not be resolved") || r.stderr.contains("could not be resolved"),
        "{}{}",
        r.stdout,
        r.stderr
    );
}

/// An explicit tag is skipped only when the image under it was built from
/// the same inputs: kiln records them in the image (label
/// `dev.kiln.inputs`, digests only) and reads them back from the registry,
/// so an edit under the same tag builds again and says which input changed.
/// An image that records nothing (pushed by another tool) is trusted, as
/// Flyte trusts a tag, and the reason says so.
#[test]
fn an_explicit_tag_skips_only_an_image_built_from_the_same_inputs() {
    if !tools_and_daemon() {
        return;
    }
    let registry = TestRegistry::start(None);
    let (p, plugins) = project_with_oci();
    register(
        &p,
        &plugins,
        "reg",
        &[&format!("uri={}/team", registry.host())],
    );
    let app = p.work().join("app");
    write(&app, "a.txt", "one\n");
    write(&app, "Dockerfile", "FROM scratch\nCOPY a.txt /\n");
    let image = format!("{}/team/app:v1", registry.host());
    let other = format!("{}/team/app:other", registry.host());
    let _untag = crate::util::Untag(vec![image.clone(), other.clone()]);
    let build = |tag: &str, extra: &[&str]| {
        let r = build(
            &p,
            &plugins,
            tag,
            &[&["--builder-flavor", "oci"], extra].concat(),
        );
        r.ok();
        let v: Value = r.json();
        (
            v["status"].as_str().unwrap_or("").to_string(),
            v["reason"].as_str().unwrap_or("").to_string(),
        )
    };

    let (status, _) = build(&image, &[]);
    assert_eq!(status, "built");
    // The image records its inputs, as digests: no value appears.
    crate::util::docker(&["pull", "-q", &image]);
    let labels = crate::util::docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &image,
    ]);
    let labels: Value = serde_json::from_str(&labels).expect("labels");
    let recorded: Value = serde_json::from_str(
        labels["dev.kiln.inputs"]
            .as_str()
            .expect("the inputs label"),
    )
    .expect("a JSON record");
    assert!(recorded["context"].is_string(), "{recorded}");
    assert!(recorded["builder"].is_string(), "{recorded}");

    let (status, reason) = build(&image, &[]);
    assert_eq!(status, "skipped", "{reason}");
    assert!(reason.contains("same inputs"), "{reason}");

    // Each input changed under the same tag: built again, naming it; then
    // skipped again.
    write(&app, "a.txt", "two\n");
    let (status, reason) = build(&image, &[]);
    assert_eq!(status, "built", "{reason}");
    assert!(reason.contains("changed: context"), "{reason}");
    let (status, reason) = build(&image, &["--label", "team=ml"]);
    assert_eq!(status, "built", "{reason}");
    assert!(reason.contains("changed: label:team"), "{reason}");
    assert!(!reason.contains("ml"), "values never appear: {reason}");
    let (status, _) = build(&image, &["--label", "team=ml"]);
    assert_eq!(status, "skipped");
    // kiln's own label cannot be set by hand.
    p.cmd()
        .plugins(&plugins)
        .build("app")
        .tag(&image)
        .args(["--label", "dev.kiln.inputs={}"])
        .run()
        .code(2);

    // An image another tool pushed records nothing: its tag is trusted.
    crate::util::docker(&["tag", "local/busybox:1", &other]);
    crate::util::docker(&["push", "-q", &other]);
    let (status, reason) = build(&other, &[]);
    assert_eq!(status, "skipped", "{reason}");
    assert!(reason.contains("records no kiln inputs"), "{reason}");
}

/// kiln's distribution client against the real registry: a blob larger
/// than one piece goes up as `PATCH`es (each with its range, to the
/// `Location` the last answered) and a closing `PUT`, and comes back as a
/// stream checked against its digest; a blob claimed under another digest
/// is refused.
#[test]
fn a_blob_is_pushed_in_pieces_and_pulled_as_a_checked_stream() {
    use bytes::Bytes;
    use kiln_distribution::{client::sha256, RegistryClient, Retry};
    if !tools_and_daemon() {
        return;
    }
    let reg = TestRegistry::start(None);
    let host = format!("127.0.0.1:{}", reg.port);
    let client = RegistryClient::for_host(
        &host,
        &[],
        None,
        std::time::Duration::from_secs(20),
        Retry::new(0),
    )
    .expect("client");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = sha256(&data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut pieces = 0;
    let mut read = |at: u64, len: usize| {
        pieces += 1;
        Ok(Bytes::copy_from_slice(
            &data[at as usize..at as usize + len],
        ))
    };
    rt.block_on(client.upload_blob_from(
        "kiln/pieces",
        &digest,
        data.len() as u64,
        3000,
        &mut read,
    ))
    .expect("upload in pieces");
    assert_eq!(pieces, 4, "10000 bytes in pieces of 3000");
    let mut back = Vec::new();
    let n = rt
        .block_on(client.get_blob_to("kiln/pieces", &digest, &mut back))
        .expect("pull");
    assert_eq!((n, &back), (data.len() as u64, &data));
    // The registry checks what arrived against the digest claimed.
    let wrong = sha256(b"something else");
    let mut read = |at: u64, len: usize| {
        Ok(Bytes::copy_from_slice(
            &data[at as usize..at as usize + len],
        ))
    };
    let e = rt
        .block_on(client.upload_blob_from(
            "kiln/pieces",
            &wrong,
            data.len() as u64,
            3000,
            &mut read,
        ))
        .expect_err("a blob under another digest was accepted");
    assert!(e.to_string().contains(&wrong), "{e}");
}
