//! Step 4 of a build: the image names. `-t` names, else the context
//! folder's name (or, with a registry, `<registry address>/<default
//! repository or folder name>`); a name without a tag gets the derived tag.

use std::collections::BTreeMap;

use kiln_distribution::split_tag;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::components::RegistryAddress;

/// How long a derived tag is (hex characters of its hash).
const DERIVED_TAG_LEN: usize = 16;

/// The label that records a build's inputs in the image it makes (their
/// digests as [`TagInputs::to_label`] writes them), so that the existence
/// check can tell an image made from the same inputs from one made from
/// others under the same tag, and say which input changed.
pub const INPUTS_LABEL: &str = "dev.kiln.inputs";

/// How many inputs a recorded label may hold before it is not believed.
const RECORDED_MAX: usize = 10_000;

/// The inputs that decide what a build produces, each under its name
/// (`context`, `dockerfile`, `build-arg:K`, `label:K`, `secret:ID`,
/// `target`, `platform`, `build-context:NAME`, `builder`, `base:IMAGE`)
/// with a digest of its value: what the derived tag hashes, and what kiln
/// compares with the last build to say which input changed. Values never
/// appear, only their digests (a secret contributes its id alone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagInputs(BTreeMap<String, String>);

impl TagInputs {
    /// Add input `name` with `value` (a later value for a name replaces an
    /// earlier one, as a repeated `--build-arg` does).
    pub fn with(mut self, name: impl Into<String>, value: &str) -> Self {
        let digest = Sha1::digest(value.as_bytes());
        self.0.insert(name.into(), hex(&digest[..8]));
        self
    }

    /// The tag for an image named without one: a hash of every input, so
    /// unchanged input always maps to the same tag (the order inputs were
    /// given in does not matter).
    pub fn derived_tag(&self) -> String {
        let mut hasher = Sha1::new();
        hasher.update(b"kiln-tag-v2");
        for (name, digest) in &self.0 {
            hasher.update(b"\0");
            hasher.update(name.as_bytes());
            hasher.update(b"=");
            hasher.update(digest.as_bytes());
        }
        hex(&hasher.finalize())[..DERIVED_TAG_LEN].to_string()
    }

    /// The value of [`INPUTS_LABEL`]: a JSON object of each input's name
    /// and digest, names sorted. A `'` is written `\u0027`: the Docker
    /// Engine's classic builder quotes `--label` values with `'` in the
    /// `LABEL` step it adds.
    pub fn to_label(&self) -> String {
        serde_json::to_string(&self.0)
            .unwrap_or_default()
            .replace('\'', "\\u0027")
    }

    /// The inputs an image's [`INPUTS_LABEL`] records, if `value` is such a
    /// record: a JSON object of names (printable, at most 1 KiB each) and
    /// digests as [`Self::with`] makes them. Anything else (a label set by
    /// hand, or a registry's nonsense) is not believed.
    pub fn from_label(value: &str) -> Option<Self> {
        let map: BTreeMap<String, String> = serde_json::from_str(value).ok()?;
        let sound = map.len() <= RECORDED_MAX
            && map.iter().all(|(name, digest)| {
                !name.is_empty()
                    && name.len() <= 1024
                    && !name.chars().any(char::is_control)
                    && digest.len() == 16
                    && digest
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
        sound.then_some(Self(map))
    }

    /// The names of the inputs that differ from `before`'s: changed, added
    /// or gone.
    pub fn changed_since(&self, before: &TagInputs) -> Vec<String> {
        let names: std::collections::BTreeSet<&String> =
            self.0.keys().chain(before.0.keys()).collect();
        names
            .into_iter()
            .filter(|n| self.0.get(*n) != before.0.get(*n))
            .cloned()
            .collect()
    }
}

/// The inputs of the last build of one repository, kept in kiln's cache
/// (`inputs/<hash of the repository>.json`): digests only, never values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastBuild {
    /// The repository (the image name without its tag).
    pub repository: String,
    /// The tag it was built under.
    pub tag: String,
    /// Its inputs.
    pub inputs: TagInputs,
}

impl LastBuild {
    fn path(cache_dir: &std::path::Path, repository: &str) -> std::path::PathBuf {
        let digest = Sha1::digest(repository.as_bytes());
        cache_dir
            .join("inputs")
            .join(format!("{}.json", hex(&digest[..10])))
    }

    /// The last build of `repository` recorded under `cache_dir`, if any
    /// (an unreadable record is none: it only explains, never decides).
    pub fn read(cache_dir: &std::path::Path, repository: &str) -> Option<Self> {
        let bytes = std::fs::read(Self::path(cache_dir, repository)).ok()?;
        serde_json::from_slice::<Self>(&bytes)
            .ok()
            .filter(|r| r.repository == repository)
    }

    /// Record this build (atomically, not synced: a hint; a failure to
    /// record is not an error of the build).
    pub fn write(&self, cache_dir: &std::path::Path) {
        let path = Self::path(cache_dir, &self.repository);
        if let (Some(dir), Ok(json)) = (path.parent(), serde_json::to_vec_pretty(self)) {
            let written = std::fs::create_dir_all(dir)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    kiln_archive::atomic::write_unsynced(&path, &json, 0o644)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = written {
                tracing::debug!("recording the inputs in {}: {e}", path.display());
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    #[test]
    fn derived_tags_follow_every_input_and_nothing_else() {
        let base = TagInputs::default()
            .with("context", "abc")
            .with("build-arg:A", "1")
            .with("build-arg:B", "2");
        let tag = base.derived_tag();
        assert_eq!(tag.len(), 16);
        let reordered = TagInputs::default()
            .with("build-arg:B", "2")
            .with("build-arg:A", "1")
            .with("context", "abc");
        assert_eq!(tag, reordered.derived_tag(), "input order does not matter");
        for (name, value) in [
            ("context", "abd"),
            ("build-arg:B", "3"),
            ("label:x", "1"),
            ("builder", "oci {}"),
            ("base:alpine:3", "sha256:00"),
        ] {
            let changed = base.clone().with(name, value);
            assert_ne!(tag, changed.derived_tag(), "{name}");
            assert_eq!(changed.changed_since(&base), [name]);
        }
        // A value moving from one name to another is a change.
        let moved = TagInputs::default()
            .with("context", "abc")
            .with("build-arg:A", "2")
            .with("build-arg:B", "1");
        assert_ne!(tag, moved.derived_tag());
        assert_eq!(moved.changed_since(&base), ["build-arg:A", "build-arg:B"]);
        let json = serde_json::to_string(&base).expect("json");
        assert!(!json.contains("abc"), "values never appear: {json}");
    }

    #[test]
    fn recorded_inputs_read_back_and_nonsense_is_not_believed() {
        let inputs = TagInputs::default()
            .with("context", "abc")
            .with("label:it's", "x")
            .with("label:team", "ml")
            .with("secret:token", "");
        let label = inputs.to_label();
        assert!(!label.contains("\"ml\""), "values never appear: {label}");
        assert!(!label.contains('\''), "{label}");
        assert_eq!(TagInputs::from_label(&label), Some(inputs.clone()));
        let changed = inputs.clone().with("label:team", "data");
        let recorded = TagInputs::from_label(&label).expect("record");
        assert_eq!(changed.changed_since(&recorded), ["label:team"]);
        for nonsense in [
            "",
            "x",
            "[]",
            r#"{"context": 1}"#,
            r#"{"context": "not-a-digest"}"#,
            r#"{"context": "0123456789ABCDEF"}"#,
            "{\"\\u001b[31mred\": \"0123456789abcdef\"}",
            r#"{"": "0123456789abcdef"}"#,
        ] {
            assert_eq!(TagInputs::from_label(nonsense), None, "{nonsense}");
        }
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
