//! The registry HTTP API v2, as far as existence checks need it: manifest
//! HEAD (and GET for indexes), Basic and Bearer token auth, bounded retries
//! of 429 and 5xx. No daemon involved.

use std::time::Duration;

use reqwest::{header, Client, Method, Response, StatusCode};

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

/// How a request ended, as the existence check needs it.
#[derive(Debug)]
pub enum Outcome {
    /// A final answer.
    Response(Response),
    /// 401/403 with the credentials we have (or none).
    Denied(String),
    /// Retries used up, or the registry cannot be reached.
    Unknown(String),
}

/// A small client for one registry.
pub struct RegistryClient {
    client: Client,
    base: String,
    credentials: Option<Credentials>,
    retries: u32,
}

impl RegistryClient {
    /// `base` is `http(s)://host[:port]`.
    pub fn new(
        base: String,
        credentials: Option<Credentials>,
        timeout: Duration,
        retries: u32,
    ) -> Result<Self, String> {
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("kiln-registry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self {
            client,
            base,
            credentials,
            retries,
        })
    }

    /// `method` on `/v2/<path>`, with auth negotiated and retries.
    pub async fn request(&self, method: Method, path: &str, accept: &str) -> Outcome {
        let url = format!("{}/v2/{path}", self.base);
        let mut auth: Option<Auth> = None;
        let mut negotiated = false;
        let mut attempt = 0u32;
        loop {
            let mut req = self
                .client
                .request(method.clone(), &url)
                .header(header::ACCEPT, accept);
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
                        "cannot connect".to_string()
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
                if attempt < self.retries {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
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
