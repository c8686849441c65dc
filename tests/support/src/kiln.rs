//! A `kiln` command built up by name instead of an argument vector
//! (ripgrep's `TestCommand`, cargo's `ProcessBuilder`):
//! `p.cmd().plugins(&dir).build("app").tag("x:1").output("out.tar").json().run()`.

use std::{ffi::OsString, path::Path, process::Stdio};

use crate::project::{Run, TestProject};

/// One `kiln` invocation in a [`TestProject`].
#[derive(Debug)]
pub struct KilnCmd<'p> {
    project: &'p TestProject,
    globals: Vec<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl<'p> KilnCmd<'p> {
    pub(crate) fn new(project: &'p TestProject) -> Self {
        Self {
            project,
            globals: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `--plugins-dir DIR` (before the subcommand).
    pub fn plugins(mut self, dir: impl AsRef<Path>) -> Self {
        self.globals.push("--plugins-dir".into());
        self.globals.push(dir.as_ref().into());
        self
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `build DIR`.
    pub fn build(self, dir: impl Into<OsString>) -> Self {
        self.arg("build").arg(dir)
    }

    /// `component register NAME --type TYPE --flavor FLAVOR --set ...`.
    pub fn register(self, name: &str, component_type: &str, flavor: &str, sets: &[&str]) -> Self {
        let cmd = self
            .args(["component", "register", name, "--type", component_type])
            .args(["--flavor", flavor]);
        sets.iter().fold(cmd, |cmd, set| cmd.arg("--set").arg(*set))
    }

    /// `push IMAGE --registry COMPONENT`.
    pub fn push(self, image: &str, registry: &str) -> Self {
        self.arg("push").arg(image).registry(registry)
    }

    /// `-t NAME`.
    pub fn tag(self, name: &str) -> Self {
        self.arg("-t").arg(name)
    }

    /// `--output type=oci,dest=DEST`.
    pub fn output(self, dest: impl AsRef<Path>) -> Self {
        let mut spec = OsString::from("type=oci,dest=");
        spec.push(dest.as_ref());
        self.arg("--output").arg(spec)
    }

    /// `--registry COMPONENT`.
    pub fn registry(self, component: &str) -> Self {
        self.arg("--registry").arg(component)
    }

    /// `--builder-flavor FLAVOR`.
    pub fn builder_flavor(self, flavor: &str) -> Self {
        self.arg("--builder-flavor").arg(flavor)
    }

    /// `--builder-config JSON`.
    pub fn builder_config(self, json: &str) -> Self {
        self.arg("--builder-config").arg(json)
    }

    /// `--build-arg KEY=VALUE`.
    pub fn build_arg(self, pair: &str) -> Self {
        self.arg("--build-arg").arg(pair)
    }

    /// `--dry-run`.
    pub fn dry_run(self) -> Self {
        self.arg("--dry-run")
    }

    /// `--json`.
    pub fn json(self) -> Self {
        self.arg("--json")
    }

    /// An environment variable for this run.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Run it to the end.
    pub fn run(self) -> Run {
        let mut cmd = self.project.command(&[]);
        cmd.args(&self.globals)
            .args(&self.args)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run kiln"))
    }
}
