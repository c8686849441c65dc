//! Image names, one copy of each rule: splitting a reference at its tag,
//! registry URIs, image membership by Docker's reference grammar (the
//! `oci-spec` parser, a port of distribution's `reference` package), never
//! by string prefix (`localhost:5000` is not `localhost:50001`, `reg.io/team`
//! is not `reg.io/teammate`, `ubuntu` is `docker.io/library/ubuntu`), and
//! which hosts are this machine.

use std::net::{Ipv4Addr, Ipv6Addr};

use oci_spec::distribution::Reference;

/// Split `name[:tag]` at the tag's colon (a registry port's colon is not a
/// tag). A reference with a digest (`@sha256:...`) is left whole, with no
/// tag. Callers that need Docker's implied tag write `.unwrap_or("latest")`.
pub fn split_tag(reference: &str) -> (&str, Option<&str>) {
    if reference.contains('@') {
        return (reference, None);
    }
    match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => (&reference[..i], Some(&reference[i + 1..])),
        _ => (reference, None),
    }
}

/// Whether `host` (`name[:port]`, `[v6]:port`, any case) is this machine:
/// `localhost`, 127.0.0.0/8 or `::1`, as the Docker daemon treats them.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim();
    if host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        }
    };
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        || bare.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// `text` fit to print inside an error: control characters (terminal
/// escape sequences among them) shown escaped, at most 200 characters.
pub fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(200)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > 200 {
        out.push_str("...");
    }
    out
}

/// A registry URI: host (with port) and an optional namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUri {
    /// `host[:port]`, Docker Hub spelled `docker.io`.
    pub host: String,
    /// Repository path prefix (no leading or trailing `/`), possibly empty.
    pub namespace: String,
}

impl RegistryUri {
    /// Normalise `uri`: scheme and trailing `/` stripped; a tag or digest is
    /// an error naming what was found.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let trimmed = uri
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(format!("registry uri {uri:?} is empty"));
        }
        if trimmed.contains('@') {
            return Err(format!(
                "registry uri {uri:?} contains a digest; give host[:port][/namespace] only"
            ));
        }
        let (host, namespace) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if namespace.contains(':') {
            return Err(format!(
                "registry uri {uri:?} contains a tag; give host[:port][/namespace] only"
            ));
        }
        let host = match host {
            "index.docker.io" | "registry-1.docker.io" => "docker.io",
            other => other,
        };
        Ok(Self {
            host: host.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// `host[/namespace]`.
    pub fn display(&self) -> String {
        if self.namespace.is_empty() {
            self.host.clone()
        } else {
            format!("{}/{}", self.host, self.namespace)
        }
    }

    /// Whether `image` belongs to this registry (and namespace).
    pub fn owns(&self, image: &str) -> Result<bool, String> {
        let reference = parse(image)?;
        if reference.registry() != self.host {
            return Ok(false);
        }
        let repo = reference.repository();
        Ok(self.namespace.is_empty()
            || repo == self.namespace
            || repo
                .strip_prefix(self.namespace.as_str())
                .is_some_and(|rest| rest.starts_with('/')))
    }

    /// Whether kiln talks plain HTTP to this host: loopback always (as the
    /// Docker daemon treats 127.0.0.0/8), others only when `insecure`.
    pub fn plain_http(&self, insecure: bool) -> bool {
        insecure || is_loopback(&self.host)
    }

    /// The API host for requests (Docker Hub's API lives elsewhere).
    pub fn api_host(&self) -> &str {
        if self.host == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.host
        }
    }
}

/// Parse an image reference, with Docker's messages.
pub fn parse(image: &str) -> Result<Reference, String> {
    image
        .parse::<Reference>()
        .map_err(|e| format!("invalid reference format: {e}: {image:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owns(uri: &str, image: &str) -> bool {
        RegistryUri::parse(uri)
            .expect("uri")
            .owns(image)
            .expect("reference")
    }

    #[test]
    fn uris_are_normalised_and_tags_refused() {
        let u = RegistryUri::parse("https://Reg.io:5000/team/").expect("uri");
        assert_eq!(u.host, "Reg.io:5000");
        assert_eq!(u.namespace, "team");
        assert_eq!(
            RegistryUri::parse("index.docker.io/me").expect("uri").host,
            "docker.io"
        );
        assert!(RegistryUri::parse("reg.io/team/app:1").is_err());
        assert!(RegistryUri::parse("reg.io/app@sha256:00").is_err());
        assert!(RegistryUri::parse("http:///").is_err());
    }

    #[test]
    fn membership_follows_the_reference_grammar() {
        assert!(owns("localhost:5000", "localhost:5000/app:1"));
        assert!(!owns("localhost:5000", "localhost:50001/app:1"));
        assert!(!owns("localhost:50001", "localhost:5000/app:1"));
        assert!(owns("reg.io/team", "reg.io/team/app"));
        assert!(owns("reg.io/team", "reg.io/team/sub/app:2"));
        assert!(!owns("reg.io/team", "reg.io/teammate/app"));
        assert!(!owns("reg.io/team", "reg.io/app"));
        assert!(owns("docker.io", "ubuntu"));
        assert!(owns("docker.io/library", "ubuntu:22.04"));
        assert!(owns("index.docker.io/me", "me/app"));
        assert!(!owns("docker.io/me", "mean/app"));
        // No dot, no port, not localhost: a Docker Hub user, not a registry.
        assert!(!owns("team", "team/app"));
        assert!(owns("127.0.0.1:5000", "127.0.0.1:5000/x"));
    }

    #[test]
    fn invalid_references_give_dockers_message() {
        let u = RegistryUri::parse("reg.io").expect("uri");
        let err = u.owns("reg.io/App:1").expect_err("uppercase");
        assert!(err.contains("invalid reference format"), "{err}");
        assert!(u.owns("reg.io/app:bad tag").is_err());
    }

    #[test]
    fn tags_split_at_the_tag_not_the_port() {
        assert_eq!(split_tag("app"), ("app", None));
        assert_eq!(split_tag("app:1"), ("app", Some("1")));
        assert_eq!(
            split_tag("localhost:5000/app"),
            ("localhost:5000/app", None)
        );
        assert_eq!(
            split_tag("localhost:5000/app:v2"),
            ("localhost:5000/app", Some("v2"))
        );
        assert_eq!(split_tag("app@sha256:ab"), ("app@sha256:ab", None));
    }

    #[test]
    fn loopback_is_localhost_127_and_v6_one_in_any_case() {
        for yes in [
            "localhost",
            "LocalHost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "localhost.evil.io",
            "127.example.com",
            "10.0.0.1:5000",
            "[::2]:5000",
            "reg.io",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn loopback_is_plain_http() {
        assert!(RegistryUri::parse("127.0.0.1:5000")
            .expect("uri")
            .plain_http(false));
        assert!(RegistryUri::parse("localhost:5000")
            .expect("uri")
            .plain_http(false));
        assert!(!RegistryUri::parse("reg.io").expect("uri").plain_http(false));
        assert!(RegistryUri::parse("reg.io").expect("uri").plain_http(true));
    }
}
