//! Whether this machine can run a platform's programs: natively, or
//! through QEMU user emulation registered with the kernel's binfmt_misc
//! (Debian's `qemu-user-static`, or `tonistiigi/binfmt`).
//!
//! A handler must have the `F` flag (the kernel opens the interpreter when
//! it is registered), because the interpreter's path does not exist inside
//! the container's root filesystem.

use std::path::Path;

use crate::image::{host_architecture, Platform};

/// Where the kernel lists binfmt_misc handlers.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// What to install when a handler is missing.
const INSTALL_HINT: &str = "install QEMU user emulation (Debian and Ubuntu: `apt-get install \
     qemu-user-static binfmt-support`; elsewhere `docker run --privileged --rm \
     tonistiigi/binfmt --install all`)";

/// QEMU's name for an OCI architecture.
fn qemu_name(architecture: &str) -> &str {
    match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "loong64" => "loongarch64",
        other => other,
    }
}

/// Whether `RUN` can run programs built for `platform` here: `Ok` when the
/// machine is that architecture or an enabled `F`-flagged handler for it
/// is registered in `binfmt_dir`; otherwise why not and what to install.
pub fn check(platform: &Platform, binfmt_dir: &Path) -> Result<(), String> {
    let host = host_architecture();
    // An x86-64 kernel runs 32-bit x86 programs itself.
    if platform.architecture == host || (host == "amd64" && platform.architecture == "386") {
        return Ok(());
    }
    let name = qemu_name(&platform.architecture);
    let handler = binfmt_dir.join(format!("qemu-{name}"));
    let refused = |why: String| {
        Err(format!(
            "RUN for {platform} on this {} machine needs emulation: {why}; {INSTALL_HINT}, or \
             build that platform elsewhere",
            host
        ))
    };
    let text = match std::fs::read_to_string(&handler) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return refused(format!(
                "no binfmt_misc handler for {name} is registered ({} is missing)",
                handler.display()
            ))
        }
        Err(e) => return refused(format!("reading {}: {e}", handler.display())),
    };
    if text.lines().next() != Some("enabled") {
        return refused(format!(
            "the binfmt_misc handler {} is disabled",
            handler.display()
        ));
    }
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap_or("")
        .trim();
    if !flags.contains('F') {
        return refused(format!(
            "the binfmt_misc handler {} lacks the F flag (flags {flags:?}), so its interpreter \
             cannot be found inside a container",
            handler.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn foreign() -> Platform {
        let arch = if host_architecture() == "arm64" {
            "amd64"
        } else {
            "arm64"
        };
        Platform::parse(&format!("linux/{arch}")).expect("platform")
    }

    #[test]
    fn the_host_platform_needs_nothing_and_a_foreign_one_an_f_handler() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = Platform::parse(&format!("linux/{}", host_architecture())).expect("host");
        assert!(check(&host, dir.path()).is_ok());

        let p = foreign();
        let name = qemu_name(&p.architecture).to_string();
        let e = check(&p, dir.path()).expect_err("no handler");
        assert!(
            e.contains(&p.to_string()) && e.contains("qemu-user-static"),
            "{e}"
        );
        assert!(e.contains(&format!("qemu-{name}")), "{e}");

        let handler = dir.path().join(format!("qemu-{name}"));
        std::fs::write(&handler, "enabled\ninterpreter /x\nflags: P\n").expect("write");
        let e = check(&p, dir.path()).expect_err("no F flag");
        assert!(e.contains("lacks the F flag"), "{e}");

        std::fs::write(&handler, "disabled\ninterpreter /x\nflags: PF\n").expect("write");
        assert!(check(&p, dir.path())
            .expect_err("disabled")
            .contains("disabled"));

        std::fs::write(&handler, "enabled\ninterpreter /x\nflags: PF\noffset 0\n").expect("write");
        assert!(check(&p, dir.path()).is_ok());
    }
}
