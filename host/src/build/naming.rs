//! Step 4 of a build: the image names. `-t` names, else the context
//! folder's name (or, with a registry, `<registry address>/<default
//! repository or folder name>`); a name without a tag gets the derived tag.

use kiln_distribution::split_tag;
use sha1::{Digest, Sha1};

use crate::components::RegistryAddress;

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

/// The images a build produces: `tags` when given, else one name from the
/// context `folder` (under `registry` when there is one); every name
/// without a tag gets `derived`.
pub fn image_names(
    tags: &[String],
    folder: &str,
    registry: Option<&RegistryAddress>,
    derived: &str,
) -> Vec<String> {
    let given = if tags.is_empty() {
        let repo = registry
            .and_then(|r| r.default_repository.clone())
            .unwrap_or_else(|| default_name(folder));
        match registry {
            Some(r) => vec![format!("{}/{repo}", r.uri.display())],
            None => vec![repo],
        }
    } else {
        tags.to_vec()
    };
    given
        .into_iter()
        .map(|name| match split_tag(&name) {
            (_, Some(_)) => name,
            (repo, None) => format!("{repo}:{derived}"),
        })
        .collect()
}

/// The tag the existence checks and skip rules look at (Docker's implied
/// `latest` when a name has none, as with a digest).
pub fn tag_of(image: &str) -> &str {
    split_tag(image).1.unwrap_or("latest")
}

#[cfg(test)]
mod tests {
    use kiln_distribution::RegistryUri;

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
    fn default_names_are_valid_repositories() {
        assert_eq!(default_name("My App!"), "my-app");
        assert_eq!(default_name("hello_world.v2"), "hello_world.v2");
        assert_eq!(default_name("___"), "kiln-image");
    }

    #[test]
    fn names_come_from_tags_folder_or_the_registry_address() {
        let reg = RegistryAddress {
            uri: RegistryUri::parse("http://127.0.0.1:5000/team/").expect("uri"),
            default_repository: None,
        };
        assert_eq!(image_names(&[], "My App", None, "d1"), ["my-app:d1"]);
        assert_eq!(
            image_names(&[], "app", Some(&reg), "d1"),
            ["127.0.0.1:5000/team/app:d1"]
        );
        let svc = RegistryAddress {
            default_repository: Some("svc/api".into()),
            ..reg.clone()
        };
        assert_eq!(
            image_names(&[], "app", Some(&svc), "d1"),
            ["127.0.0.1:5000/team/svc/api:d1"]
        );
        assert_eq!(
            image_names(
                &["x".into(), "localhost:5000/y:2".into()],
                "app",
                Some(&reg),
                "d1"
            ),
            ["x:d1", "localhost:5000/y:2"]
        );
        assert_eq!(tag_of("localhost:5000/y"), "latest");
        assert_eq!(tag_of("y:2"), "2");
    }
}
