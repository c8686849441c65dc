//! Build orchestration: plan (context, image names, builder, checks), decide
//! whether to build, run the builder, report. The plan is made the same way
//! for `--dry-run` and for a real build; only a real build constructs the
//! builder or contacts anything.

pub mod dockerfile;

use sha1::{Digest, Sha1};

/// How long a derived tag is (hex characters of its hash).
const DERIVED_TAG_LEN: usize = 16;

/// The inputs that decide what a build produces, hashed into the derived tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagInputs<'a> {
    /// sha1 of the uncompressed context archive (after any context hook).
    pub context_sha1: &'a str,
    /// The Dockerfile's path inside the context.
    pub dockerfile: &'a str,
    /// `--build-arg` pairs.
    pub build_args: &'a [(String, String)],
    /// `--target`.
    pub target: Option<&'a str>,
    /// `--platform`.
    pub platform: Option<&'a str>,
}

/// The tag for an image named without one: a hash of everything that
/// decides the result, so unchanged input always maps to the same tag.
/// Build args are sorted first: their order on the command line does not
/// change the image.
pub fn derived_tag(inputs: &TagInputs<'_>) -> String {
    let mut hasher = Sha1::new();
    hasher.update(b"kiln-tag-v1\0");
    hasher.update(inputs.context_sha1.as_bytes());
    hasher.update(b"\0");
    hasher.update(inputs.dockerfile.as_bytes());
    let mut args: Vec<&(String, String)> = inputs.build_args.iter().collect();
    args.sort();
    for (k, v) in args {
        hasher.update(b"\0arg\0");
        hasher.update(k.as_bytes());
        hasher.update(b"=");
        hasher.update(v.as_bytes());
    }
    hasher.update(b"\0target\0");
    hasher.update(inputs.target.unwrap_or("").as_bytes());
    hasher.update(b"\0platform\0");
    hasher.update(inputs.platform.unwrap_or("").as_bytes());
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex[..DERIVED_TAG_LEN].to_string()
}

/// Split `name[:tag]` at the tag's colon (a registry port's colon is not a
/// tag). Digests (`@sha256:...`) are left in the name.
pub fn split_tag(reference: &str) -> (&str, Option<&str>) {
    if reference.contains('@') {
        return (reference, None);
    }
    match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => (&reference[..i], Some(&reference[i + 1..])),
        _ => (reference, None),
    }
}

/// A default image name from the context folder's name, as Docker Compose
/// does for projects: lowercase, with characters outside `[a-z0-9._-]`
/// replaced by `-`.
pub fn default_name(folder: &str) -> String {
    let mut name: String = folder
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if name.is_empty() {
        "kiln-image".into()
    } else {
        name
    }
}

/// One checker's answer to "does this image already exist?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckAnswer {
    /// It exists, with this digest (`uri@sha256:...`).
    Exists(String),
    /// It does not exist.
    Absent,
    /// The checker could not tell, and why.
    Unknown(String),
}

/// What to do, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Build.
    Build {
        /// Why (shown to the user and in `--json`).
        reason: String,
    },
    /// Do not build: the image exists.
    Skip {
        /// The existing image's digest.
        digest: String,
        /// Why.
        reason: String,
    },
}

/// Whether the existence checks run at all for this tag.
pub fn checks_apply(tag: &str, force: bool) -> Result<(), String> {
    if force {
        return Err("--force: always build".into());
    }
    if tag == "latest" {
        return Err("tag `latest` always builds (it moves)".into());
    }
    Ok(())
}

/// Flyte's rule, with ZenML's names: `latest` and `--force` always build; any
/// checker that finds the image skips the build; an image every checker
/// calls absent or unknown is built (with no checkers: built).
pub fn decide(tag: &str, force: bool, answers: &[(String, CheckAnswer)]) -> Decision {
    if let Err(reason) = checks_apply(tag, force) {
        return Decision::Build { reason };
    }
    if let Some((checker, CheckAnswer::Exists(digest))) = answers
        .iter()
        .find(|(_, a)| matches!(a, CheckAnswer::Exists(_)))
    {
        return Decision::Skip {
            digest: digest.clone(),
            reason: format!("{checker} has it already"),
        };
    }
    if answers.is_empty() {
        return Decision::Build {
            reason: "no existence checker configured".into(),
        };
    }
    if answers
        .iter()
        .all(|(_, a)| matches!(a, CheckAnswer::Unknown(_)))
    {
        let why: Vec<String> = answers
            .iter()
            .map(|(c, a)| match a {
                CheckAnswer::Unknown(r) => format!("{c}: {r}"),
                _ => String::new(),
            })
            .collect();
        return Decision::Build {
            reason: format!("no checker could tell ({})", why.join("; ")),
        };
    }
    Decision::Build {
        reason: "not found by any checker".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(sha: &'a str, args: &'a [(String, String)]) -> TagInputs<'a> {
        TagInputs {
            context_sha1: sha,
            dockerfile: "Dockerfile",
            build_args: args,
            target: None,
            platform: None,
        }
    }

    #[test]
    fn derived_tags_follow_every_input_and_nothing_else() {
        let a = [("A".to_string(), "1".to_string()), ("B".into(), "2".into())];
        let b = [("B".to_string(), "2".to_string()), ("A".into(), "1".into())];
        let base = derived_tag(&inputs("abc", &a));
        assert_eq!(base.len(), 16);
        assert_eq!(base, derived_tag(&inputs("abc", &a)));
        assert_eq!(
            base,
            derived_tag(&inputs("abc", &b)),
            "arg order does not matter"
        );
        assert_ne!(base, derived_tag(&inputs("abd", &a)));
        let mut other = inputs("abc", &a);
        other.dockerfile = "sub/Dockerfile";
        assert_ne!(base, derived_tag(&other));
        let mut other = inputs("abc", &a);
        other.target = Some("final");
        assert_ne!(base, derived_tag(&other));
        let mut other = inputs("abc", &a);
        other.platform = Some("linux/arm64");
        assert_ne!(base, derived_tag(&other));
        let changed = [("A".to_string(), "1".to_string()), ("B".into(), "3".into())];
        assert_ne!(base, derived_tag(&inputs("abc", &changed)));
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
    fn default_names_are_valid_repositories() {
        assert_eq!(default_name("My App!"), "my-app");
        assert_eq!(default_name("hello_world.v2"), "hello_world.v2");
        assert_eq!(default_name("___"), "kiln-image");
    }

    fn named(answers: &[CheckAnswer]) -> Vec<(String, CheckAnswer)> {
        answers
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("checker{i}"), a.clone()))
            .collect()
    }

    #[test]
    fn the_existence_rules() {
        use CheckAnswer::*;
        let exists = Exists("reg/app@sha256:1".into());
        let unknown = Unknown("503".into());
        // latest and --force always build, whatever the checkers say.
        assert!(matches!(
            decide("latest", false, &named(std::slice::from_ref(&exists))),
            Decision::Build { .. }
        ));
        assert!(matches!(
            decide("v1", true, &named(std::slice::from_ref(&exists))),
            Decision::Build { .. }
        ));
        // Any checker that has it: skip, with its digest.
        match decide(
            "v1",
            false,
            &named(&[Absent, unknown.clone(), exists.clone()]),
        ) {
            Decision::Skip { digest, reason } => {
                assert_eq!(digest, "reg/app@sha256:1");
                assert!(reason.contains("checker2"));
            }
            other => panic!("{other:?}"),
        }
        // Absent, or all unknown, or no checkers: build.
        assert!(matches!(
            decide("v1", false, &named(&[Absent])),
            Decision::Build { .. }
        ));
        match decide("v1", false, &named(&[unknown.clone(), unknown])) {
            Decision::Build { reason } => assert!(reason.contains("503"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decide("v1", false, &[]), Decision::Build { .. }));
    }
}
