//! Test helpers: building the fixture plugins, and a throw-away project in
//! which to run the real `kiln` binary with an isolated environment.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
};

use serde_json::Value;

/// Every fixture plugin, with the plugin-api feature it is built with.
const FIXTURES: &[(&str, Option<&str>)] = &[
    ("good", None),
    ("describe-panics", None),
    ("load-panics", None),
    ("constructor-aborts", None),
    ("duplicate", None),
    ("no-root-module", None),
    ("old-layout", Some("kiln-plugin-api/__fixture_layout_v0")),
    (
        "newer-layout",
        Some("kiln-plugin-api/__fixture_layout_next"),
    ),
    (
        "future-api",
        Some("kiln-plugin-api/__fixture_future_version"),
    ),
];

/// Plugins shipped in `plugins/` that the tests load, built with the fixtures.
const SHIPPED: &[&str] = &["kiln-docker", "kiln-registry", "kiln-oci"];

fn lib_file_name(crate_name: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// `cargo test` does not build the cdylibs the tests load, so the harness
/// does, once per test process, into the same target dir (no second copy of
/// the dependency graph). Builds that need a test-only plugin-api feature run
/// one at a time, and each result is copied out before the next build.
fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test exe path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target dir");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let out = target_dir.join("kiln-fixtures");
        fs::create_dir_all(&out).expect("create fixtures dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let mut groups: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
        for (name, feature) in FIXTURES {
            match groups.iter_mut().find(|(f, _)| f == feature && f.is_none()) {
                Some((_, names)) => names.push(name),
                None => groups.push((*feature, vec![name])),
            }
        }
        for (feature, names) in groups {
            let mut cmd = Command::new(&cargo);
            cmd.current_dir(workspace)
                .args(["build", "--quiet", "--target-dir"])
                .arg(target_dir);
            if release {
                cmd.arg("--release");
            }
            let mut packages: Vec<String> = names.iter().map(|n| format!("fixture-{n}")).collect();
            if feature.is_none() {
                packages.extend(SHIPPED.iter().map(|p| p.to_string()));
            }
            for p in &packages {
                cmd.args(["-p", p]);
            }
            if let Some(f) = feature {
                cmd.args(["--features", f]);
            }
            let status = cmd.status().expect("run cargo build for fixtures");
            assert!(status.success(), "building fixtures {names:?} failed");
            for package in packages {
                let file = lib_file_name(&package);
                fs::copy(profile_dir.join(&file), out.join(&file))
                    .unwrap_or_else(|e| panic!("copying fixture {file}: {e}"));
            }
        }
        out
    })
}

/// The built library of fixture `name` (`good`, `old-layout`, ...).
pub fn fixture(name: &str) -> PathBuf {
    let p = fixtures_dir().join(lib_file_name(&format!("fixture-{name}")));
    assert!(p.is_file(), "fixture {name} not built at {}", p.display());
    p
}

/// The built library of a plugin shipped in `plugins/` (`kiln-docker`).
pub fn shipped_plugin(package: &str) -> PathBuf {
    let p = fixtures_dir().join(lib_file_name(package));
    assert!(p.is_file(), "plugin {package} not built at {}", p.display());
    p
}

/// The outcome of one `kiln` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Assert the exit code, showing the output when it differs.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(
            self.code, expected,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Assert success.
    #[track_caller]
    pub fn ok(&self) -> &Run {
        self.code(0)
    }

    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Everything printed.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A temporary folder with its own HOME and data dir, and a `work/` folder
/// to run kiln in.
pub struct TestProject {
    dir: tempfile::TempDir,
}

impl TestProject {
    pub fn new() -> TestProject {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["home", "data", "work", "plugins"] {
            fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        TestProject { dir }
    }

    /// A new project with `kiln init` already run in `work/`.
    pub fn initialised() -> TestProject {
        let p = TestProject::new();
        p.kiln(&["init"]).ok();
        p
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The user's plugins folder kiln will use (`$XDG_DATA_HOME/kiln/plugins`).
    pub fn user_plugins(&self) -> PathBuf {
        self.dir.path().join("data/kiln/plugins")
    }

    /// Copy fixtures into `plugins/` and return that folder.
    pub fn plugins(&self, names: &[&str]) -> PathBuf {
        let dir = self.dir.path().join("plugins");
        for n in names {
            let src = fixture(n);
            fs::copy(&src, dir.join(src.file_name().expect("name"))).expect("copy fixture");
        }
        dir
    }

    /// Write a file under `work/`.
    pub fn file(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.work().join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&p, contents).expect("write");
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(args)
            .current_dir(self.work())
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_DATA_HOME", self.dir.path().join("data"))
            .env_remove("KILN_PLUGINS_DIR")
            .env_remove("KILN_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_LOG")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null());
        cmd
    }

    /// Run kiln in `work/`.
    pub fn kiln(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run kiln"))
    }

    /// Run kiln with extra environment variables.
    pub fn kiln_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run kiln"))
    }

    /// Run kiln with `stdin` as standard input.
    pub fn kiln_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        Run::from(child.wait_with_output().expect("wait kiln"))
    }
}

/// A real registry (Debian's `docker-registry`) on 127.0.0.1, started for
/// one test and stopped when dropped. With `auth`, it wants `user`/`password`
/// (htpasswd, bcrypt).
pub struct TestRegistry {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start(auth: Option<(&str, &str)>) -> TestRegistry {
        Self::start_with(auth, None)
    }

    /// A registry whose `auth:` section is `auth_yaml` (e.g. token auth).
    pub fn start_token(auth_yaml: &str) -> TestRegistry {
        Self::start_with(None, Some(auth_yaml))
    }

    fn start_with(auth: Option<(&str, &str)>, auth_yaml: Option<&str>) -> TestRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            fs::write(&file, out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln\n    path: {}\n",
                file.display()
            ));
        }
        if let Some(yaml) = auth_yaml {
            config.push_str(yaml);
        }
        let config_file = dir.path().join("config.yml");
        fs::write(&config_file, config).expect("write registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let registry = TestRegistry {
            port,
            child,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the Docker Engine answers and each of `tools` is on `PATH`.
/// Under `CI=true` anything missing fails the test; elsewhere the test says
/// what is missing and does not run.
#[allow(clippy::print_stderr)]
pub fn daemon_and(tools: &[&str]) -> bool {
    let runs = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let on_path = |tool: &str| {
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| {
                use std::os::unix::fs::PermissionsExt;
                fs::metadata(dir.join(tool))
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        })
    };
    let mut missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if !runs("docker", &["info"]) {
        missing.push("a Docker Engine");
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} required (CI=true); scripts/test.sh installs and starts them",
            missing.join(", ")
        );
    }
    eprintln!("{} missing: this test did not run", missing.join(", "));
    false
}
