//! Reading manifests and indexes as registries and image layouts serve
//! them: which document is an index, the entry of an index for a platform,
//! a descriptor's digest. Shared by the `oci` builder's bases and the
//! host's reading of a built image's config.

use serde_json::Value;

use crate::Platform;

/// The OCI image index media type.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker's manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether a document of `media_type` is an index (or a Docker manifest
/// list), by its type or, when the type says neither, by its shape.
pub fn is_index(media_type: &str, doc: &Value) -> bool {
    media_type == INDEX
        || media_type == DOCKER_LIST
        || (doc.get("manifests").is_some() && doc.get("layers").is_none())
}

/// Whether an index entry's `platform` object serves `platform`.
pub fn platform_matches(platform: &Platform, p: &Value) -> bool {
    let field = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
    let variant = Some(field("variant")).filter(|v| !v.is_empty());
    platform.accepts(field("os"), field("architecture"), variant)
}

/// The entry of `index` for `platform`, or an error naming `what` and
/// listing the platforms it has.
pub fn pick_platform<'v>(
    index: &'v Value,
    platform: &Platform,
    what: &str,
) -> Result<&'v Value, String> {
    let list = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{what}: an index without manifests"))?;
    list.iter()
        .find(|m| {
            m.get("platform")
                .is_some_and(|p| platform_matches(platform, p))
        })
        .ok_or_else(|| {
            let have: Vec<String> = list
                .iter()
                .filter_map(|m| m.get("platform"))
                .map(|p| {
                    let f = |k| p.get(k).and_then(Value::as_str).unwrap_or("");
                    let v = f("variant");
                    if v.is_empty() {
                        format!("{}/{}", f("os"), f("architecture"))
                    } else {
                        format!("{}/{}/{v}", f("os"), f("architecture"))
                    }
                })
                .collect();
            format!(
                "{what} has no image for {platform} (it has: {})",
                have.join(", ")
            )
        })
}

/// The `sha256:` digest a descriptor names, or an error naming `what`.
pub fn digest_of(descriptor: &Value, what: &str) -> Result<String, String> {
    descriptor
        .get("digest")
        .and_then(Value::as_str)
        .filter(|d| crate::client::is_digest(d) && d.starts_with("sha256:"))
        .map(str::to_string)
        .ok_or_else(|| format!("{what}: a descriptor without a sha256 digest"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_index_entry_is_picked_by_platform_and_variant() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let index = json!({"schemaVersion": 2, "manifests": [
            {"digest": a, "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": b, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": "sha256:short", "platform": {"os": "unknown", "architecture": "unknown"}},
        ]});
        assert!(is_index("application/json", &index));
        let pick = |p: &str| {
            pick_platform(&index, &Platform::parse(p).expect("platform"), "img")
                .and_then(|e| digest_of(e, "img"))
        };
        assert_eq!(pick("linux/amd64"), Ok(a));
        assert_eq!(pick("linux/arm64"), Ok(b.clone()));
        assert_eq!(pick("linux/arm64/v8"), Ok(b));
        let missing = pick("linux/s390x").expect_err("no such platform");
        assert!(missing.contains("linux/arm64/v8"), "{missing}");
        // A digest that is not one is refused.
        let bad = &index["manifests"][2];
        assert!(digest_of(bad, "img").is_err());
    }
}
