//! Running `RUN`'s command without a daemon: an OCI runtime (`crun` or
//! `runc`, found on `PATH`) on a bundle kiln writes, as buildah does.
//!
//! - [`rootfs`]: a stage's filesystem written to a folder, read back after
//!   the command, and the difference as one layer's entries (additions,
//!   changes, deletions as whiteouts, opaque directories).
//! - [`overlay`]: the same as an overlay mount over layers unpacked once
//!   into the cache, where the kernel allows it (the command's changes are
//!   then the upper folder, read without a walk of the whole filesystem).
//! - [`spec`]: the bundle's `config.json` (Docker's default capabilities,
//!   namespaces, the usual mounts).
//! - [`Container`]: runs it, streams its output line by line, stops it on
//!   Ctrl-C, and removes the runtime's state and the bundle whatever happens.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

pub mod emulation;
pub mod overlay;
pub mod rootfs;
pub mod spec;

/// An OCI runtime binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Its path.
    pub path: PathBuf,
    /// `crun` or `runc` (or the file name given).
    pub name: String,
}

/// What to install when no runtime is found.
pub const INSTALL_HINT: &str =
    "install crun or runc (Debian and Ubuntu: `apt-get install crun`; Fedora: `dnf install crun`)";

impl Runtime {
    /// The runtime `choice` names: `auto` (runc, else crun, on `PATH`: runc
    /// also runs on hosts with hybrid cgroups, which crun 1.8 refuses), a
    /// name to find on `PATH`, or a path.
    pub fn find(choice: &str, path_var: Option<&std::ffi::OsStr>) -> Result<Runtime, String> {
        let names: Vec<&str> = match choice {
            "" | "auto" => vec!["runc", "crun"],
            other => vec![other],
        };
        for name in &names {
            if name.contains('/') {
                let p = PathBuf::from(name);
                if is_executable(&p) {
                    return Ok(Runtime {
                        name: file_name(&p),
                        path: p,
                    });
                }
                return Err(format!("the OCI runtime {name} is not an executable file"));
            }
            if let Some(dirs) = path_var {
                for dir in std::env::split_paths(dirs) {
                    let p = dir.join(name);
                    if is_executable(&p) {
                        return Ok(Runtime {
                            name: name.to_string(),
                            path: p,
                        });
                    }
                }
            }
        }
        Err(format!(
            "RUN needs an OCI runtime and none was found on PATH (looked for {}): {INSTALL_HINT}, \
             or set the builder's `runtime` to its path",
            names.join(", ")
        ))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status (0: success).
    Exited(i32),
    /// Ctrl-C: the container was killed.
    Cancelled,
}

/// A bundle folder (`config.json` and `rootfs/`) and the container run
/// from it. Dropping it deletes the runtime's state and the folder.
pub struct Container {
    runtime: Runtime,
    id: String,
    bundle: PathBuf,
}

impl Container {
    /// A new bundle folder under `parent` (the root filesystem is elsewhere,
    /// named in the config).
    pub fn create(runtime: &Runtime, parent: &Path) -> Result<Container, String> {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        let id = unique_id();
        let bundle = parent.join(&id);
        std::fs::create_dir_all(&bundle)
            .map_err(|e| format!("creating {}: {e}", bundle.display()))?;
        Ok(Container {
            runtime: runtime.clone(),
            id,
            bundle,
        })
    }

    /// A folder of the bundle outside the root filesystem (for secrets and
    /// private caches), removed with it.
    pub fn scratch(&self, name: &str) -> Result<PathBuf, String> {
        let dir = self.bundle.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// Write `config.json` and run it to the end: each output line goes to
    /// `line` as it arrives; `cancelled` is polled, and when it answers true
    /// the container is killed.
    pub fn run(
        &self,
        config: &serde_json::Value,
        line: &mut dyn FnMut(&str),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Ended, String> {
        let text = serde_json::to_vec_pretty(config)
            .map_err(|e| format!("writing the container's config: {e}"))?;
        std::fs::write(self.bundle.join("config.json"), text)
            .map_err(|e| format!("writing {}: {e}", self.bundle.display()))?;
        // One pipe for both streams: a runtime that hands them to the
        // command as they are keeps their order (runc copies each on its own).
        let (reader, writer) =
            std::io::pipe().map_err(|e| format!("making a pipe for the container: {e}"))?;
        let writer2 = writer
            .try_clone()
            .map_err(|e| format!("making a pipe for the container: {e}"))?;
        if cancelled() {
            return Ok(Ended::Cancelled);
        }
        let mut command = self.command();
        command
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2);
        let spawned = command.spawn();
        // The parent's copies of the write end must close, or the reader
        // never sees the end.
        drop(command);
        let mut child =
            spawned.map_err(|e| format!("starting {}: {e}", self.runtime.path.display()))?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader_thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        if tx
                            .send(text.trim_end_matches(['\n', '\r']).to_string())
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        // A stop asked for while the runtime is still creating the
        // container finds nothing to kill yet: the kill is sent again until
        // the container is gone.
        let mut killed: Option<std::time::Instant> = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(text) => line(&text),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let due = killed.is_none_or(|at| at.elapsed() >= Duration::from_millis(250));
            if due && cancelled() {
                killed = Some(std::time::Instant::now());
                self.kill();
            }
        }
        let killed = killed.is_some();
        let _ = reader_thread.join();
        let status = child
            .wait()
            .map_err(|e| format!("waiting for {}: {e}", self.runtime.name))?;
        if killed {
            return Ok(Ended::Cancelled);
        }
        Ok(Ended::Exited(status.code().unwrap_or(128)))
    }

    fn command(&self) -> Command {
        Command::new(&self.runtime.path)
    }

    fn kill(&self) {
        let _ = self
            .command()
            .args(["kill", &self.id, "KILL"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // The runtime removes a container that exited; one that was killed
        // or whose start failed half-way may remain.
        let _ = self
            .command()
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}

/// `kiln-<pid>-<n>`: unique per process and call.
fn unique_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "kiln-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_runtime_names_what_to_install() {
        let e =
            Runtime::find("auto", Some(std::ffi::OsStr::new("/nonexistent"))).expect_err("none");
        assert!(
            e.contains("runc, crun") && e.contains("apt-get install crun"),
            "{e}"
        );
        let e = Runtime::find("/nonexistent/runc", None).expect_err("not there");
        assert!(e.contains("not an executable"), "{e}");
    }
}
