//! The command layer: turns parsed arguments into calls on the library and
//! results on stdout. `main` only parses and maps the outcome to an exit code.

mod args;
mod build;
mod chosen;
mod component;
mod context;
mod flavor;
mod plugin;

use std::{ffi::OsString, path::PathBuf};

pub use args::Cli;
use args::Command;

use crate::{
    error::{exit, Error, Result},
    plugins::{search_dirs, Catalog, PluginDir},
    state::Project,
};

/// What the process environment contributes, gathered once so the command
/// layer can be driven from tests without touching the real environment.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The working directory.
    pub cwd: PathBuf,
    /// `KILN_PLUGINS_DIR`.
    pub plugins_env: Option<OsString>,
    /// The user's plugins folder.
    pub user_plugins_dir: Option<PathBuf>,
}

impl Environment {
    /// Read the real process environment.
    pub fn from_process() -> Result<Self> {
        let cwd = std::env::current_dir()
            .map_err(|e| Error::io("reading", "the working directory", e))?;
        Ok(Self {
            cwd,
            plugins_env: std::env::var_os("KILN_PLUGINS_DIR"),
            user_plugins_dir: crate::plugins::user_plugins_dir(),
        })
    }
}

/// Settings shared by every command, validated from the raw flags.
pub(crate) struct Session<'a> {
    cli_plugins_dirs: &'a [PathBuf],
    project_flag: Option<PathBuf>,
    env: &'a Environment,
}

impl Session<'_> {
    /// The project, found like git finds a repository, or named by `--project`.
    pub(crate) fn project(&self) -> Option<Project> {
        self.require_project().ok()
    }

    /// The project, or an error telling how to make one.
    pub(crate) fn require_project(&self) -> Result<Project> {
        match &self.project_flag {
            Some(dir) => Project::at(dir),
            None => Project::discover(&self.env.cwd).ok_or_else(|| Error::NoProject {
                start: self.env.cwd.clone(),
            }),
        }
    }

    pub(crate) fn plugin_dirs(&self) -> Vec<PluginDir> {
        let project = self.project();
        let flags: Vec<PathBuf> = self
            .cli_plugins_dirs
            .iter()
            .map(|p| self.env.cwd.join(p))
            .collect();
        search_dirs(
            &flags,
            self.env.plugins_env.clone(),
            project.as_ref(),
            self.env.user_plugins_dir.clone(),
        )
    }

    /// Load every plugin in the search folders (describe stage only).
    pub(crate) fn catalog(&self) -> Catalog {
        let dirs = self.plugin_dirs();
        let catalog = Catalog::discover(&dirs);
        tracing::debug!(
            plugins = catalog.plugins_loaded,
            flavors = catalog.flavors.len(),
            problems = catalog.problems.len(),
            "plugins loaded"
        );
        catalog
    }
}

/// Run a parsed command line. Returns the exit code for success paths that
/// still report failure (`plugin check` with bad files); errors carry theirs.
pub fn run(cli: Cli, env: &Environment) -> Result<i32> {
    let project_flag = cli.project.as_ref().map(|p| env.cwd.join(p));
    let session = Session {
        cli_plugins_dirs: &cli.plugins_dirs,
        project_flag,
        env,
    };
    match cli.command {
        Command::Flavor(cmd) => flavor::run(&session, cmd),
        Command::Plugin(cmd) => plugin::run(&session, cmd),
        Command::Component(cmd) => component::run(&session, cmd),
        Command::Context(cmd) => context::run(&session, cmd),
        Command::Build(args) => build::run(&session, args),
        Command::Push {
            image,
            registry,
            json,
        } => build::push(&session, &image, &registry, json),
        Command::Init => {
            let root = session
                .project_flag
                .clone()
                .unwrap_or_else(|| env.cwd.clone());
            let (project, created) = Project::init(&root)?;
            let dir = project.dir();
            if created {
                crate::output::result(&format!("initialised kiln project in {}", dir.display()));
            } else {
                crate::output::result(&format!("{} is already a kiln project", dir.display()));
            }
            Ok(exit::OK)
        }
    }
}
