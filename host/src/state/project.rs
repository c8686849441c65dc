//! Finding and creating the project folder `.kiln/`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// The name of the project folder.
pub const KILN_DIR: &str = ".kiln";

/// A kiln project: a folder holding `.kiln/`.
#[derive(Debug, Clone)]
pub struct Project {
    root: PathBuf,
}

impl Project {
    /// Find the project by walking up from `start`, like git. A `.kiln`
    /// owned by another user (a parent folder someone else controls) is
    /// passed over with a warning, as git refuses a repository of dubious
    /// ownership: its state and plugins are not this user's.
    pub fn discover(start: &Path) -> Option<Project> {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        start
            .ancestors()
            .filter(|dir| dir.join(KILN_DIR).is_dir())
            .find(|dir| {
                let owner = fs::metadata(dir.join(KILN_DIR))
                    .map(|m| m.uid())
                    .unwrap_or(me);
                if owner != me {
                    crate::output::warn(&format!(
                        "ignoring the kiln project in {}: its .kiln is owned by user id \
                         {owner}, not by you ({me})",
                        dir.display()
                    ));
                }
                owner == me
            })
            .map(|root| Project {
                root: root.to_path_buf(),
            })
    }

    /// The project rooted exactly at `root` (for `--project DIR`).
    pub fn at(root: &Path) -> Result<Project> {
        if root.join(KILN_DIR).is_dir() {
            Ok(Project {
                root: root.to_path_buf(),
            })
        } else {
            Err(Error::NoProject {
                start: root.to_path_buf(),
            })
        }
    }

    /// Create `.kiln/` (and `.kiln/plugins/`) in `root`. Idempotent; returns
    /// whether it was newly created.
    pub fn init(root: &Path) -> Result<(Project, bool)> {
        let dir = root.join(KILN_DIR);
        let existed = dir.is_dir();
        fs::create_dir_all(dir.join("plugins")).map_err(|e| Error::io("creating", &dir, e))?;
        let gitignore = dir.join(".gitignore");
        if !gitignore.exists() {
            // Literal secrets, the lock and half-written copies never belong
            // in version control.
            super::write_atomic(
                &gitignore,
                b"secrets.json\nstate.lock\n.kiln-tmp-*\n",
                0o644,
            )?;
        }
        Ok((
            Project {
                root: root.to_path_buf(),
            },
            !existed,
        ))
    }

    /// The folder holding `.kiln/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `.kiln/` itself.
    pub fn dir(&self) -> PathBuf {
        self.root.join(KILN_DIR)
    }

    /// The project's own plugins folder.
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir().join("plugins")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_from_a_nested_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (p, created) = Project::init(dir.path()).expect("init");
        assert!(created);
        let nested = dir.path().join("a/b/c");
        fs::create_dir_all(&nested).expect("mkdir");
        let found = Project::discover(&nested).expect("found");
        assert_eq!(found.root(), p.root());
        let (_, created_again) = Project::init(dir.path()).expect("init again");
        assert!(!created_again);
    }

    #[test]
    fn explicit_project_without_kiln_dir_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Project::at(dir.path()).expect_err("no project");
        assert!(err.to_string().contains("no kiln project"), "{err}");
    }
}
