//! Where plugins are looked for, in order of precedence:
//!
//! 1. each `--plugins-dir DIR`, in the order given;
//! 2. each folder in `KILN_PLUGINS_DIR` (a path list, `:`-separated on Unix);
//! 3. the project's `.kiln/plugins/`, when trusted ([`super::trust`]);
//! 4. the user's plugins folder, `<data dir>/kiln/plugins` (on Linux
//!    `$XDG_DATA_HOME/kiln/plugins`, else `~/.local/share/kiln/plugins`),
//!    where `kiln plugin install` copies to;
//! 5. the plugins installed with kiln itself, `<prefix>/lib/kiln/plugins`
//!    beside `<prefix>/bin/kiln` (a pip-installed kiln's venv, a package).
//!
//! Every folder is searched. When two plugins offer the same flavor, the one
//! found first wins and the other is reported as a problem.

use std::{
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
};

use crate::state::Project;

/// Why a folder is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrigin {
    /// `--plugins-dir`.
    Flag,
    /// `KILN_PLUGINS_DIR`.
    Env,
    /// The project's `.kiln/plugins`.
    Project,
    /// The user's data folder.
    User,
    /// Installed with kiln (`<prefix>/lib/kiln/plugins`).
    Bundled,
}

impl fmt::Display for SearchOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SearchOrigin::Flag => "--plugins-dir",
            SearchOrigin::Env => "KILN_PLUGINS_DIR",
            SearchOrigin::Project => "project",
            SearchOrigin::User => "user",
            SearchOrigin::Bundled => "installed with kiln",
        })
    }
}

/// One folder to search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDir {
    /// The folder.
    pub path: PathBuf,
    /// Why it is searched.
    pub origin: SearchOrigin,
    /// Why it is not searched after all (a project folder that is not
    /// trusted, see [`super::trust`]).
    pub refused: Option<String>,
}

impl PluginDir {
    /// Folders named explicitly must exist; the default ones need not.
    pub fn must_exist(&self) -> bool {
        matches!(self.origin, SearchOrigin::Flag | SearchOrigin::Env)
    }
}

/// The user's plugins folder, where `kiln plugin install` copies to.
pub fn user_plugins_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("kiln").join("plugins"))
}

/// The plugins installed with the kiln binary at `exe`:
/// `<prefix>/lib/kiln/plugins` for `<prefix>/bin/kiln`.
pub fn bundled_plugins_dir(exe: &Path) -> Option<PathBuf> {
    let prefix = exe.parent()?.parent()?;
    Some(prefix.join("lib").join("kiln").join("plugins"))
}

/// The folders to search, in precedence order.
pub fn search_dirs(
    flags: &[PathBuf],
    env: Option<OsString>,
    project: Option<&Project>,
    user: Option<PathBuf>,
    bundled: Option<PathBuf>,
) -> Vec<PluginDir> {
    let trust_store = super::trust::store_path(user.as_deref());
    let mut out: Vec<PluginDir> = flags
        .iter()
        .map(|p| PluginDir {
            path: p.clone(),
            origin: SearchOrigin::Flag,
            refused: None,
        })
        .collect();
    if let Some(env) = env {
        out.extend(
            std::env::split_paths(&env)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|path| PluginDir {
                    path,
                    origin: SearchOrigin::Env,
                    refused: None,
                }),
        );
    }
    if let Some(p) = project {
        let path = p.plugins_dir();
        out.push(PluginDir {
            refused: super::trust::refusal(trust_store.as_deref(), &path),
            path,
            origin: SearchOrigin::Project,
        });
    }
    if let Some(path) = user {
        out.push(PluginDir {
            path,
            origin: SearchOrigin::User,
            refused: None,
        });
    }
    if let Some(path) = bundled {
        out.push(PluginDir {
            path,
            origin: SearchOrigin::Bundled,
            refused: None,
        });
    }
    out
}

/// Whether `path` has this platform's dynamic-library extension.
pub fn is_library_name(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_flags_env_project_user_bundled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (project, _) = Project::init(dir.path()).expect("init");
        let env = std::env::join_paths(["/e1", "/e2"]).expect("join");
        let dirs = search_dirs(
            &[PathBuf::from("/f1"), PathBuf::from("/f2")],
            Some(env),
            Some(&project),
            Some(PathBuf::from("/user")),
            bundled_plugins_dir(Path::new("/venv/bin/kiln")),
        );
        let got: Vec<_> = dirs.iter().map(|d| (d.path.clone(), d.origin)).collect();
        assert_eq!(
            got,
            vec![
                (PathBuf::from("/f1"), SearchOrigin::Flag),
                (PathBuf::from("/f2"), SearchOrigin::Flag),
                (PathBuf::from("/e1"), SearchOrigin::Env),
                (PathBuf::from("/e2"), SearchOrigin::Env),
                (project.plugins_dir(), SearchOrigin::Project),
                (PathBuf::from("/user"), SearchOrigin::User),
                (
                    PathBuf::from("/venv/lib/kiln/plugins"),
                    SearchOrigin::Bundled
                ),
            ]
        );
    }

    #[test]
    fn library_extension() {
        let ext = std::env::consts::DLL_EXTENSION;
        assert!(is_library_name(Path::new(&format!("a/libx.{ext}"))));
        assert!(!is_library_name(Path::new("a/libx.txt")));
        assert!(!is_library_name(Path::new("a/so")));
    }
}
