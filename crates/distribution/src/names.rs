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

/// `text` with the user information of any address in it (`user:password@`
/// after `scheme://` or at the start) replaced by `***@`: fit to print when
/// someone wrote credentials into an address.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let start = word.find("://").map_or(0, |i| i + 3);
        let authority_end = word[start..].find('/').map_or(word.len(), |i| start + i);
        match word[start..authority_end].rfind('@') {
            Some(at) => {
                out.push_str(&word[..start]);
                out.push_str("***");
                out.push_str(&word[start + at..]);
            }
            None => out.push_str(word),
        }
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
    /// Normalise `uri`: scheme and trailing `/` stripped. Refused, naming
    /// what was wrong: credentials (`user:password@`, never echoed), a tag or
    /// digest, a host that is not one by Docker's grammar or that Docker
    /// would read as a Docker Hub user (`team`: no `.`, no port, not
    /// `localhost`), a port outside 1-65535, a namespace that is not a
    /// repository path (lowercase, `[a-z0-9]` separated by `.`, `_`, `__`
    /// or `-`).
    pub fn parse(uri: &str) -> Result<Self, String> {
        let trimmed = uri.trim();
        let trimmed = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .unwrap_or(trimmed);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(format!("registry uri {:?} is empty", printable(uri)));
        }
        let (host, namespace) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if host.contains('@') {
            // Whatever precedes `@` may be a password: never printed.
            let after = host.rsplit('@').next().unwrap_or("");
            return Err(format!(
                "registry uri \"...@{}\" holds credentials: give them as the registry's \
                 username and password (or Docker's login), never inside the address",
                printable(after)
            ));
        }
        let shown = printable(uri);
        if namespace.contains('@') {
            return Err(format!(
                "registry uri {shown:?} contains a digest; give host[:port][/namespace] only"
            ));
        }
        if namespace.contains(':') {
            return Err(format!(
                "registry uri {shown:?} contains a tag; give host[:port][/namespace] only"
            ));
        }
        check_host(host).map_err(|why| format!("registry uri {shown:?}: {why}"))?;
        if !namespace.is_empty() && !namespace.split('/').all(is_path_component) {
            return Err(format!(
                "registry uri {shown:?}: namespace {:?} is not a repository path (lowercase \
                 letters and digits, separated by '.', '_', '__' or '-', parts joined by '/')",
                printable(namespace)
            ));
        }
        let host = match host.to_ascii_lowercase().as_str() {
            "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
            _ => host.to_string(),
        };
        Ok(Self {
            host,
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
        // Host names are case-insensitive (DNS); paths are not.
        if !reference.registry().eq_ignore_ascii_case(&self.host) {
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
    let reference = parse_reference(image)
        .map_err(|e| format!("invalid reference format: {e}: {:?}", printable(image)))?;
    // Docker refuses a name that is 64 hex digits (it reads as an image ID).
    let name = split_tag(image.split('@').next().unwrap_or(image)).0;
    if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid repository name ({name}), cannot specify 64-byte hexadecimal strings"
        ));
    }
    Ok(reference)
}

/// Docker's reference grammar (distribution's `reference` package) by
/// hand, with its normalisation (`docker.io`, `library/`, `latest`): the
/// same answers as oci-spec's `Reference` parser, whose regular expression
/// takes tens of milliseconds to compile at every start of kiln. Tags are
/// ASCII word characters, as in Docker's (Go) grammar.
fn parse_reference(s: &str) -> Result<Reference, &'static str> {
    const INVALID: &str = "invalid reference format";
    if s.is_empty() {
        return Err("repository name must have at least one component");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let parts: Vec<&str> = name.split('/').collect();
    let path_ok = |p: &[&str]| !p.is_empty() && p.iter().all(|c| is_path_component(c));
    let name_ok =
        path_ok(&parts) || (parts.len() > 1 && is_domain(parts[0]) && path_ok(&parts[1..]));
    if !name_ok {
        return Err(INVALID);
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    if let Some(t) = tag {
        let ok = (1..=128).contains(&t.len())
            && word(t.as_bytes()[0])
            && t.bytes().all(|b| word(b) || b == b'.' || b == b'-');
        if !ok {
            return Err(INVALID);
        }
    }
    if let Some(d) = digest {
        let (algorithm, hex) = d.split_once(':').ok_or(INVALID)?;
        let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|c| {
            c.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && c.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(INVALID);
        }
        let want = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err("unsupported digest algorithm"),
        };
        if hex.len() != want {
            return Err("invalid checksum digest length");
        }
    }
    // The registry: a first part with a '.' or ':', or localhost.
    let (mut registry, mut repository) = match name.split_once('/') {
        Some((first, after))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), after.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if registry == "index.docker.io" {
        registry = "docker.io".to_string();
    }
    if registry == "docker.io" && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    if repository.len() > 255 {
        return Err("repository name must not be more than 255 characters");
    }
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(registry, repository, t.to_string(), d.to_string())
        }
        (None, Some(d)) => Reference::with_digest(registry, repository, d.to_string()),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest").to_string()),
    })
}

/// A registry host as the reference grammar has it: DNS-like labels of
/// letters, digits and inner `-`, joined by `.`, and an optional `:port`.
fn is_domain(host: &str) -> bool {
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.split('.').all(label)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A registry host by Docker's grammar: DNS labels joined by `.` (or an
/// IPv6 literal in brackets), an optional port 1-65535; and one Docker
/// reads as a registry (a `.` or a port, or `localhost`).
fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(|| {
            format!(
                "{:?} opens an IPv6 literal and never closes it",
                printable(host)
            )
        })?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("[{}] is not an IPv6 address", printable(v6)));
        }
        match after {
            "" => (None, None),
            p => (
                None,
                Some(p.strip_prefix(':').ok_or_else(|| {
                    format!("{:?}: after an IPv6 literal comes :port", printable(host))
                })?),
            ),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) || port.starts_with('+') {
            return Err(format!(
                "port {:?} is not a number from 1 to 65535",
                printable(port)
            ));
        }
    }
    if let Some(name) = name {
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !name.split('.').all(label) {
            return Err(format!(
                "{:?} is not a host name (letters, digits and '-' in labels joined by '.')",
                printable(name)
            ));
        }
        if port.is_none() && !name.contains('.') && !name.eq_ignore_ascii_case("localhost") {
            return Err(format!(
                "{name:?} is not a registry host: Docker reads {name}/app as docker.io/{name}/app; \
                 give a host with a domain (reg.example.com), a port (host:5000) or localhost"
            ));
        }
    }
    Ok(())
}

/// One path component of a repository by Docker's grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_lowercase() && !bytes[0].is_ascii_digit()
        || !bytes[bytes.len() - 1].is_ascii_lowercase() && !bytes[bytes.len() - 1].is_ascii_digit()
    {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        while i < bytes.len() && matches!(bytes[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &part[start..i];
        // Nothing consumed: a byte the grammar has no place for.
        let ok = !sep.is_empty()
            && (sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-'));
        if !ok {
            return false;
        }
    }
    true
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
        for ok in [
            "localhost:5000/",
            "REG.io:5000",
            "[::1]:5000",
            "[::1]",
            "reg.io/a/b-c/d__e",
            "LOCALHOST",
            "Index.Docker.IO/me",
        ] {
            assert!(RegistryUri::parse(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("foo", "not a registry host"),
            ("https://Reg.io/Team:tag", "tag"),
            ("reg.io:99999", "1 to 65535"),
            ("reg.io:0", "1 to 65535"),
            ("reg io", "not a host name"),
            ("http://reg.io/a//b", "not a repository path"),
            ("reg.io/UP", "not a repository path"),
            // A byte no rule covers, inside a part (this once spun forever).
            ("reg.io/aUb", "not a repository path"),
            ("reg.io/a!b", "not a repository path"),
            ("-bad.io", "not a host name"),
            ("[::g]:5000", "not an IPv6"),
        ] {
            let err = RegistryUri::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = RegistryUri::parse("https://user:s3cret@reg.io/team").expect_err("credentials");
        assert!(
            err.contains("credentials") && !err.contains("s3cret"),
            "{err}"
        );
        assert!(!err.contains("user:"), "{err}");
    }

    #[test]
    fn user_information_is_redacted() {
        assert_eq!(
            redact_userinfo("\"https://me:pw@reg.io/x\" does not match"),
            "\"https://***@reg.io/x\" does not match"
        );
        assert_eq!(redact_userinfo("me:pw@reg.io"), "***@reg.io");
        assert_eq!(redact_userinfo("reg.io/a@sha256:00"), "reg.io/a@sha256:00");
    }

    #[test]
    fn hosts_are_case_insensitive_and_64_hex_names_refused() {
        assert!(owns("REG.io:5000", "reg.io:5000/app:1"));
        assert!(owns("reg.io", "Reg.IO/app:1"));
        let hex = "0123456789abcdef".repeat(4);
        assert!(parse(&hex).is_err());
        assert!(parse(&format!("{hex}:1")).is_err());
        assert!(
            parse(&format!("reg.io/{hex}:1")).is_ok(),
            "a path part may be hex"
        );
        assert!(parse(&hex[..63]).is_ok());
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
        assert!(RegistryUri::parse("team").is_err());
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
    fn references_parse_as_oci_specs_parser_does() {
        let hex = "0123456789abcdef".repeat(4);
        let long = "a".repeat(250);
        let cases = [
            "busybox",
            "busybox:1.36",
            "library/busybox",
            "docker.io/library/busybox:latest",
            "index.docker.io/me/app",
            "me/app:v1",
            "test.com:tag",
            "test.com:5000",
            "test.com:5000/app",
            "test.com:5000/app:v2",
            "localhost/app",
            "localhost:5000/a/b/c:1",
            "127.0.0.1:5000/x",
            "Reg.IO/app:1",
            "reg.io/App:1",
            "Hello:1",
            "hello::x",
            "hello:bad tag",
            "hello:",
            ":tag",
            "/app",
            "app/",
            "a//b",
            "a__b/c.d-e---f",
            "a___b",
            "a._b",
            "-a",
            "a-",
            "reg-.io/a",
            "reg.-io/a",
            "reg..io/a",
            "reg.io:/a",
            "reg.io:x/a",
            "[::1]:5000/a",
            "app:v1.2-rc_3",
            "app:.x",
            "app:-x",
            "app:_x",
            "app@sha256:",
            "app@sha256:abc",
            "app@sha512:abcd",
            "app@md5:0123456789abcdef0123456789abcdef",
            "app@Sha256:0123",
            "app@sha256+x.y_z-w:0123456789abcdef0123456789abcdef",
            "app@1sha:0123456789abcdef0123456789abcdef",
            "app@sha256:xyz",
            "a@b@c",
            "a:b:c",
            "a:b/c",
        ];
        let owned: Vec<String> = [
            format!("app@sha256:{hex}"),
            format!("app:v1@sha256:{hex}"),
            format!("reg.io:5000/team/app:v1@sha256:{hex}"),
            format!("app@sha256:{}", &hex[..63]),
            format!("app@sha384:{hex}{}", &hex[..32]),
            format!("app:{}", "t".repeat(128)),
            format!("app:{}", "t".repeat(129)),
            format!("reg.io/{long}"),
            format!("reg.io/{long}/abcdef"),
            long.clone(),
        ]
        .into_iter()
        .collect();
        for case in cases
            .iter()
            .copied()
            .chain(owned.iter().map(String::as_str))
        {
            let ours = parse_reference(case);
            let theirs = case.parse::<Reference>();
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(
                    (a.registry(), a.repository(), a.tag(), a.digest()),
                    (b.registry(), b.repository(), b.tag(), b.digest()),
                    "{case}"
                ),
                (Err(a), Err(b)) => assert_eq!(*a, b.to_string(), "{case}"),
                _ => panic!("{case}: ours {ours:?}, oci-spec's {theirs:?}"),
            }
        }
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
