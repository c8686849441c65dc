//! A throw-away project in which the real `kiln` binary runs with an
//! isolated environment, and what one run gave.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

use crate::{fixtures::fixture, kiln::KilnCmd};

/// The `kiln` binary cargo built for these tests (`target/<profile>/kiln`).
pub fn kiln_exe() -> PathBuf {
    let exe = crate::fixtures::profile_dir().join(format!("kiln{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.is_file(),
        "{} is not built: run the host's integration tests (cargo test -p kiln), which build it",
        exe.display()
    );
    exe
}

/// The outcome of one `kiln` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub(crate) fn from(out: Output) -> Run {
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
#[derive(Debug)]
pub struct TestProject {
    dir: tempfile::TempDir,
}

impl Default for TestProject {
    fn default() -> Self {
        Self::new()
    }
}

impl TestProject {
    /// A new folder with `home/`, `data/`, `work/` and `plugins/`.
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
        self.command_of(&kiln_exe(), args)
    }

    /// Run the kiln binary at `exe` (an installed copy) as [`Self::kiln`]
    /// runs cargo's.
    pub fn kiln_at(&self, exe: &Path, args: &[&str]) -> Run {
        Run::from(self.command_of(exe, args).output().expect("run kiln"))
    }

    fn command_of(&self, exe: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(exe);
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

    /// A `kiln` command to build up (`.build("app").tag("x:1").json().run()`).
    pub fn cmd(&self) -> KilnCmd<'_> {
        KilnCmd::new(self)
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
