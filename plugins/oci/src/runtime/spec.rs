//! The bundle's `config.json` (the OCI runtime spec) for one `RUN`: the
//! command, its environment, user and working folder, Docker's default
//! capabilities (without them `apt-get` cannot drop to its `_apt` user),
//! fresh PID, IPC, UTS and mount namespaces, and the usual mounts.

use std::path::Path;

use serde_json::{json, Value};

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Docker's default for `RUN`: reach the network. Without a daemon's
    /// bridge, this is the host's network, as buildah's and BuildKit's
    /// rootful defaults are.
    #[default]
    Default,
    /// No network: a namespace of its own with only loopback.
    None,
    /// The host's network.
    Host,
}

impl Network {
    /// `default`, `none` or `host`.
    pub fn parse(value: &str) -> Result<Network, String> {
        match value {
            "default" => Ok(Network::Default),
            "none" => Ok(Network::None),
            "host" => Ok(Network::Host),
            other => Err(format!("--network={other}: must be default, none or host")),
        }
    }

    fn shares_host(self) -> bool {
        !matches!(self, Network::None)
    }
}

/// What one `RUN` runs, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The command and its arguments.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// The working folder (absolute).
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Network.
    pub network: Network,
}

/// Docker's default capability set for containers.
pub const DOCKER_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
];

/// Where the runtime mounts things inside the root filesystem; a `RUN`
/// layer never records these when the command did not create them itself.
pub const MOUNT_TARGETS: &[&str] = &[
    "proc",
    "dev",
    "dev/pts",
    "dev/shm",
    "dev/mqueue",
    "sys",
    "etc/resolv.conf",
    "etc/hosts",
];

/// The spec for `process` on the root filesystem at `rootfs`.
/// `resolv_conf` and `hosts` are the host's files, mounted read-only when
/// the command shares the host's network. `extra` are the `RUN --mount`s,
/// as spec mounts.
pub fn config(
    process: &Process,
    rootfs: &Path,
    resolv_conf: Option<&Path>,
    hosts: Option<&Path>,
    extra: &[Value],
) -> Value {
    let caps: Vec<&str> = DOCKER_CAPABILITIES.to_vec();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    if process.network.shares_host() {
        for (dest, source) in [("/etc/resolv.conf", resolv_conf), ("/etc/hosts", hosts)] {
            if let Some(source) = source {
                mounts.push(json!({"destination": dest, "type": "bind",
                    "source": source, "options": ["rbind", "ro"]}));
            }
        }
    }
    mounts.extend(extra.iter().cloned());
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if !process.network.shares_host() {
        namespaces.push(json!({"type": "network"}));
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": process.uid,
                "gid": process.gid,
                "additionalGids": process.additional_gids,
            },
            "args": process.args,
            "env": process.env,
            "cwd": process.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": false,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": "kiln",
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": [
                "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                "/proc/scsi", "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
                "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpfs_mount() -> Value {
        json!({"destination": "/x", "type": "tmpfs", "source": "tmpfs"})
    }

    fn process(network: Network) -> Process {
        Process {
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 1000,
            gid: 100,
            additional_gids: vec![],
            network,
        }
    }

    #[test]
    fn network_none_has_its_own_namespace_and_no_host_files() {
        let resolv = Path::new("/etc/resolv.conf");
        let c = config(
            &process(Network::None),
            Path::new("/r"),
            Some(resolv),
            None,
            &[],
        );
        let ns = c["linux"]["namespaces"].as_array().expect("ns");
        assert!(ns.iter().any(|n| n["type"] == "network"));
        assert!(!c["mounts"].to_string().contains("resolv.conf"));
        let tmpfs = tmpfs_mount();
        let c = config(
            &process(Network::Default),
            Path::new("/r"),
            Some(resolv),
            None,
            &[tmpfs],
        );
        assert_eq!(
            c["mounts"].as_array().expect("mounts").last(),
            Some(&tmpfs_mount())
        );
        assert!(!c["linux"]["namespaces"].to_string().contains("network"));
        assert!(c["mounts"].to_string().contains("resolv.conf"));
        assert_eq!(c["process"]["user"]["uid"], 1000);
        assert!(Network::parse("bridge").is_err());
    }
}
