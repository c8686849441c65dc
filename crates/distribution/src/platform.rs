//! The platform an image is for, `os/arch[/variant]`: one type for the
//! host's `--platform` check, the `oci` builder's base selection and the
//! `default` registry's existence checks.

use std::fmt;

/// `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `v8`, `v7`, ... when any.
    pub variant: Option<String>,
}

impl Platform {
    /// Parse `os/arch[/variant]` (buildx's `--platform` spelling, one value).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("platform {text:?}: expected os/arch[/variant], e.g. linux/amd64");
        let parts: Vec<&str> = text.split('/').collect();
        let word = |s: &&str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, ""] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(*v)),
            _ => return Err(bad()),
        };
        if !word(&os) || !word(&arch) || !variant.as_ref().is_none_or(word) {
            return Err(bad());
        }
        Ok(Self {
            os: os.to_ascii_lowercase(),
            architecture: arch.to_ascii_lowercase(),
            variant: variant.map(str::to_ascii_lowercase),
        })
    }

    /// Parse buildx's comma-separated list (`linux/amd64,linux/arm64`):
    /// one or more platforms, each once, in the order given.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let mut list: Vec<Self> = Vec::new();
        for item in text.split(',') {
            let p = Self::parse(item.trim())?;
            if list.contains(&p) {
                return Err(format!("platform {p} is named twice"));
            }
            list.push(p);
        }
        Ok(list)
    }

    /// Print a list as [`Platform::parse_list`] reads it.
    pub fn join(list: &[Self]) -> String {
        list.iter()
            .map(Self::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The machine kiln runs on, in OCI's architecture names.
    pub fn host() -> Self {
        Self {
            os: "linux".into(),
            architecture: host_architecture().into(),
            variant: None,
        }
    }

    /// BuildKit's automatic platform ARGs for a build targeting this
    /// platform on this machine: `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`,
    /// `TARGETVARIANT` and the same four `BUILD*` for the machine.
    pub fn build_args(&self) -> std::collections::BTreeMap<String, String> {
        let build = Self::host();
        let mut args = std::collections::BTreeMap::new();
        for (prefix, p) in [("TARGET", self), ("BUILD", &build)] {
            args.insert(format!("{prefix}PLATFORM"), p.to_string());
            args.insert(format!("{prefix}OS"), p.os.clone());
            args.insert(format!("{prefix}ARCH"), p.architecture.clone());
            args.insert(
                format!("{prefix}VARIANT"),
                p.variant.clone().unwrap_or_default(),
            );
        }
        args
    }

    /// Whether an image of `os`/`architecture`/`variant` serves this
    /// platform: `linux/arm64` accepts `linux/arm64/v8`; a variant asked for
    /// must match.
    pub fn accepts(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        os == self.os
            && architecture == self.architecture
            && self
                .variant
                .as_deref()
                .is_none_or(|v| variant.unwrap_or("") == v)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The OCI architecture name of the machine kiln runs on.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_print_and_match() {
        let p = Platform::parse("linux/arm64").expect("platform");
        assert_eq!(p.to_string(), "linux/arm64");
        assert!(p.accepts("linux", "arm64", Some("v8")));
        assert!(p.accepts("linux", "arm64", None));
        assert!(!p.accepts("linux", "amd64", None));
        let v7 = Platform::parse("linux/arm/v7").expect("platform");
        assert_eq!(v7.to_string(), "linux/arm/v7");
        assert!(!v7.accepts("linux", "arm", Some("v6")));
        assert!(!v7.accepts("linux", "arm", None));
        assert_eq!(
            Platform::parse("Linux/AMD64").expect("case").to_string(),
            "linux/amd64"
        );
        for bad in [
            "linux",
            "",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/am d64",
            "linux,amd64",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        let list = Platform::parse_list("linux/amd64, linux/arm64/v8").expect("list");
        assert_eq!(Platform::join(&list), "linux/amd64,linux/arm64/v8");
        for bad in ["linux/amd64,", "linux/amd64,linux/AMD64", ",linux/arm64"] {
            assert!(Platform::parse_list(bad).is_err(), "{bad}");
        }
    }
}
