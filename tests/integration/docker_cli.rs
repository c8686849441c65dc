//! The Docker CLI as an oracle for the build context: a tiny endpoint on a
//! unix socket that answers `/_ping` and records the body of `POST /build`,
//! which is exactly the context archive `docker build` sends. No daemon is
//! involved; the real `docker` binary decides what goes in.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
};

/// The `docker` CLI, or `None` (said on stderr) when it is missing; under
/// `CI=true` a missing CLI fails the test instead.
#[allow(clippy::print_stderr)]
pub fn docker_cli() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("docker"))
            .find(|p| p.is_file())
    });
    if found.is_none() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the docker CLI is required for this test under CI=true; install docker.io");
    }
    if found.is_none() {
        eprintln!("docker CLI not found: the comparison with the Docker CLI did not run");
    }
    found
}

/// Records what `docker build` uploads.
pub struct Capture {
    socket: PathBuf,
    body: Arc<Mutex<Option<Vec<u8>>>>,
    _dir: tempfile::TempDir,
}

impl Capture {
    pub fn start() -> Capture {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("bind capture socket");
        let body = Arc::new(Mutex::new(None));
        let shared = Arc::clone(&body);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Capture {
            socket,
            body,
            _dir: dir,
        }
    }

    /// Run `docker build` (classic builder) on `dir` and return the archive it sent.
    pub fn context_of(&self, docker: &Path, dir: &Path, extra_args: &[&str]) -> Vec<u8> {
        self.try_context_of(docker, dir, extra_args)
            .unwrap_or_else(|e| panic!("docker build failed: {e}"))
    }

    /// As [`Self::context_of`], with the CLI's error when it refuses (a
    /// `.dockerignore` pattern it cannot parse).
    pub fn try_context_of(
        &self,
        docker: &Path,
        dir: &Path,
        extra_args: &[&str],
    ) -> Result<Vec<u8>, String> {
        *self.body.lock().expect("lock") = None;
        let config = tempfile::tempdir().expect("tempdir");
        let out = Command::new(docker)
            .arg("build")
            .args(extra_args)
            .arg(dir)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CONFIG", config.path())
            .output()
            .expect("run docker build");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(self
            .body
            .lock()
            .expect("lock")
            .take()
            .expect("docker build sent no context"))
    }
}

fn serve(stream: UnixStream, body: &Mutex<Option<Vec<u8>>>) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        let mut chunked = false;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut data = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).expect("chunk size");
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .expect("hex chunk size");
                let mut chunk = vec![0u8; n + 2];
                reader.read_exact(&mut chunk).expect("chunk");
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&chunk[..n]);
            }
        } else {
            data.resize(length, 0);
            reader.read_exact(&mut data).expect("body");
        }
        let response = if request.contains("/build") {
            *body.lock().expect("lock") = Some(data);
            let json = format!(
                "{{\"stream\":\"captured\\n\"}}\n{{\"aux\":{{\"ID\":\"sha256:{}\"}}}}\n",
                "0".repeat(64)
            );
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            )
        } else if request.contains("/_ping") {
            let head = request.starts_with("HEAD");
            format!(
                "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nOSType: linux\r\nBuilder-Version: 1\r\nContent-Length: 2\r\n\r\n{}",
                if head { "" } else { "OK" }
            )
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
        };
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
