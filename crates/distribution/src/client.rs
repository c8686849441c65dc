//! One registry's HTTP API v2 client: manifest and blob calls, monolithic
//! blob uploads, Basic and Bearer token auth negotiated from the
//! `WWW-Authenticate` challenge (and reused for the next call), bounded
//! retries of 429 and 5xx. No daemon involved.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{header, Client, Method, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// Every manifest type a registry may hold; registry 2.8 answers 404 for an
/// OCI manifest when the OCI types are missing, and converts Docker v2 to
/// schema 1 (another digest) when `Accept` is empty.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// User name and password for the registry.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token; never printed.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ********)", self.username)
    }
}

/// How a request ended.
#[derive(Debug)]
pub enum Outcome {
    /// A final answer (any status but 401/403, 429 and 5xx).
    Response(Response),
    /// 401/403 with the credentials we have (or none).
    Denied(String),
    /// Retries used up, or the registry cannot be reached.
    Unknown(String),
}

/// A manifest as fetched: its bytes, media type and digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The bytes, exactly as served (the digest is theirs).
    pub bytes: Vec<u8>,
    /// `Content-Type`, else the document's own `mediaType`.
    pub media_type: String,
    /// `sha256:` of `bytes`.
    pub digest: String,
}

/// A buffer that refuses to grow past `limit` bytes.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + data.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "larger than a document may be ({} MiB)",
                self.limit >> 20
            )));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `text` is a digest as registries write one: `sha256:` and 64
/// lowercase hex digits, or `sha512:` and 128.
pub fn is_digest(text: &str) -> bool {
    let hex = |h: &str, n: usize| {
        h.len() == n
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match text.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha512", h)) => hex(h, 128),
        _ => false,
    }
}

/// The most of a manifest kiln reads (distribution's own limit is 4 MiB).
const MANIFEST_LIMIT: usize = 4 << 20;

/// The most of an error body kiln reads, and prints.
const ERROR_BODY_READ: usize = 64 << 10;
const ERROR_BODY_SHOWN: usize = 300;

/// What a registry's error body says, fit for a terminal and a log: at most
/// 300 characters, control characters and escape sequences
/// dropped, whitespace collapsed; an HTML page (a proxy's or a captive
/// portal's) is named, not printed.
pub async fn error_excerpt(mut response: Response) -> String {
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().contains("html"));
    let mut body = Vec::new();
    let mut more = false;
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > ERROR_BODY_READ {
            more = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body);
    if html || text.trim_start().starts_with('<') {
        return "an HTML page, not a registry's answer (a proxy or a login portal?)".into();
    }
    let mut clean = String::new();
    let mut escape = false;
    for c in text.chars() {
        if c == '\u{1b}' {
            escape = true;
            continue;
        }
        if escape {
            // The end of an escape sequence is a letter (CSI) or BEL.
            if c.is_ascii_alphabetic() || c == '\u{7}' {
                escape = false;
            }
            continue;
        }
        let c = if c.is_whitespace() { ' ' } else { c };
        if c.is_control() || (c == ' ' && clean.ends_with(' ')) {
            continue;
        }
        clean.push(c);
    }
    let clean = clean.trim();
    let shown: String = clean.chars().take(ERROR_BODY_SHOWN).collect();
    if more || shown.len() < clean.len() {
        format!("{shown}... (cut)")
    } else {
        shown
    }
}

/// The `Location` an upload step answered with.
fn upload_location(response: &Response, what: &str) -> Result<String, CallError> {
    response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| CallError::Failed(format!("{what}: no upload Location")))
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// How a request the registry answers with 429 or 5xx is retried: up to
/// `retries` more times, waiting `backoff`, then twice that, and so on (at
/// most 32 times `backoff`). Plugins expose both in their config so tests
/// and impatient users need not wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The first wait.
    pub backoff: Duration,
}

impl Retry {
    /// The first wait when none is configured.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(200);

    /// `retries` retries with the default backoff.
    pub fn new(retries: u32) -> Self {
        Self {
            retries,
            backoff: Self::DEFAULT_BACKOFF,
        }
    }

    /// `retries` retries, first waiting `backoff_ms` milliseconds.
    pub fn with_backoff_ms(retries: u32, backoff_ms: u64) -> Self {
        Self {
            retries,
            backoff: Duration::from_millis(backoff_ms),
        }
    }

    /// The wait before retry number `attempt` (1-based).
    fn wait(&self, attempt: u32) -> Duration {
        self.backoff * (1u32 << attempt.min(5))
    }
}

/// A small client for one registry.
pub struct RegistryClient {
    client: Client,
    base: String,
    credentials: Option<Credentials>,
    retry: Retry,
    /// The auth the last challenge asked for, tried first on the next call.
    auth: Mutex<Option<Auth>>,
}

impl RegistryClient {
    /// `base` is `http(s)://host[:port]`; `timeout` bounds connecting and
    /// each whole request.
    pub fn new(
        base: String,
        credentials: Option<Credentials>,
        timeout: Duration,
        retry: Retry,
    ) -> Result<Self, String> {
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self {
            client,
            base,
            credentials,
            retry,
            auth: Mutex::new(None),
        })
    }

    /// A client for the registry at `host` (`host[:port]`, `docker.io` for
    /// Docker Hub): plain HTTP for loopback hosts and those in `insecure`,
    /// HTTPS for the rest.
    pub fn for_host(
        host: &str,
        insecure: &[String],
        credentials: Option<Credentials>,
        timeout: Duration,
        retry: Retry,
    ) -> Result<Self, String> {
        let uri = crate::names::RegistryUri::parse(host)?;
        let scheme = if uri.plain_http(insecure.iter().any(|h| h == host)) {
            "http"
        } else {
            "https"
        };
        Self::new(
            format!("{scheme}://{}", uri.api_host()),
            credentials,
            timeout,
            retry,
        )
    }

    /// `http(s)://host[:port]`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method` on `/v2/<path>`, with auth negotiated and retries.
    pub async fn request(&self, method: Method, path: &str, accept: &str) -> Outcome {
        self.send(
            method,
            &format!("/v2/{path}"),
            &[(header::ACCEPT, accept)],
            None,
        )
        .await
    }

    /// `method` on `target` (a `/v2/...` path or an absolute URL, as upload
    /// `Location`s are), with `headers` and an optional body; auth is
    /// negotiated on a 401 and 429/5xx are retried with backoff.
    pub async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<Bytes>,
    ) -> Outcome {
        let url = if target.starts_with("http://") || target.starts_with("https://") {
            target.to_string()
        } else {
            format!("{}{target}", self.base)
        };
        let mut auth: Option<Auth> = self.auth.lock().await.clone();
        let mut negotiated = false;
        let mut attempt = 0u32;
        loop {
            let mut req = self.client.request(method.clone(), &url);
            for (name, value) in headers {
                req = req.header(name, *value);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            match (&auth, &self.credentials) {
                (Some(Auth::Basic), Some(c)) => {
                    req = req.basic_auth(&c.username, Some(&c.password))
                }
                (Some(Auth::Bearer(token)), _) => req = req.bearer_auth(token),
                _ => {}
            }
            let response = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let why = if e.is_timeout() {
                        "timed out".to_string()
                    } else if e.is_connect() {
                        // The innermost cause says why: refused, or a TLS
                        // certificate this machine does not trust.
                        let mut cause: &dyn std::error::Error = &e;
                        while let Some(next) = cause.source() {
                            cause = next;
                        }
                        let cause = cause.to_string();
                        if cause.to_lowercase().contains("certificate") {
                            format!(
                                "cannot connect: {cause} (a private CA goes in the system \
                                 trust store or SSL_CERT_FILE)"
                            )
                        } else {
                            format!("cannot connect: {cause}")
                        }
                    } else {
                        e.to_string()
                    };
                    return Outcome::Unknown(format!("{} {why}", self.base));
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !negotiated {
                negotiated = true;
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                match self.authorization(&challenge).await {
                    Ok(Some(a)) => {
                        *self.auth.lock().await = Some(a.clone());
                        auth = Some(a);
                        continue;
                    }
                    Ok(None) => {
                        return Outcome::Denied(format!(
                            "{} requires credentials (401) and none are configured",
                            self.base
                        ))
                    }
                    Err(e) => return Outcome::Denied(e),
                }
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Outcome::Denied(format!(
                    "{} refused the credentials ({status})",
                    self.base
                ));
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                if attempt < self.retry.retries {
                    attempt += 1;
                    tokio::time::sleep(self.retry.wait(attempt)).await;
                    continue;
                }
                return Outcome::Unknown(format!(
                    "{} answered {status} after {} attempts",
                    self.base,
                    attempt + 1
                ));
            }
            return Outcome::Response(response);
        }
    }

    /// A successful response to `method target`, or an error naming `what`.
    async fn expect(
        &self,
        what: &str,
        method: Method,
        target: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<Bytes>,
    ) -> Result<Response, CallError> {
        match self.send(method, target, headers, body).await {
            Outcome::Response(r) if r.status().is_success() => Ok(r),
            Outcome::Response(r) => {
                let status = r.status();
                let text = error_excerpt(r).await;
                Err(CallError::Failed(if text.is_empty() {
                    format!("{what}: {} answered {status}", self.base)
                } else {
                    format!("{what}: {} answered {status}: {text}", self.base)
                }))
            }
            Outcome::Denied(why) => Err(CallError::Denied(format!("{what}: {why}"))),
            Outcome::Unknown(why) => Err(CallError::Unavailable(format!("{what}: {why}"))),
        }
    }

    /// Whether these credentials may push to `repo`: an upload is started
    /// (`POST`, which asks for push scope under token auth) and abandoned
    /// (`DELETE`). Refused is [`CallError::Denied`], by the status code.
    pub async fn can_push(&self, repo: &str) -> Result<(), CallError> {
        let target = format!("/v2/{repo}/blobs/uploads/");
        match self.send(Method::POST, &target, &[], None).await {
            Outcome::Response(r) if r.status() == StatusCode::ACCEPTED => {
                if let Some(location) = r
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                {
                    let location = if location.starts_with('/') {
                        location
                    } else {
                        location.replace(self.base.as_str(), "")
                    };
                    // Best effort: an abandoned upload expires on its own.
                    let _ = self.send(Method::DELETE, &location, &[], None).await;
                }
                Ok(())
            }
            Outcome::Response(r) => Err(CallError::Failed(format!(
                "{} does not take pushes to {repo}: it answered {} to starting an upload",
                self.base,
                r.status()
            ))),
            Outcome::Denied(why) => Err(CallError::Denied(why)),
            Outcome::Unknown(why) => Err(CallError::Unavailable(why)),
        }
    }

    /// Whether `repo` has the blob `digest` (a `HEAD`).
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, CallError> {
        let target = format!("/v2/{repo}/blobs/{digest}");
        match self.send(Method::HEAD, &target, &[], None).await {
            Outcome::Response(r) if r.status().is_success() => Ok(true),
            Outcome::Response(r) if r.status() == StatusCode::NOT_FOUND => Ok(false),
            Outcome::Response(r) => Err(CallError::Failed(format!(
                "checking blob {digest} in {repo}: {} answered {}",
                self.base,
                r.status()
            ))),
            Outcome::Denied(why) => Err(CallError::Denied(why)),
            Outcome::Unknown(why) => Err(CallError::Unavailable(why)),
        }
    }

    /// Upload `data` as the blob `digest` of `repo` in one request
    /// (`POST` an upload, `PUT` it with the digest).
    pub async fn upload_blob(
        &self,
        repo: &str,
        digest: &str,
        data: Bytes,
    ) -> Result<(), CallError> {
        let what = format!("uploading blob {digest} to {repo}");
        let location = self.start_upload(repo, &what).await?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let target = format!("{location}{sep}digest={digest}");
        let length = data.len().to_string();
        self.expect(
            &what,
            Method::PUT,
            &target,
            &[
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_LENGTH, &length),
            ],
            Some(data),
        )
        .await?;
        Ok(())
    }

    /// `PUT` a manifest under `reference` (a tag or digest) and return its
    /// digest once the registry confirms it: the digest it answers with must
    /// be the bytes' own, and without one the manifest must be there when
    /// asked for by digest (a registry that accepts and stores nothing is an
    /// error, not a push).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, CallError> {
        let own = sha256(&bytes);
        let what = format!("pushing the manifest of {repo}:{reference}");
        let response = self
            .expect(
                &what,
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(header::CONTENT_TYPE, media_type)],
                Some(Bytes::from(bytes)),
            )
            .await?;
        let answered = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match answered {
            Some(d) if d == own => Ok(own),
            Some(d) => Err(CallError::Failed(format!(
                "{what}: {} answered with digest {:?}, but the manifest sent is {own}",
                self.base,
                crate::names::printable(&d)
            ))),
            None => match self.resolve(repo, &own).await? {
                Some(_) => Ok(own),
                None => Err(CallError::Failed(format!(
                    "{what}: {} accepted the manifest but does not have {own} afterwards",
                    self.base
                ))),
            },
        }
    }

    /// `GET` the manifest `repo:reference`, checked: `None` when the
    /// registry answers 404; an error unless the answer is a manifest or
    /// index (JSON with `schemaVersion` 2 and `layers` or `manifests`, at
    /// most 4 MiB) whose digest is the one asked for (a digest reference)
    /// and the one the registry names (`Docker-Content-Digest`, when sent).
    /// A proxy's or captive portal's page is never taken for an image.
    pub async fn resolve(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Manifest>, CallError> {
        let what = format!("{}/{repo}:{reference}", self.base);
        let mut response = match self
            .send(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(header::ACCEPT, MANIFEST_TYPES)],
                None,
            )
            .await
        {
            Outcome::Response(r) if r.status() == StatusCode::NOT_FOUND => return Ok(None),
            Outcome::Response(r) if r.status().is_success() => r,
            Outcome::Response(r) => {
                let status = r.status();
                let text = error_excerpt(r).await;
                return Err(CallError::Unavailable(format!(
                    "{what}: answered {status}: {text}"
                )));
            }
            Outcome::Denied(why) => return Err(CallError::Denied(why)),
            Outcome::Unknown(why) => return Err(CallError::Unavailable(why)),
        };
        let named = response
            .headers()
            .get("docker-content-digest")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_ascii_lowercase());
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MANIFEST_LIMIT {
                        return Err(CallError::Failed(format!(
                            "{what}: the answer is larger than a manifest may be (4 MiB)"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(CallError::Unavailable(format!("{what}: {e}"))),
            }
        }
        let not_a_manifest = |why: &str| {
            CallError::Failed(format!(
                "{what}: the registry's answer is not an image manifest ({why})"
            ))
        };
        let html = content_type.as_deref().is_some_and(|t| t.contains("html"))
            || bytes.trim_ascii_start().starts_with(b"<");
        if html {
            return Err(not_a_manifest("an HTML page: a proxy or a login portal?"));
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| not_a_manifest("not JSON"))?;
        let shaped = doc.get("schemaVersion").and_then(|v| v.as_u64()) == Some(2)
            && (doc.get("layers").is_some_and(|l| l.is_array())
                || doc.get("manifests").is_some_and(|m| m.is_array()));
        if !shaped {
            return Err(not_a_manifest(
                "no schemaVersion 2 with layers or manifests",
            ));
        }
        let declared = doc
            .get("mediaType")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let media_type = match (content_type, declared) {
            (Some(t), _) if MANIFEST_TYPES.split(", ").any(|m| m == t) => t,
            (Some(t), Some(d)) if t == "application/json" || t.is_empty() => d,
            (None, Some(d)) => d,
            (Some(t), _) if t != "application/json" && !t.is_empty() => {
                return Err(not_a_manifest(&format!(
                    "Content-Type {:?}",
                    crate::names::printable(&t)
                )))
            }
            _ => "application/vnd.oci.image.manifest.v1+json".into(),
        };
        let digest = sha256(&bytes);
        if is_digest(reference) && reference != digest {
            return Err(CallError::Failed(format!(
                "{what}: the registry sent content with digest {digest}"
            )));
        }
        if let Some(named) = named {
            if named != digest {
                return Err(CallError::Failed(format!(
                    "{what}: the registry names digest {:?} but sent content with digest {digest}",
                    crate::names::printable(&named)
                )));
            }
        }
        Ok(Some(Manifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// `GET` the manifest `repo:reference`, checked as [`Self::resolve`]
    /// checks it; absent is an error.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest, CallError> {
        self.resolve(repo, reference)
            .await?
            .ok_or_else(|| self.no_such_image(repo, reference))
    }

    /// The error for an image `repo:reference` this registry does not have.
    pub fn no_such_image(&self, repo: &str, reference: &str) -> CallError {
        CallError::Failed(format!(
            "fetching the manifest of {repo}:{reference}: {} has no such image (404)",
            self.base
        ))
    }

    /// `GET` the blob `digest` of `repo`, verified against the digest.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Bytes, CallError> {
        let mut out = Vec::new();
        self.get_blob_to(repo, digest, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// `GET` the blob `digest` of `repo` into `out` as it arrives (never
    /// held whole), hashed on the way: content of another digest is an
    /// error, and what was written must then be thrown away. Returns the
    /// bytes written.
    pub async fn get_blob_to(
        &self,
        repo: &str,
        digest: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, CallError> {
        use sha2::{Digest, Sha256};
        let what = format!("fetching blob {digest} of {repo}");
        let mut response = self
            .expect(
                &what,
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                None,
            )
            .await?;
        let mut hash = Sha256::new();
        let mut written = 0u64;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| CallError::Unavailable(format!("{what}: {e}")))?
        {
            hash.update(&chunk);
            out.write_all(&chunk)
                .map_err(|e| CallError::Failed(format!("{what}: writing it: {e}")))?;
            written += chunk.len() as u64;
        }
        let got = format!("sha256:{:x}", hash.finalize());
        if got != digest {
            return Err(CallError::Failed(format!(
                "{what}: the registry sent content with digest {got}"
            )));
        }
        Ok(written)
    }

    /// The manifest document of the image `repo:reference` (a tag or a
    /// digest) for `platform`: an index's entry for it, a single manifest
    /// as it is; each checked as [`Self::resolve`] checks it. `None` when
    /// the registry has no such image. Errors name `what`.
    pub async fn platform_manifest(
        &self,
        repo: &str,
        reference: &str,
        platform: &crate::Platform,
        what: &str,
    ) -> Result<Option<serde_json::Value>, CallError> {
        use crate::manifest::{digest_of, is_index, pick_platform};
        let not_json = |e: serde_json::Error| {
            CallError::Failed(format!("{what}: the manifest is not JSON: {e}"))
        };
        let Some(mut m) = self.resolve(repo, reference).await? else {
            return Ok(None);
        };
        let mut doc: serde_json::Value = serde_json::from_slice(&m.bytes).map_err(not_json)?;
        if is_index(&m.media_type, &doc) {
            let entry = pick_platform(&doc, platform, what).map_err(CallError::Failed)?;
            let digest = digest_of(entry, what).map_err(CallError::Failed)?;
            m = self.get_manifest(repo, &digest).await?;
            doc = serde_json::from_slice(&m.bytes).map_err(not_json)?;
        }
        Ok(Some(doc))
    }

    /// The config document of the image `repo:reference` for `platform`
    /// ([`Self::platform_manifest`]), checked against its digest and at
    /// most 4 MiB. `None` when the registry has no such image.
    pub async fn image_config(
        &self,
        repo: &str,
        reference: &str,
        platform: &crate::Platform,
    ) -> Result<Option<serde_json::Value>, CallError> {
        let what = format!("{}/{repo}:{reference}", self.base);
        let Some(doc) = self
            .platform_manifest(repo, reference, platform, &what)
            .await?
        else {
            return Ok(None);
        };
        let config = doc
            .get("config")
            .ok_or_else(|| CallError::Failed(format!("{what}: the manifest has no config")))
            .and_then(|c| crate::manifest::digest_of(c, &what).map_err(CallError::Failed))?;
        let bytes = self.get_small_blob(repo, &config, MANIFEST_LIMIT).await?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CallError::Failed(format!("{what}: the config is not JSON: {e}")))
    }

    /// `GET` the blob `digest` of `repo` whole (a config or another
    /// document), verified against the digest; more than `limit` bytes is
    /// an error, so what a registry sends is bounded before it is parsed.
    pub async fn get_small_blob(
        &self,
        repo: &str,
        digest: &str,
        limit: usize,
    ) -> Result<Vec<u8>, CallError> {
        let mut out = Capped {
            bytes: Vec::new(),
            limit,
        };
        self.get_blob_to(repo, digest, &mut out).await?;
        Ok(out.bytes)
    }

    /// Upload the blob `digest` of `size` bytes, read by `read(offset,
    /// len)` a piece at a time, so memory holds one piece whatever the
    /// blob's size: one `PUT` when it fits in `piece` bytes, else a
    /// `PATCH` per piece (with its `Content-Range`, each to the `Location`
    /// the last one answered) and a closing `PUT` with the digest.
    pub async fn upload_blob_from(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        piece: usize,
        read: &mut (dyn FnMut(u64, usize) -> std::io::Result<Bytes> + Send),
    ) -> Result<(), CallError> {
        let what = format!("uploading blob {digest} to {repo}");
        let piece = piece.max(1);
        if size <= piece as u64 {
            let data = read(0, size as usize)
                .map_err(|e| CallError::Failed(format!("{what}: reading it: {e}")))?;
            return self.upload_blob(repo, digest, data).await;
        }
        let mut location = self.start_upload(repo, &what).await?;
        let mut at = 0u64;
        while at < size {
            let len = (size - at).min(piece as u64) as usize;
            let data =
                read(at, len).map_err(|e| CallError::Failed(format!("{what}: reading it: {e}")))?;
            if data.len() != len {
                return Err(CallError::Failed(format!(
                    "{what}: the blob is shorter than its {size} bytes"
                )));
            }
            let range = format!("{at}-{}", at + len as u64 - 1);
            let length = len.to_string();
            let answered = self
                .expect(
                    &what,
                    Method::PATCH,
                    &location,
                    &[
                        (header::CONTENT_TYPE, "application/octet-stream"),
                        (header::CONTENT_RANGE, &range),
                        (header::CONTENT_LENGTH, &length),
                    ],
                    Some(data),
                )
                .await?;
            location = upload_location(&answered, &what)?;
            at += len as u64;
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        self.expect(
            &what,
            Method::PUT,
            &format!("{location}{sep}digest={digest}"),
            &[(header::CONTENT_LENGTH, "0")],
            Some(Bytes::new()),
        )
        .await?;
        Ok(())
    }

    /// Start an upload (`POST`); its `Location`.
    async fn start_upload(&self, repo: &str, what: &str) -> Result<String, CallError> {
        let started = self
            .expect(
                what,
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[(header::CONTENT_LENGTH, "0")],
                Some(Bytes::new()),
            )
            .await?;
        upload_location(&started, what)
    }

    /// How to answer a challenge: Basic with our credentials, or a Bearer
    /// token fetched from the realm (with our credentials, if any).
    async fn authorization(&self, challenge: &str) -> Result<Option<Auth>, String> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Ok(self.credentials.as_ref().map(|_| Auth::Basic));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "{} asks for unsupported authentication {scheme:?}",
                self.base
            ));
        }
        let params = parse_params(params);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("{}: Bearer challenge without a realm", self.base))?;
        let mut req = self.client.get(&realm);
        let query: Vec<(&str, &str)> = params
            .iter()
            .filter(|(k, _)| k == "service" || k == "scope")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        req = req.query(&query);
        if let Some(c) = &self.credentials {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        let response = req
            .send()
            .await
            .map_err(|e| format!("token request to {realm}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "the token service {realm} refused the credentials ({})",
                response.status()
            ));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("token from {realm} is not JSON: {e}"))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| format!("the token service {realm} sent no token"))?;
        Ok(Some(Auth::Bearer(token.to_string())))
    }
}

/// Why a registry call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Credentials missing or refused (401/403).
    Denied(String),
    /// The registry could not be reached, or kept answering 429/5xx.
    Unavailable(String),
    /// Any other refusal (404, 400, a digest mismatch), with the registry's words.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(m) | Self::Unavailable(m) | Self::Failed(m) => f.write_str(m),
        }
    }
}

#[derive(Clone)]
enum Auth {
    Basic,
    Bearer(String),
}

/// `key="value", key2="value2"` from a challenge.
fn parse_params(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_string()));
        rest = next.trim_start_matches(',').trim();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = parse_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:team/app:pull".into()),
            ]
        );
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
