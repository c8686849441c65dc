//! A real registry (Debian's `docker-registry`) on 127.0.0.1.

use std::{
    fs,
    process::{Command, Stdio},
};

/// A real registry (Debian's `docker-registry`) on 127.0.0.1, started for
/// one test and stopped when dropped. With `auth`, it wants `user`/`password`
/// (htpasswd, bcrypt).
pub struct TestRegistry {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn start(auth: Option<(&str, &str)>) -> TestRegistry {
        Self::start_with(auth, None)
    }

    /// A registry whose `auth:` section is `auth_yaml` (e.g. token auth).
    pub fn start_token(auth_yaml: &str) -> TestRegistry {
        Self::start_with(None, Some(auth_yaml))
    }

    fn start_with(auth: Option<(&str, &str)>, auth_yaml: Option<&str>) -> TestRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            fs::write(&file, out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln\n    path: {}\n",
                file.display()
            ));
        }
        if let Some(yaml) = auth_yaml {
            config.push_str(yaml);
        }
        let config_file = dir.path().join("config.yml");
        fs::write(&config_file, config).expect("write registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let registry = TestRegistry {
            port,
            child,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        registry
    }

    /// Where it stores what is pushed.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
