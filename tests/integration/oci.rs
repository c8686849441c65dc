//! The daemonless `oci` builder end to end: the real `kiln` binary and
//! plugins; images checked with the real Docker Engine (`docker load`,
//! `docker pull`, `docker run`, `docker inspect`), a real registry
//! (Debian's `docker-registry`, with htpasswd auth) and `skopeo` as an
//! independent OCI client.

use std::{
    fs,
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::{
    registry::register,
    util::{daemon_and, docker, shipped_plugin, unique, write, TestProject, TestRegistry},
};

fn project() -> (TestProject, String) {
    let p = TestProject::initialised();
    let dir = p.root().join("plugins");
    for name in ["kiln-oci", "kiln-docker", "kiln-registry"] {
        let f = shipped_plugin(name);
        fs::copy(&f, dir.join(f.file_name().expect("name"))).expect("copy plugin");
    }
    (p, dir.to_string_lossy().into_owned())
}

/// A base-image context: busybox with `sh`/`cat`/... links, and a user
/// `app` (1000:1000) in /etc/passwd and /etc/group. Without /bin/busybox
/// (only where the tests do not run) the links dangle.
fn busybox_context(dir: &Path) {
    fs::create_dir_all(dir.join("rootfs/bin")).expect("mkdir");
    if let Ok(data) = fs::read("/bin/busybox") {
        fs::write(dir.join("rootfs/bin/busybox"), data).expect("busybox");
        fs::set_permissions(
            dir.join("rootfs/bin/busybox"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
    }
    for tool in ["sh", "cat", "id", "stat", "ls", "echo", "pwd"] {
        symlink("busybox", dir.join("rootfs/bin").join(tool)).expect("symlink");
    }
    write(
        dir,
        "rootfs/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    );
    write(dir, "rootfs/etc/group", "root:x:0:\napp:x:1000:\n");
    write(
        dir,
        "Dockerfile",
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"sh\"]\n",
    );
}

fn skopeo_digest(target: &str, extra: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .args(extra)
        .arg(target)
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn without_a_builder_kiln_uses_oci_for_every_dockerfile() {
    let (p, plugins) = project();
    let c = p.work().join("app");
    write(&c, "Dockerfile", "FROM scratch\nCOPY a /a\nRUN make\n");
    write(&c, "a", "x");
    let plan = |p: &TestProject| {
        p.kiln(&[
            "--plugins-dir",
            &plugins,
            "build",
            "app",
            "--dry-run",
            "--json",
        ])
        .ok()
        .json()
    };
    // With RUN too: the daemonless builder runs it through an OCI runtime.
    assert_eq!(plan(&p)["flavor"], "oci");
    write(&c, "Dockerfile", "FROM scratch\nCOPY a /a\n");
    assert_eq!(plan(&p)["flavor"], "oci");
    // It needs somewhere to put the image.
    let r = p.kiln(&["--plugins-dir", &plugins, "build", "app", "-t", "x:1"]);
    r.code(2);
    assert!(
        r.stderr.contains("--output type=oci,dest=FILE") && r.stderr.contains("--registry"),
        "{}",
        r.stderr
    );
    // An archive in a folder that does not exist: a usage error naming it.
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "app",
        "-t",
        "x:1",
        "--output",
        "type=oci,dest=no/such/dir/x.tar",
    ]);
    r.code(2);
    assert!(r.stderr.contains("no/such/dir/x.tar"), "{}", r.stderr);
    // A config the schema takes but the flavor's type does not (1e3 is an
    // integer to JSON Schema, not to a u64): exit 2 naming the field.
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "app",
        "-t",
        "x:1",
        "--builder-flavor",
        "oci",
        "--builder-config",
        r#"{"created":1e3}"#,
        "--output",
        "type=oci,dest=x.tar",
    ]);
    r.code(2);
    assert!(
        r.stderr.contains("at created does not fit its type"),
        "{}",
        r.stderr
    );
    // A bad --build-context is refused before anything is built.
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "app",
        "--build-context",
        "base=./somewhere",
    ]);
    r.code(2);
    assert!(r.stderr.contains("oci-layout://"), "{}", r.stderr);
}

#[test]
fn a_push_to_a_registry_that_is_down_fails_naming_it_and_nothing_is_left() {
    let (p, plugins) = project();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let uri = format!("uri=127.0.0.1:{port}/team");
    register(&p, &plugins, "down", &[&uri, "retries=0"]);
    let c = p.work().join("app");
    write(&c, "Dockerfile", "FROM scratch\nCOPY a /a\n");
    write(&c, "a", "x");
    let tag = format!("127.0.0.1:{port}/team/app:1");
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "app",
        "-t",
        &tag,
        "--registry",
        "down",
        "--output",
        "type=oci,dest=out.tar",
    ]);
    r.code(5);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}")) && r.stderr.contains("cannot connect"),
        "{}",
        r.stderr
    );
    // The archive was asked for too, and is complete (written before the push).
    assert!(p.work().join("out.tar").is_file());
    let leftovers: Vec<_> = fs::read_dir(p.work())
        .expect("work")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(".kiln-tmp-") || name.ends_with(".tmp")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The same Dockerfile and context in `dir`, written in a given order with
/// given mtimes.
fn checkout(dir: &Path, reverse: bool, mtime: std::time::SystemTime) {
    let mut files = vec![
        ("Dockerfile", "FROM scratch AS assets\nCOPY site/ /site/\nFROM scratch\nARG VERSION=0\nLABEL version=$VERSION\nCOPY --from=assets /site /srv\nCOPY --chmod=640 conf/*.conf /etc/app/\nWORKDIR /srv\nENTRYPOINT [\"/bin/false\"]\n"),
        ("site/index.html", "<h1>hi</h1>\n"),
        ("site/css/a.css", "body{}\n"),
        ("conf/one.conf", "1\n"),
        ("conf/two.conf", "2\n"),
        ("conf/skip.txt", "not copied\n"),
    ];
    if reverse {
        files.reverse();
    }
    for (rel, text) in files {
        write(dir, rel, text);
        let f = fs::File::options()
            .write(true)
            .open(dir.join(rel))
            .expect("open");
        f.set_modified(mtime).expect("mtime");
    }
}

fn archive_digest(
    p: &TestProject,
    plugins: &str,
    dir: &str,
    out: &Path,
    env: &[(&str, &str)],
) -> (String, String) {
    let dest = format!("type=oci,dest={}", out.display());
    let r = p.kiln_env(
        &[
            "--plugins-dir",
            plugins,
            "build",
            dir,
            "-t",
            "repro:1",
            "--build-arg",
            "VERSION=2",
            "--output",
            &dest,
            "--json",
        ],
        env,
    );
    r.ok();
    let v = r.json();
    (
        v["digest"].as_str().expect("digest").to_string(),
        r.stderr.clone(),
    )
}

#[test]
fn two_checkouts_give_the_same_digest_and_rebuilds_reuse_layers() {
    let (p, plugins) = project();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    checkout(&p.work().join("one"), false, old);
    checkout(&p.work().join("two"), true, std::time::SystemTime::now());
    let a = p.root().join("a.tar");
    let b = p.root().join("b.tar");
    let (da, first) = archive_digest(&p, &plugins, "one", &a, &[]);
    let (db, second) = archive_digest(&p, &plugins, "two", &b, &[]);
    assert_eq!(da, db, "same content, other checkout: same digest");
    assert_eq!(fs::read(&a).expect("a"), fs::read(&b).expect("b"));
    assert!(
        first.contains("3 made by this build, 0 of them from the cache"),
        "{first}"
    );
    // The second checkout's layers are the first's: taken from the cache.
    assert!(
        second.contains("3 made by this build, 3 of them from the cache"),
        "{second}"
    );
    // --no-cache compresses again, to the same bytes.
    let dest = format!("type=oci,dest={}", b.display());
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "two",
        "-t",
        "repro:1",
        "--build-arg",
        "VERSION=2",
        "--output",
        &dest,
        "--no-cache",
        "--json",
    ]);
    r.ok();
    assert_eq!(r.json()["digest"], da.as_str());
    assert!(
        r.stderr.contains("0 of them from the cache"),
        "{}",
        r.stderr
    );
    // SOURCE_DATE_EPOCH is recorded: another digest, the same on both.
    let (ea, _) = archive_digest(
        &p,
        &plugins,
        "one",
        &a,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    let (eb, _) = archive_digest(
        &p,
        &plugins,
        "two",
        &b,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(ea, eb);
    assert_ne!(ea, da);

    if !daemon_and(&["skopeo"]) {
        return;
    }
    assert_eq!(
        skopeo_digest(&format!("oci-archive:{}", a.display()), &[]),
        ea
    );
    let tag = format!("{}:1", unique("kiln-oci-repro"));
    let dest = format!("type=oci,dest={}", a.display());
    p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "one",
        "-t",
        &tag,
        "--output",
        &dest,
    ])
    .ok();
    docker(&["load", "-i", &a.to_string_lossy()]);
    let config: Value =
        serde_json::from_str(&docker(&["inspect", "--format", "{{json .Config}}", &tag]))
            .expect("inspect");
    assert_eq!(config["WorkingDir"], "/srv");
    assert_eq!(config["Labels"]["version"], "0");
    assert_eq!(config["Entrypoint"][0], "/bin/false");
    let _ = docker(&["rmi", "-f", &tag]);
}

/// Everything a Dockerfile can arrange, read back through `docker run` and
/// `docker inspect`.
#[test]
fn an_image_from_a_registry_base_runs_what_the_dockerfile_arranged() {
    if !daemon_and(&["docker-registry", "skopeo", "htpasswd"]) {
        return;
    }
    let (p, plugins) = project();
    let registry = TestRegistry::start(Some(("ci", "s3cret-pw")));
    let host = registry.host();
    let uri = format!("uri={host}/team");
    register(
        &p,
        &plugins,
        "reg",
        &[&uri, "username=ci", "password=${env:REG_PASSWORD}"],
    );
    let env = [("REG_PASSWORD", "s3cret-pw")];
    let build = |dir: &str, tag: &str, extra: &[&str]| {
        let base = [
            "--plugins-dir",
            plugins.as_str(),
            "build",
            dir,
            "-t",
            tag,
            "--registry",
            "reg",
            "--json",
        ];
        p.kiln_env(&[&base[..], extra].concat(), &env)
    };

    // The base: pushed over the distribution API with Basic auth.
    busybox_context(&p.work().join("base"));
    let base_tag = format!("{host}/team/base:1");
    let r = build("base", &base_tag, &[]);
    r.ok();
    let v = r.json();
    assert_eq!(v["status"], "built");
    let pushed = v["pushed"].as_str().expect("pushed").to_string();
    let (repo_at, digest) = pushed.split_once('@').expect("repo@digest");
    assert_eq!(v["digest"], digest, "digest is the manifest digest alone");
    assert_eq!(repo_at, format!("{host}/team/base"));
    assert_eq!(
        skopeo_digest(
            &format!("docker://{base_tag}"),
            &["--creds", "ci:s3cret-pw"]
        ),
        digest
    );
    assert!(!r.stderr.contains("s3cret-pw") && !r.stdout.contains("s3cret-pw"));
    // Each blob's upload, byte by byte: a line as it starts and as it ends.
    let transfer_done = |stderr: &str, verb: &str| {
        stderr.lines().any(|l| {
            l.strip_prefix(verb)
                .and_then(|rest| rest.split_once(": "))
                .is_some_and(|(short, what)| {
                    short.len() == 12
                        && short.bytes().all(|b| b.is_ascii_hexdigit())
                        && what.ends_with(" done")
                })
        })
    };
    assert!(transfer_done(&r.stderr, "pushing "), "{}", r.stderr);
    // Unchanged: the registry says it exists, and nothing is built.
    let again = build("base", &base_tag, &[]).ok().json();
    assert_eq!(again["status"], "skipped");

    // An image on top of it: FROM the registry (with the same credentials),
    // --chown by the base's names, and everything else a Dockerfile sets.
    let c = p.work().join("app");
    write(&c, "greeting.txt", "hello from the oci builder\n");
    write(
        &c,
        "Dockerfile",
        &format!(
            r#"# syntax=docker/dockerfile:1
ARG BASE={host}/team/base:1
FROM $BASE AS runtime
ONBUILD COPY greeting.txt /onbuild.txt
LABEL org.kiln.layer=base

FROM runtime
ARG WHO=world
ENV GREETING="hello, ${{WHO}}" \
    APP_HOME=/home/app
COPY --chown=app:app greeting.txt $APP_HOME/
WORKDIR $APP_HOME
USER app
EXPOSE 8080 9090/udp
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --retries=2 CMD cat greeting.txt
ENTRYPOINT ["sh", "-c"]
CMD ["echo \"$GREETING\"; pwd; id -u; cat greeting.txt; stat -c '%u:%g' greeting.txt; cat /onbuild.txt"]
"#
        ),
    );
    let app_tag = format!("{host}/team/app:1");
    let r = build("app", &app_tag, &["--build-arg", "WHO=kiln"]);
    r.ok();
    assert!(
        r.stderr.contains(&format!("pulling {host}/team/base:1")),
        "{}",
        r.stderr
    );
    assert!(transfer_done(&r.stderr, "pulling "), "{}", r.stderr);
    let app_digest = r.json()["pushed"].as_str().expect("pushed").to_string();
    // The same figures for programs: one JSON object per report.
    let r = build(
        "app",
        &format!("{host}/team/app:2"),
        &["--build-arg", "WHO=json", "--progress", "rawjson"],
    );
    r.ok();
    let reports: Vec<Value> = r
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "progress")
        .collect();
    assert!(
        reports.iter().any(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("pushing "))
            && v["current"] == v["total"]
            && v["total"].as_u64().is_some_and(|t| t > 0)),
        "{}",
        r.stderr
    );

    // docker pull (after docker login) and docker run.
    let config_dir = tempfile::tempdir().expect("tempdir");
    let cfg = config_dir.path().to_string_lossy().into_owned();
    let login = Command::new("docker")
        .args([
            "--config",
            &cfg,
            "login",
            &host,
            "-u",
            "ci",
            "--password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(b"s3cret-pw")?;
            child.wait_with_output()
        })
        .expect("docker login");
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    docker(&["--config", &cfg, "pull", &app_tag]);
    let out = docker(&["run", "--rm", &app_tag]);
    assert_eq!(
        out,
        "hello, kiln\n/home/app\n1000\nhello from the oci builder\n1000:1000\nhello from the oci builder\n"
    );
    let config: Value = serde_json::from_str(&docker(&[
        "inspect",
        "--format",
        "{{json .Config}}",
        &app_tag,
    ]))
    .expect("inspect");
    assert_eq!(config["User"], "app");
    assert_eq!(config["Labels"]["org.kiln.layer"], "base");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    assert!(config["ExposedPorts"].get("9090/udp").is_some(), "{config}");
    assert!(config["Volumes"].get("/data").is_some(), "{config}");
    assert_eq!(config["StopSignal"], "SIGTERM");
    assert_eq!(config["Healthcheck"]["Test"][0], "CMD-SHELL");
    assert_eq!(config["Healthcheck"]["Interval"], 30_000_000_000i64);
    assert_eq!(config["Healthcheck"]["Retries"], 2);
    assert!(config["Env"]
        .as_array()
        .expect("env")
        .iter()
        .any(|e| e == "PATH=/bin"));
    // The digest Docker pulled is the one kiln reported.
    let repo_digests = docker(&["inspect", "--format", "{{json .RepoDigests}}", &app_tag]);
    let (_, d) = app_digest.split_once('@').expect("digest");
    assert!(repo_digests.contains(d), "{repo_digests} vs {app_digest}");
    let _ = docker(&["rmi", "-f", &app_tag]);

    // Without the registry's credentials, the base cannot be pulled: an
    // auth error naming the registry, no password in it.
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "app",
        "-t",
        "local-only:1",
        "--output",
        "type=oci,dest=out.tar",
        "--no-cache",
    ]);
    r.code(7);
    assert!(
        r.stderr.contains(&host) && r.stderr.contains("401"),
        "{}",
        r.stderr
    );
    assert!(!p.work().join("out.tar").exists(), "nothing half-written");
}

#[test]
fn a_base_from_an_oci_layout_archive_and_a_multi_stage_build_run() {
    if !daemon_and(&["skopeo"]) {
        return;
    }
    let (p, plugins) = project();
    busybox_context(&p.work().join("base"));
    let base_tar: PathBuf = p.root().join("base.tar");
    let dest = format!("type=oci,dest={}", base_tar.display());
    p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "base",
        "-t",
        "bb:1",
        "--output",
        &dest,
    ])
    .ok();
    let c = p.work().join("site");
    write(&c, "src/index.html", "<p>from a layout</p>\n");
    write(&c, "src/notes.md", "left out\n");
    write(
        &c,
        "Dockerfile",
        "FROM scratch AS pages\nCOPY src/*.html /pages/\n\
         FROM base\nCOPY --from=pages /pages /www\nCOPY --from=base /etc/group /copied-group\n\
         WORKDIR /www\nCMD [\"sh\", \"-c\", \"ls /www; cat index.html; cat /copied-group | wc -l\"]\n",
    );
    let out = p.root().join("site.tar");
    let tag = format!("{}:1", unique("kiln-oci-layout"));
    let dest = format!("type=oci,dest={}", out.display());
    let layout = format!("base=oci-layout://{}:1", base_tar.display());
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "site",
        "-t",
        &tag,
        "--build-context",
        &layout,
        "--output",
        &dest,
        "--json",
    ]);
    r.ok();
    let digest = r.json()["digest"].as_str().expect("digest").to_string();
    assert_eq!(
        skopeo_digest(&format!("oci-archive:{}", out.display()), &[]),
        digest
    );
    docker(&["load", "-i", &out.to_string_lossy()]);
    assert_eq!(
        docker(&["run", "--rm", &tag]),
        "index.html\n<p>from a layout</p>\n2\n"
    );
    let _ = docker(&["rmi", "-f", &tag]);
}

/// `docker save`-free multi-platform bases: an OCI layout holding an index
/// of linux/amd64 and linux/arm64/v8, as a build context and, copied into a
/// real registry with skopeo, as a registry base; the platform asked for is
/// the one built on.
#[test]
fn multi_platform_bases_give_the_platform_asked_for() {
    if !daemon_and(&["docker-registry", "skopeo"]) {
        return;
    }
    let (p, plugins) = project();
    let layout = p.root().join("layout");
    crate::registry::two_platform_layout(&layout);
    let registry = TestRegistry::start(None);
    let host = registry.host();
    let copy = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{host}/team/multi:1"))
        .output()
        .expect("skopeo copy");
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let c = p.work().join("app");
    write(&c, "a", "x");
    let config_of = |archive: &Path| -> Value {
        let mut tar = tar::Archive::new(fs::File::open(archive).expect("archive"));
        let mut files = std::collections::BTreeMap::new();
        for entry in tar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
            files.insert(name, data);
        }
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest");
        let config = manifest[0]["Config"].as_str().expect("config");
        serde_json::from_slice(&files[config]).expect("config json")
    };
    let layout_ctx = format!("base=oci-layout://{}:1", layout.display());
    for (from, extra) in [
        (
            "FROM base\nCOPY a /a\n",
            vec!["--build-context", layout_ctx.as_str()],
        ),
        (&*format!("FROM {host}/team/multi:1\nCOPY a /a\n"), vec![]),
    ] {
        write(&c, "Dockerfile", from);
        for (platform, arch) in [("linux/arm64", "arm64"), ("linux/amd64", "amd64")] {
            let out = p.root().join(format!("{arch}.tar"));
            let dest = format!("type=oci,dest={}", out.display());
            let base = [
                "--plugins-dir",
                plugins.as_str(),
                "build",
                "app",
                "-t",
                "multi:1",
                "--platform",
                platform,
                "--output",
                dest.as_str(),
            ];
            p.kiln(&[&base[..], &extra[..]].concat()).ok();
            let config = config_of(&out);
            assert_eq!(config["architecture"], arch, "{from} {platform}");
            if arch == "arm64" {
                assert_eq!(config["variant"], "v8", "the base's variant stays");
            }
            assert_eq!(
                config["rootfs"]["diff_ids"].as_array().map(Vec::len),
                Some(2)
            );
        }
        let base = [
            "--plugins-dir",
            plugins.as_str(),
            "build",
            "app",
            "-t",
            "multi:1",
            "--platform",
            "linux/s390x",
            "--output",
            "type=oci,dest=never.tar",
        ];
        let r = p.kiln(&[&base[..], &extra[..]].concat());
        r.code(2);
        assert!(
            r.stderr.contains("no image for linux/s390x") && r.stderr.contains("linux/arm64/v8"),
            "{}",
            r.stderr
        );
        assert!(!p.work().join("never.tar").exists());
    }
}

/// A token service for registry token auth (Bearer): it checks Basic
/// credentials and answers a JWT signed RS256 with `openssl`, its
/// certificate in the `x5c` header, granting the scopes asked for.
struct TokenService {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    dir: tempfile::TempDir,
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenService {
    fn start(user: &'static str, password: &'static str) -> TokenService {
        use base64::Engine;
        use std::io::{BufRead, BufReader, Write};
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kiln-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl req");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl x509");
        let x5c = base64::engine::general_purpose::STANDARD.encode(der.stdout);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().take(200) {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut authorized = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") && v.trim() == want {
                            authorized = true;
                        }
                    }
                }
                if !authorized {
                    let _ = stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let query = request_line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|t| t.split_once('?'))
                    .map(|(_, q)| q.to_string())
                    .unwrap_or_default();
                let access: Vec<Value> = query
                    .split('&')
                    .filter_map(|kv| kv.strip_prefix("scope="))
                    .map(|s| {
                        s.replace("%3A", ":")
                            .replace("%2C", ",")
                            .replace("%2F", "/")
                    })
                    .filter_map(|scope| {
                        let mut parts = scope.splitn(3, ':');
                        let kind = parts.next()?.to_string();
                        let name = parts.next()?.to_string();
                        let actions: Vec<String> =
                            parts.next()?.split(',').map(str::to_string).collect();
                        Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": "kiln-test-issuer", "sub": user, "aud": "kiln-test",
                    "exp": now + 600, "nbf": now - 60, "iat": now - 60,
                    "jti": format!("{now}-{}", counter.load(std::sync::atomic::Ordering::SeqCst)),
                    "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut sign = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("openssl dgst");
                sign.stdin
                    .take()
                    .expect("stdin")
                    .write_all(signing_input.as_bytes())
                    .expect("sign input");
                let signature = sign.wait_with_output().expect("signature").stdout;
                let token = format!("{signing_input}.{}", b64url(&signature));
                let body = serde_json::json!({"token": token, "expires_in": 600}).to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenService {
            port,
            requests,
            dir,
        }
    }

    /// The registry's `auth:` section for this service.
    fn registry_auth(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: kiln-test\n    issuer: kiln-test-issuer\n    rootcertbundle: {}\n",
            self.port,
            self.dir.path().join("cert.pem").display()
        )
    }
}

#[test]
fn pushes_and_pulls_with_bearer_token_auth() {
    if !daemon_and(&["docker-registry", "skopeo", "openssl"]) {
        return;
    }
    let (p, plugins) = project();
    let tokens = TokenService::start("ci", "t0ken-pw");
    let registry = TestRegistry::start_token(&tokens.registry_auth());
    let host = registry.host();
    let uri = format!("uri={host}/team");
    let add = |name: &str, password: &str| {
        register(
            &p,
            &plugins,
            name,
            &[&uri, "username=ci", &format!("password={password}")],
        );
    };
    add("reg", "t0ken-pw");
    add("wrong", "not-it");
    busybox_context(&p.work().join("base"));
    let base_tag = format!("{host}/team/base:1");
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "base",
        "-t",
        &base_tag,
        "--registry",
        "reg",
        "--json",
    ]);
    r.ok();
    let pushed = r.json()["pushed"].as_str().expect("pushed").to_string();
    assert!(
        tokens.requests.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "tokens were asked for"
    );
    let (_, digest) = pushed.split_once('@').expect("repo@digest");
    assert_eq!(
        skopeo_digest(&format!("docker://{base_tag}"), &["--creds", "ci:t0ken-pw"]),
        digest
    );
    // FROM the token-protected registry, pushed to another repository there.
    let c = p.work().join("app");
    write(
        &c,
        "Dockerfile",
        &format!("FROM {base_tag}\nCOPY a /a\nCMD [\"cat\", \"/a\"]\n"),
    );
    write(&c, "a", "through bearer tokens\n");
    let app_tag = format!("{host}/team/app:1");
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "app",
        "-t",
        &app_tag,
        "--registry",
        "reg",
        "--json",
    ]);
    r.ok();
    assert!(
        r.stderr.contains(&format!("pulling {base_tag}")),
        "{}",
        r.stderr
    );
    let skopeo = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            "ci:t0ken-pw",
            "--format",
            "{{len .Layers}}",
        ])
        .arg(format!("docker://{app_tag}"))
        .output()
        .expect("skopeo");
    assert_eq!(String::from_utf8_lossy(&skopeo.stdout).trim(), "2");
    // The registry really wants a token: without credentials it refuses.
    let anonymous = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{app_tag}"))
        .output()
        .expect("skopeo");
    assert!(!anonymous.status.success(), "anonymous access was allowed");
    // Refused credentials: an auth error (exit 7), the password nowhere.
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "app",
        "-t",
        &format!("{host}/team/other:1"),
        "--registry",
        "wrong",
        "--force",
    ]);
    r.code(7);
    assert!(!r.stderr.contains("not-it") && !r.stdout.contains("not-it"));
}

/// `FROM` an image the local Docker Engine has (the test machine's
/// `local/busybox:1`, made with `docker import`; nothing can be pulled
/// here): taken from the engine as Docker's builder does, loaded and run;
/// `--pull` asks the registry instead (a dead loopback port here, so no
/// test ever contacts a public registry).
#[test]
fn a_base_the_local_engine_has_is_used_unless_pull() {
    if !daemon_and(&[]) {
        return;
    }
    let (p, plugins) = project();
    let c = p.work().join("app");
    write(&c, "msg.txt", "copied onto the engine's busybox\n");
    write(
        &c,
        "Dockerfile",
        "FROM local/busybox:1\nCOPY msg.txt /srv/msg.txt\nWORKDIR /srv\n\
         CMD [\"sh\", \"-c\", \"cat msg.txt; pwd; ls /bin/busybox\"]\n",
    );
    let out = p.root().join("app.tar");
    let tag = format!("{}:1", unique("kiln-oci-engine"));
    let dest = format!("type=oci,dest={}", out.display());
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "app",
        "-t",
        &tag,
        "--output",
        &dest,
    ]);
    r.ok();
    assert!(
        r.stderr
            .contains("using local/busybox:1 from the Docker Engine"),
        "{}",
        r.stderr
    );
    docker(&["load", "-i", &out.to_string_lossy()]);
    assert_eq!(
        docker(&["run", "--rm", &tag]),
        "copied onto the engine's busybox\n/srv\n/bin/busybox\n"
    );
    let _ = docker(&["rmi", "-f", &tag]);
    // The same image under a registry name: the engine's copy without
    // --pull; with it, the registry, which is down.
    let alias = format!("127.0.0.1:1/kiln-test/{}:1", unique("busybox"));
    docker(&["tag", "local/busybox:1", &alias]);
    write(
        &c,
        "Dockerfile",
        &format!("FROM {alias}\nCOPY msg.txt /msg.txt\n"),
    );
    p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "app",
        "-t",
        "x:1",
        "--output",
        &dest,
    ])
    .ok();
    let r = p.kiln(&[
        "--plugins-dir",
        &plugins,
        "build",
        "app",
        "-t",
        "x:1",
        "--output",
        &dest,
        "--pull",
    ]);
    let _ = docker(&["rmi", &alias]);
    r.code(5);
    assert!(r.stderr.contains("127.0.0.1:1"), "{}", r.stderr);
}

/// The `sha256:...` of the image a build reports.
fn built_digest(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("built sha256:"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|hex| format!("sha256:{hex}"))
        .unwrap_or_else(|| panic!("no digest reported: {stderr}"))
}

#[test]
fn two_builds_at_once_share_the_cache_and_prune_keeps_it_in_bounds() {
    let (p, plugins) = project();
    let c = p.work().join("app");
    write(&c, "Dockerfile", "FROM scratch\nCOPY . /app\n");
    // 2 MiB that gzip cannot shrink, so the cache's size is plain to see.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..(2 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    fs::write(c.join("noise.bin"), &noise).expect("noise");
    write(&c, "a.txt", "a\n");
    let build = |out: &str| {
        p.command(&[
            "--plugins-dir",
            &plugins,
            "build",
            "app",
            "-t",
            "x:1",
            "--output",
            &format!("type=oci,dest={out}"),
        ])
    };
    // Two builds at once on one cache: both succeed with the same image.
    let children: Vec<_> = ["one.tar", "two.tar"]
        .iter()
        .map(|out| {
            build(out)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn kiln")
        })
        .collect();
    let digests: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{stderr}");
            built_digest(&stderr)
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    let cached = |p: &TestProject| {
        let out = build("three.tar").output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert_eq!(built_digest(&stderr), digests[0], "{stderr}");
        let _ = p;
        stderr.contains("1 of them from the cache")
    };
    assert!(cached(&p), "an unchanged rebuild did not reuse the layer");

    let du = |p: &TestProject| p.kiln(&["cache", "du", "--json"]).ok().json();
    let before = du(&p);
    let parts: Vec<&str> = before["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    // The layer of 2 MiB of noise, at least (the context archive is kept
    // too, unless its files are too fresh to vouch for).
    assert!(parts.contains(&"oci"), "{before}");
    assert!(
        before["bytes"].as_u64().expect("bytes") > 2 << 20,
        "{before}"
    );
    let text = p.kiln(&["cache", "du"]).ok().stdout.clone();
    assert!(text.contains("total") && text.contains("MiB"), "{text}");

    // Nothing is a day old: an age filter removes nothing.
    let none = p
        .kiln(&["cache", "prune", "--filter", "until=24h", "--json"])
        .ok()
        .json();
    assert_eq!(none["files"], 0, "{none}");
    // Kept to 1 MiB, least recently used first; the image is rebuilt the same.
    let capped = p
        .kiln(&["cache", "prune", "--keep-storage", "1MB", "--json"])
        .ok()
        .json();
    assert!(capped["files"].as_u64().expect("files") > 0, "{capped}");
    assert!(
        capped["kept"].as_u64().expect("kept") <= 1 << 20,
        "{capped}"
    );
    assert!(du(&p)["bytes"].as_u64().expect("bytes") <= 1 << 20);
    assert!(!cached(&p), "a pruned layer was still found");

    // KILN_CACHE_MAX applies after each build.
    let r = p.kiln_env(
        &[
            "--plugins-dir",
            &plugins,
            "build",
            "app",
            "-t",
            "x:1",
            "--no-cache",
            "--output",
            "type=oci,dest=four.tar",
        ],
        &[("KILN_CACHE_MAX", "512KB")],
    );
    r.ok();
    assert!(
        r.stderr.contains("cache over KILN_CACHE_MAX"),
        "{}",
        r.stderr
    );
    assert!(du(&p)["bytes"].as_u64().expect("bytes") <= 512 << 10);

    // Everything goes without options; bad options are usage errors.
    p.kiln(&["cache", "prune"]).ok();
    assert_eq!(du(&p)["bytes"], 0);
    p.kiln(&["cache", "prune", "--keep-storage", "ten"]).code(2);
    p.kiln(&["cache", "prune", "--filter", "age=1"]).code(2);
    let r = p.kiln_env(&["cache", "du"], &[("KILN_CACHE_MAX", "lots")]);
    r.code(2);
    assert!(r.stderr.contains("KILN_CACHE_MAX"), "{}", r.stderr);
    // `off` turns the cap (by default a tenth of the disk) off.
    p.kiln_env(&["cache", "du"], &[("KILN_CACHE_MAX", "off")])
        .ok();
}

/// A layer of tens of MiB reports its compression as it goes: a line as
/// it starts and one as it ends in plain progress, JSON with the bytes in
/// rawjson; small layers say nothing.
#[test]
fn a_large_layer_reports_its_compression() {
    let (p, plugins) = project();
    let c = p.work().join("big");
    fs::create_dir_all(&c).expect("mkdir");
    // 40 MiB that gzip cannot shrink much (xorshift).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..(40usize << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    fs::write(c.join("weights.bin"), &data).expect("big file");
    write(&c, "small.txt", "small\n");
    write(
        &c,
        "Dockerfile",
        "FROM scratch\nCOPY small.txt /\nCOPY weights.bin /model/\n",
    );
    let build = |progress: &str| {
        let r = p
            .cmd()
            .plugins(&plugins)
            .build("big")
            .tag("big:1")
            .args(["--no-cache", "--progress", progress])
            .output(p.root().join("big.tar"))
            .run();
        r.ok();
        r
    };
    let plain = build("plain");
    let lines: Vec<&str> = plain
        .stderr
        .lines()
        .filter(|l| l.starts_with("compressing line "))
        .collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("compressing line 3: "))
            && lines
                .last()
                .is_some_and(|l| l.starts_with("compressing line 3: 4") && l.ends_with(" done")),
        "{}",
        plain.stderr
    );
    assert!(
        !plain.stderr.contains("compressing line 2"),
        "{}",
        plain.stderr
    );
    let json = build("rawjson");
    let reports: Vec<Value> = json
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "progress" && v["message"] == "compressing line 3")
        .collect();
    let last = reports.last().expect("a compression report");
    let total = last["total"].as_u64().expect("total");
    // The whole tar: the file, its headers and the folder's.
    assert!(
        total > 40 << 20 && total < (40 << 20) + 8192,
        "{}",
        json.stderr
    );
    assert_eq!(last["current"], last["total"], "{}", json.stderr);
}

/// `tar tv` of an archive, by GNU tar (an independent reader): one line per
/// entry, `MODE OWNER NAME[ -> TARGET]`.
fn tar_listing(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(archive)
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // mode owner size date time name [-> target]
            format!("{} {} {}", f[0], f[1], f[5..].join(" "))
        })
        .collect()
}

#[test]
fn filesystem_outputs_write_the_image_files_as_buildx_local_and_tar_do() {
    let (p, plugins) = project();
    let c = p.work().join("app");
    write(&c, "a", "alpha\n");
    write(&c, "d/sub/f", "deep\n");
    write(&c, "tool", "#!/bin/sh\n");
    fs::set_permissions(c.join("tool"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    write(
        &c,
        "Dockerfile",
        "FROM scratch AS base\nCOPY a /a\nCOPY a /again\n\
         FROM base\nCOPY d/ /d/\nCOPY --chown=7:8 tool /bin/tool\nENV PATH=/bin\n",
    );
    symlink("sub/f", c.join("d/ln")).expect("symlink");
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "--plugins-dir",
            plugins.as_str(),
            "build",
            "app",
            "-t",
            "fs:1",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let kiln = |p: &TestProject, extra: &[&'static str]| {
        let args = args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        p.command(&args).output().expect("kiln")
    };
    let build = |p: &TestProject, output: &'static str| {
        let args = args(&["-o", output]);
        p.kiln(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // A folder: the image's files, set-id bits dropped, nothing else left.
    build(&p, "type=local,dest=out/rootfs").ok();
    let root = p.work().join("out/rootfs");
    assert_eq!(fs::read_to_string(root.join("a")).expect("a"), "alpha\n");
    assert_eq!(
        fs::read_to_string(root.join("d/sub/f")).expect("f"),
        "deep\n"
    );
    assert_eq!(
        fs::read_link(root.join("d/ln")).expect("link"),
        PathBuf::from("sub/f")
    );
    let mode = fs::metadata(root.join("bin/tool"))
        .expect("tool")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "set-uid dropped in a folder");
    let names: Vec<_> = fs::read_dir(p.work().join("out"))
        .expect("out")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["rootfs"], "nothing but the folder");
    // Never among other files: a folder that is not empty is refused and kept.
    let r = build(&p, "type=local,dest=out/rootfs");
    r.code(2);
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);
    assert_eq!(fs::read_to_string(root.join("a")).expect("a"), "alpha\n");
    // type=local has no standard output.
    build(&p, "type=local,dest=-").code(2);

    // A tar: the same files with their modes and owners (set-uid kept).
    build(&p, "type=tar,dest=fs.tar").ok();
    let listing = tar_listing(&p.work().join("fs.tar"));
    for want in [
        "-rw-r--r-- 0/0 a",
        "-rwsr-xr-x 7/8 bin/tool",
        "lrwxrwxrwx 0/0 d/ln -> sub/f",
        "-rw-r--r-- 0/0 d/sub/f",
        "-rw-r--r-- 0/0 again",
    ] {
        assert!(listing.iter().any(|l| l == want), "{want} in {listing:#?}");
    }
    // As a file `docker save -o` makes: 0666 less the umask.
    let mode = fs::metadata(p.work().join("fs.tar"))
        .expect("tar")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, kiln_archive::atomic::created_mode(0o666));
    // To standard output: the very same bytes (reproducible).
    let out = kiln(&p, &["-o", "type=tar,dest=-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, fs::read(p.work().join("fs.tar")).expect("read"));

    // Several platforms: one folder each, named as buildx names them.
    let out = kiln(
        &p,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            "type=local,dest=platforms",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for platform in ["linux_amd64", "linux_arm64"] {
        let a = p.work().join("platforms").join(platform).join("a");
        assert_eq!(fs::read_to_string(&a).expect("a"), "alpha\n", "{platform}");
    }
    // The Docker Engine builder writes no filesystem.
    let out = kiln(
        &p,
        &["--builder-flavor", "local", "-o", "type=tar,dest=x.tar"],
    );
    assert!(!out.status.success());
    assert!(!p.work().join("x.tar").exists());
}
