//! Where the local Docker Engine listens, by Docker's own rule: the
//! configured host, else `DOCKER_HOST`, else the default socket. The
//! `local` builder and the `oci` builder's engine source share it.

/// The socket used when neither the config nor `DOCKER_HOST` names an engine.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// `configured`, else a non-empty `DOCKER_HOST`, else [`DEFAULT_DOCKER_HOST`].
#[allow(clippy::disallowed_methods)] // the one home of DOCKER_HOST
pub fn docker_host(configured: Option<&str>) -> String {
    configured
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string())
}
