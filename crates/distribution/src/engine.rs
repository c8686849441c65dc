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

/// Where an engine listens, by its address's scheme (Docker's:
/// `unix:///path/to/docker.sock`, `tcp://host:port`, `http://host:port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A Unix socket at this path.
    Unix(&'a str),
    /// A TCP address (`host:port`), spoken to in plain HTTP.
    Tcp(&'a str),
}

/// The endpoint `host` names, or what is wrong with it.
pub fn endpoint(host: &str) -> Result<Endpoint<'_>, String> {
    if let Some(path) = host.strip_prefix("unix://") {
        return Ok(Endpoint::Unix(path));
    }
    host.strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
        .map(|addr| Endpoint::Tcp(addr.trim_end_matches('/')))
        .ok_or_else(|| {
            format!("{host:?} is neither unix:// nor tcp://: use unix:///path/to/docker.sock or tcp://host:port")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_address_is_a_unix_socket_or_a_tcp_address() {
        assert_eq!(
            endpoint("unix:///var/run/docker.sock"),
            Ok(Endpoint::Unix("/var/run/docker.sock"))
        );
        assert_eq!(
            endpoint("tcp://127.0.0.1:2375"),
            Ok(Endpoint::Tcp("127.0.0.1:2375"))
        );
        assert_eq!(
            endpoint("http://engine:2375/"),
            Ok(Endpoint::Tcp("engine:2375"))
        );
        for bad in [
            "/var/run/docker.sock",
            "ssh://me@host",
            "npipe:////./pipe/docker_engine",
        ] {
            assert!(endpoint(bad).is_err_and(|e| e.contains(bad)), "{bad}");
        }
    }
}
