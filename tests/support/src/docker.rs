//! The Docker Engine and tools the end-to-end tests need.

use std::{
    fs,
    process::{Command, Stdio},
};

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

/// Removes these image names from the Docker Engine when dropped, so a
/// test leaves no tags behind, whether it passes or fails.
pub struct Untag(pub Vec<String>);

impl Drop for Untag {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let _ = Command::new("docker")
            .arg("rmi")
            .arg("-f")
            .args(&self.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `docker ARGS`: its stdout; a failure fails the test, with docker's stderr.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A name no other test or run uses: `PREFIX-PID-NANOS`.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
