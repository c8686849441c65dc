//! What every command shares: the process environment, read once, and the
//! session settings (plugin folders, project) derived from the global flags.

use std::{ffi::OsString, path::PathBuf};

use crate::{
    error::{Error, Result},
    plugins::{search_dirs, Catalog, PluginDir},
    state::Project,
};

/// What the process environment contributes, gathered once so the library
/// can be driven from tests without touching the real environment. This is
/// the one place kiln's host reads environment variables.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The working directory.
    pub cwd: PathBuf,
    /// `KILN_PLUGINS_DIR`.
    pub plugins_env: Option<OsString>,
    /// The user's plugins folder.
    pub user_plugins_dir: Option<PathBuf>,
    /// The plugins installed with this kiln binary.
    pub bundled_plugins_dir: Option<PathBuf>,
    /// `KILN_PLUGIN_TIMEOUT` (seconds): how long a plugin's build or push
    /// may run in its worker before kiln ends it. None: no limit.
    pub plugin_timeout: Option<std::time::Duration>,
    /// `KILN_PLUGIN_LOAD_TIMEOUT` (seconds, default 10): how long opening a
    /// plugin library may take (its constructors run) before kiln reports
    /// it and exits 3.
    pub plugin_load_timeout: std::time::Duration,
    /// `KILN_LOCK_TIMEOUT` (seconds, default 60): how long a change of the
    /// project's components waits for another kiln's state lock.
    pub lock_timeout: std::time::Duration,
    /// kiln's cache folder: `$KILN_CACHE_DIR`, else the user's cache folder
    /// (`~/.cache/kiln`), else one in the temp dir. The host keeps build
    /// contexts in `contexts/`; the `oci` builder its own in `oci/`.
    pub cache_dir: PathBuf,
    /// `KILN_PLUGIN_CACHE_RACY_MS` (default 2000): a plugin file changed
    /// more recently than this is not kept in the descriptor cache.
    pub plugin_cache_racy: std::time::Duration,
    /// `KILN_CACHE_MAX`: a size (`10GB`), `Some(None)` for `off` (no cap),
    /// `None` when unset (the default cap, [`Environment::cache_cap`]).
    pub cache_max: Option<Option<u64>>,
}

impl Environment {
    /// What the cache is pruned to after each build, least recently used
    /// first: `KILN_CACHE_MAX`, else a tenth of its disk
    /// ([`crate::cache::default_cap`], asked only here: only a build needs
    /// it).
    pub fn cache_cap(&self) -> Option<crate::cache::Cap> {
        match self.cache_max {
            Some(set) => set.map(|bytes| crate::cache::Cap {
                bytes,
                from_env: true,
            }),
            None => crate::cache::default_cap(&self.cache_dir).map(|bytes| crate::cache::Cap {
                bytes,
                from_env: false,
            }),
        }
    }

    /// Read the real process environment.
    #[allow(clippy::disallowed_methods)] // the one home of env lookups
    pub fn from_process() -> Result<Self> {
        let cwd = std::env::current_dir()
            .map_err(|e| Error::io("reading", "the working directory", e))?;
        let seconds = |name: &str| match std::env::var(name) {
            Ok(text) if !text.trim().is_empty() => match text.trim().parse::<u64>() {
                Ok(secs) if secs > 0 => Ok(Some(std::time::Duration::from_secs(secs))),
                _ => Err(Error::BadArgument(format!(
                    "{name}={text:?}: expected a whole number of seconds above 0"
                ))),
            },
            _ => Ok(None),
        };
        let plugin_timeout = seconds("KILN_PLUGIN_TIMEOUT")?;
        let plugin_load_timeout =
            seconds("KILN_PLUGIN_LOAD_TIMEOUT")?.unwrap_or(std::time::Duration::from_secs(10));
        let lock_timeout =
            seconds("KILN_LOCK_TIMEOUT")?.unwrap_or(std::time::Duration::from_secs(60));
        let plugin_cache_racy = match std::env::var("KILN_PLUGIN_CACHE_RACY_MS") {
            Ok(text) if !text.trim().is_empty() => std::time::Duration::from_millis(
                text.trim().parse::<u64>().map_err(|_| {
                    Error::BadArgument(format!(
                        "KILN_PLUGIN_CACHE_RACY_MS={text:?}: expected a whole number of milliseconds"
                    ))
                })?,
            ),
            _ => std::time::Duration::from_secs(2),
        };
        let cache_max = match std::env::var("KILN_CACHE_MAX") {
            Ok(text) if text.trim().eq_ignore_ascii_case("off") => Some(None),
            Ok(text) if !text.trim().is_empty() => {
                Some(Some(crate::cache::parse_size(&text).map_err(|e| {
                    Error::BadArgument(format!("KILN_CACHE_MAX: {e}"))
                })?))
            }
            _ => None,
        };
        let cache_dir = match std::env::var_os("KILN_CACHE_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => dirs::cache_dir()
                .unwrap_or_else(std::env::temp_dir)
                .join("kiln"),
        };
        Ok(Self {
            cwd,
            plugins_env: std::env::var_os("KILN_PLUGINS_DIR"),
            user_plugins_dir: crate::plugins::user_plugins_dir(),
            bundled_plugins_dir: std::env::current_exe()
                .ok()
                .and_then(|exe| crate::plugins::bundled_plugins_dir(&exe)),
            plugin_timeout,
            plugin_load_timeout,
            lock_timeout,
            cache_max,
            cache_dir,
            plugin_cache_racy,
        })
    }

    /// The variable `name`, for `${env:NAME}` secret references. Read when
    /// asked, so a secret is held only as long as its caller needs it.
    #[allow(clippy::disallowed_methods)] // the one home of env lookups
    pub fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Settings shared by every command, validated from the raw flags.
#[derive(Debug)]
pub struct Session<'a> {
    cli_plugins_dirs: &'a [PathBuf],
    project_flag: Option<PathBuf>,
    /// The process environment.
    pub env: &'a Environment,
}

impl<'a> Session<'a> {
    /// A session over `--plugins-dir` folders and `--project` (relative to
    /// the working directory).
    pub fn new(
        plugins_dirs: &'a [PathBuf],
        project: Option<&PathBuf>,
        env: &'a Environment,
    ) -> Self {
        crate::plugins::set_load_timeout(env.plugin_load_timeout);
        crate::plugins::set_descriptor_cache(&env.cache_dir.join("plugins"), env.plugin_cache_racy);
        crate::state::set_lock_timeout(env.lock_timeout);
        Self {
            cli_plugins_dirs: plugins_dirs,
            project_flag: project.map(|p| env.cwd.join(p)),
            env,
        }
    }

    /// `--project`, made absolute.
    pub fn project_flag(&self) -> Option<&PathBuf> {
        self.project_flag.as_ref()
    }

    /// The project, found like git finds a repository, or named by `--project`.
    pub fn project(&self) -> Option<Project> {
        self.require_project().ok()
    }

    /// The project, or an error telling how to make one.
    pub fn require_project(&self) -> Result<Project> {
        match &self.project_flag {
            Some(dir) => Project::at(dir),
            None => Project::discover(&self.env.cwd).ok_or_else(|| Error::NoProject {
                start: self.env.cwd.clone(),
            }),
        }
    }

    /// The plugin folders searched, in order.
    pub fn plugin_dirs(&self) -> Vec<PluginDir> {
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
            self.env.bundled_plugins_dir.clone(),
        )
    }

    /// Load every plugin in the search folders (describe stage only).
    pub fn catalog(&self) -> Catalog {
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
