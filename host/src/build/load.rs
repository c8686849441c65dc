//! `kiln build --load`: the image archive a builder wrote goes into the
//! local Docker Engine (`POST /images/load`), as `docker buildx build
//! --load` does. One request over the engine's socket (`unix://` or
//! `tcp://`, Docker's rule for which: [`docker_host`]); an engine that does
//! not answer is exit 5, naming where kiln looked.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    time::Duration,
};

use kiln_distribution::engine::docker_host;

use crate::error::{exit, Error, Result};

/// How much of an engine's answer is kept for an error message.
const ANSWER_LIMIT: u64 = 64 * 1024;

/// A connection to the engine, whichever socket kind it is.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// The error every `--load` failure to reach the engine at `host` gives.
fn unreachable(host: &str, why: impl std::fmt::Display) -> Error {
    Error::Reported {
        message: format!(
            "--load: the Docker Engine at {host} does not answer ({why}); start it, set \
             DOCKER_HOST, or use -o type=docker,dest=FILE instead"
        ),
        code: exit::DAEMON,
    }
}

/// Connect to the engine at `host` (`unix://` or `tcp://`), reads timing
/// out after `timeout`.
fn connect(host: &str, timeout: Option<Duration>) -> Result<Box<dyn Stream>> {
    use kiln_distribution::engine::{endpoint, Endpoint};
    match endpoint(host).map_err(|e| Error::BadArgument(format!("--load: DOCKER_HOST {e}")))? {
        Endpoint::Unix(path) => {
            let s =
                std::os::unix::net::UnixStream::connect(path).map_err(|e| unreachable(host, e))?;
            s.set_read_timeout(timeout).ok();
            Ok(Box::new(s))
        }
        Endpoint::Tcp(addr) => {
            let s = std::net::TcpStream::connect(addr).map_err(|e| unreachable(host, e))?;
            s.set_read_timeout(timeout).ok();
            Ok(Box::new(s))
        }
    }
}

/// Whether the engine accepts a connection, asked before a `--load` build
/// does any work: the error is the one [`into_engine`] would give.
pub fn check_reachable() -> Result<()> {
    connect(&docker_host(None), None).map(drop)
}

/// Load `archive` (a `docker load` archive) into the engine at
/// `DOCKER_HOST` (default socket); returns what the engine said it loaded.
pub fn into_engine(archive: &Path, timeout: Duration) -> Result<String> {
    let host = docker_host(None);
    let size = fs::metadata(archive)
        .map_err(|e| Error::io("reading", archive, e))?
        .len();
    let mut file = fs::File::open(archive).map_err(|e| Error::io("reading", archive, e))?;
    let request = format!(
        "POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: kiln\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    let mut s = connect(&host, Some(timeout))?;
    s.write_all(request.as_bytes())
        .and_then(|()| std::io::copy(&mut file, &mut s).map(drop))
        .map_err(|e| unreachable(&host, e))?;
    let answer = read_answer(s).map_err(|e| unreachable(&host, e))?;
    interpret(&answer)
}

/// The ID (`sha256:` of its config) of `image` in the engine at `host`;
/// `None` when no engine answers there or it does not have the image.
/// Reads time out after `timeout`.
pub fn engine_image_id(
    host: &str,
    image: &str,
    timeout: Duration,
) -> std::result::Result<Option<String>, String> {
    let unsafe_char = |c: char| !(c.is_ascii_alphanumeric() || "/:._-@".contains(c));
    if image.contains(unsafe_char) {
        return Err(format!("{image:?} is not an image reference"));
    }
    // No engine answering has no image: the builder then pulls from the
    // registry, as the `oci` builder does.
    let Ok(mut s) = connect(host, Some(timeout)) else {
        return Ok(None);
    };
    let request = format!(
        "GET /images/{image}/json HTTP/1.1\r\nHost: docker\r\nUser-Agent: kiln\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("the Docker Engine at {host}: {e}"))?;
    let (status, body) = read_answer(s).map_err(|e| format!("the Docker Engine at {host}: {e}"))?;
    match status {
        200 => serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("Id")?.as_str().map(str::to_string))
            .filter(|id| id.starts_with("sha256:"))
            .map(Some)
            .ok_or_else(|| format!("the Docker Engine at {host} named no ID for {image}")),
        404 => Ok(None),
        other => Err(format!(
            "the Docker Engine at {host} answered {other} for {image}"
        )),
    }
}

/// The status code and body of an HTTP/1.1 answer (identity or chunked).
fn read_answer(stream: impl Read) -> std::io::Result<(u16, String)> {
    let mut r = BufReader::new(stream.take(ANSWER_LIMIT));
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut raw = Vec::new();
    r.read_to_end(&mut raw)?;
    let body = if chunked { dechunk(&raw) } else { raw };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[end + 2..];
        if size == 0 || size > raw.len() {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// The engine's verdict: 200 with a JSON message stream, where a failure
/// is an `errorDetail` line; anything else is an error.
fn interpret((status, body): &(u16, String)) -> Result<String> {
    let mut loaded = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(message) = v
            .get("errorDetail")
            .and_then(|d| d.get("message"))
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message").filter(|_| *status != 200))
            .and_then(|m| m.as_str())
        {
            return Err(Error::Reported {
                message: format!(
                    "--load: the Docker Engine refused the image: {}",
                    crate::output::terminal_safe(message, false)
                ),
                code: exit::DAEMON,
            });
        }
        if let Some(s) = v.get("stream").and_then(|s| s.as_str()) {
            loaded.push(s.trim().to_string());
        }
    }
    if *status != 200 {
        return Err(Error::Reported {
            message: format!(
                "--load: the Docker Engine answered {status}: {}",
                crate::output::terminal_safe(
                    body.chars().take(300).collect::<String>().trim(),
                    false
                )
            ),
            code: exit::DAEMON,
        });
    }
    Ok(loaded.join("; "))
}

/// The image ID of the OCI archive at `path` (as the `oci` builder writes
/// it, `docker load` reads it): the config digest of its one image, or the
/// digest of its image index when it holds several platforms, as buildx's
/// `--iidfile` has it. `None` when the archive does not say.
pub fn image_id_of_archive(path: &Path) -> Option<String> {
    let read_member = |wanted: &str| -> Option<Vec<u8>> {
        let file = fs::File::open(path).ok()?;
        let mut archive = tar::Archive::new(file);
        // Layers are skipped by seeking, not read.
        for entry in archive.entries_with_seek().ok()? {
            let mut entry = entry.ok()?;
            let name = entry.path().ok()?.to_string_lossy().into_owned();
            if name.trim_start_matches("./") == wanted {
                // Indexes and manifests are small; a bigger member is not one.
                let mut bytes = Vec::new();
                (&mut entry).take(4 << 20).read_to_end(&mut bytes).ok()?;
                return Some(bytes);
            }
        }
        None
    };
    let index: serde_json::Value = serde_json::from_slice(&read_member("index.json")?).ok()?;
    let top = index.get("manifests")?.get(0)?;
    let digest = top.get("digest")?.as_str()?;
    let media = top.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    if media.contains("index") || media.contains("manifest.list") {
        return Some(digest.to_string());
    }
    let hex = digest.strip_prefix("sha256:")?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_member(&format!("blobs/sha256/{hex}"))?).ok()?;
    Some(manifest.get("config")?.get("digest")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_and_judged() {
        let ok = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            22\r\n{\"stream\":\"Loaded image: x:1\\n\"}\r\n0\r\n\r\n";
        let a = read_answer(&ok[..]).expect("read");
        assert_eq!(interpret(&a).expect("ok"), "Loaded image: x:1");

        let refused = b"HTTP/1.1 200 OK\r\nContent-Length: 44\r\n\r\n\
            {\"errorDetail\":{\"message\":\"bad archive\"}}\n";
        let a = read_answer(&refused[..]).expect("read");
        let e = interpret(&a).expect_err("refused").to_string();
        assert!(e.contains("bad archive"), "{e}");

        let a = (500, "{\"message\":\"no space left\"}".to_string());
        assert!(interpret(&a)
            .expect_err("500")
            .to_string()
            .contains("no space left"));
    }
}
