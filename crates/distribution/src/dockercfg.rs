//! Credentials from Docker's own config (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), resolved as the Docker CLI does: a
//! `credHelpers` entry for the host, else the `credsStore` helper, else the
//! `auths` entry. A helper that fails or hangs gives a clear, bounded error;
//! no secret is ever put in a message.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;

use crate::client::Credentials;

/// Docker Hub's key in `auths` and for helpers.
const HUB_KEY: &str = "https://index.docker.io/v1/";

#[allow(clippy::disallowed_methods)] // Docker's DOCKER_CONFIG and HOME, read as the CLI does
fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// `https://host/v1/` -> `host` (the CLI's ConvertToHostname).
fn hostname(key: &str) -> &str {
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    stripped.split('/').next().unwrap_or(stripped)
}

/// The credentials Docker's config holds for `host` (`docker.io` for Hub).
pub fn lookup(host: &str, timeout: Duration) -> Result<Option<Credentials>, String> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let key = if host == "docker.io" { HUB_KEY } else { host };
    let helper = config
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| k.as_str() == key || hostname(k) == host)
                .and_then(|(_, v)| v.as_str())
        })
        .or_else(|| config.get("credsStore").and_then(|s| s.as_str()))
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        return run_helper(helper, key, timeout);
    }
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let Some((_, entry)) = auths.iter().find(|(k, _)| {
        k.as_str() == key
            || hostname(k) == host
            || (host == "docker.io" && hostname(k) == "index.docker.io")
    }) else {
        return Ok(None);
    };
    if let Some(auth) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| {
                format!(
                    "{}: the auth entry for {host} is not base64",
                    path.display()
                )
            })?;
        let text = String::from_utf8(decoded)
            .map_err(|_| format!("{}: the auth entry for {host} is not text", path.display()))?;
        let (user, pass) = text.split_once(':').ok_or_else(|| {
            format!(
                "{}: the auth entry for {host} is not user:password",
                path.display()
            )
        })?;
        return Ok(Some(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
        }));
    }
    let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok(match (field("username"), field("password")) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        _ => None,
    })
}

/// `docker-credential-<helper> get`, bounded by `timeout`.
fn run_helper(helper: &str, key: &str, timeout: Duration) -> Result<Option<Credentials>, String> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("credential helper {program} (from Docker's config) cannot run: {e}")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(key.as_bytes());
    }
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "credential helper {program} did not answer within {} s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("credential helper {program}: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("credential helper {program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!(
            "credential helper {program} failed ({}) for {key}",
            out.status
        ));
    }
    let value: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|_| format!("credential helper {program} did not print JSON"))?;
    let field = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok(match (field("Username"), field("Secret")) {
        (Some(username), Some(password)) if !password.is_empty() => {
            Some(Credentials { username, password })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalise_to_hostnames() {
        assert_eq!(hostname("https://index.docker.io/v1/"), "index.docker.io");
        assert_eq!(hostname("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(hostname("http://reg.io:443/x"), "reg.io:443");
    }
}
