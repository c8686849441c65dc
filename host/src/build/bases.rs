//! The images a build starts from, and what each is today. A derived tag
//! that hashed only the names of its bases would skip a build whose base
//! moved under the same tag; so each base is resolved to the digest its
//! registry holds now, and a base that cannot be resolved turns the skip
//! off (the dry run, which contacts nothing, says which are unresolved).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    time::Duration,
};

use kiln_distribution::{dockercfg, names, CallError, Platform, RegistryClient, Retry};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::options::NamedContext;

/// One base: an image a `FROM`, `COPY --from` or `RUN --mount=from=` names
/// (or the `--build-context` that stands for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Base {
    /// As the Dockerfile (after `ARG` expansion) or `--build-context` names it.
    pub image: String,
    /// What it is now: `sha256:...` of its manifest or index (or of an OCI
    /// layout's `index.json`); `None` when unresolved.
    pub digest: Option<String>,
    /// Why it is unresolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
    /// For a base resolved from its registry: the reference by digest
    /// (`registry/repo@sha256:...`) a builder that takes named contexts
    /// is given for it, so the image is built from exactly what was
    /// resolved even when the tag moves meanwhile.
    #[serde(skip)]
    pub pin: Option<String>,
}

impl Base {
    /// `image`, which is `digest` now.
    pub fn resolved(image: &str, digest: impl Into<String>) -> Self {
        Self {
            image: image.to_string(),
            digest: Some(digest.into()),
            unresolved: None,
            pin: None,
        }
    }

    /// `image`, unresolved for `why`.
    pub fn unresolved(image: &str, why: impl Into<String>) -> Self {
        Self {
            image: image.to_string(),
            digest: None,
            unresolved: Some(why.into()),
            pin: None,
        }
    }
}

/// The external images `dockerfile` (its text) refers to, for any of
/// `platforms` (the machine's when empty), with `ARG`s expanded from
/// `build_args` and their defaults as BuildKit expands `FROM`: stage names,
/// stage indexes and `scratch` are not images.
pub fn referenced(
    dockerfile: &str,
    build_args: &[(String, String)],
    platforms: &[Platform],
) -> Result<Vec<String>, String> {
    let file = kiln_dockerfile::parse(dockerfile).map_err(|e| e.to_string())?;
    let given: BTreeMap<String, String> = build_args.iter().cloned().collect();
    let host = [Platform::host()];
    let platforms = if platforms.is_empty() {
        &host[..]
    } else {
        platforms
    };
    let mut images = BTreeSet::new();
    for platform in platforms {
        let mut vars = platform.build_args();
        let mut stages: Vec<String> = Vec::new();
        let mut started = false;
        for ins in &file.instructions {
            let expand = |text: &str, vars: &BTreeMap<String, String>| {
                kiln_dockerfile::expand(text, vars, file.escape)
                    .map_err(|e| format!("Dockerfile line {}: {e}", ins.line))
            };
            let mut refer = |name: &str, stages: &[String]| {
                let lower = name.to_lowercase();
                let is_stage = stages.contains(&lower)
                    || lower.parse::<usize>().is_ok_and(|i| i < stages.len());
                if !is_stage && lower != "scratch" && !name.is_empty() {
                    images.insert(name.to_string());
                }
            };
            match ins.keyword.as_str() {
                "ARG" if !started => {
                    for (name, default) in
                        kiln_dockerfile::arg_decls(&ins.original, &vars, file.escape)
                            .map_err(|e| format!("Dockerfile line {}: {e}", ins.line))?
                    {
                        if let Some(v) = given.get(&name).cloned().or(default) {
                            vars.insert(name, v);
                        }
                    }
                }
                "FROM" => {
                    started = true;
                    let words: Vec<&str> = ins.original.split_whitespace().collect();
                    let image = expand(words.first().copied().unwrap_or(""), &vars)?;
                    refer(&image, &stages);
                    stages.push(stage_name(&ins.original).unwrap_or_default());
                }
                _ => {
                    for (flag, value) in &ins.flags {
                        let from = match flag.as_str() {
                            "from" => Some(value.as_str()),
                            "mount" => value.split(',').find_map(|kv| {
                                kv.split_once('=')
                                    .filter(|(k, _)| k.eq_ignore_ascii_case("from"))
                                    .map(|(_, v)| v)
                            }),
                            _ => None,
                        };
                        if let Some(from) = from {
                            refer(from, &stages);
                        }
                    }
                }
            }
        }
    }
    Ok(images.into_iter().collect())
}

/// The stage names `dockerfile` (its text) declares (`FROM ... AS name`),
/// lowercase: a named context of such a name would stand for the stage
/// wherever the Dockerfile uses it.
pub fn stage_names(dockerfile: &str) -> BTreeSet<String> {
    let Ok(file) = kiln_dockerfile::parse(dockerfile) else {
        return BTreeSet::new();
    };
    file.instructions
        .iter()
        .filter(|ins| ins.keyword == "FROM")
        .filter_map(|ins| stage_name(&ins.original))
        .collect()
}

/// The stage a `FROM` names (`IMAGE AS name`, lowercase), given its text.
fn stage_name(from: &str) -> Option<String> {
    match from.split_whitespace().collect::<Vec<_>>()[..] {
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_lowercase()),
        _ => None,
    }
}

/// How long one base's registry may take to answer.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Where bases are looked up.
#[derive(Debug, Clone, Default)]
pub struct Lookup<'a> {
    /// Registries spoken to over plain HTTP besides loopback ones.
    pub insecure: &'a [String],
    /// The Docker Engine (`unix://` or `tcp://`) whose images the builder
    /// starts from when it has them: asked first.
    pub engine: Option<String>,
    /// How long each registry or engine may take.
    pub timeout: Duration,
}

/// Resolve each of `images`: a `--build-context` of the same name stands
/// for it (an image reference is resolved instead; an OCI layout is its
/// `index.json`'s digest, or the archive's); an image is asked of the
/// engine first when there is one (its image ID), else of its registry
/// (Docker's credentials; plain HTTP for loopback hosts and `insecure`
/// ones). A digest reference is itself. Nothing fails: what cannot be
/// resolved says why.
pub fn resolve(
    images: &[String],
    contexts: &BTreeMap<String, NamedContext>,
    lookup: &Lookup<'_>,
) -> Vec<Base> {
    images
        .iter()
        .map(|image| match contexts.get(image) {
            Some(NamedContext::OciLayout(path)) => layout(image, path),
            Some(NamedContext::DockerImage(r)) => Base {
                image: image.clone(),
                ..resolve_one(r, lookup)
            },
            None => resolve_one(image, lookup),
        })
        .collect()
}

/// The hosts `builder`'s config says to speak plain HTTP to
/// (`insecure_registries`; loopback always is).
pub fn insecure_registries(builder: &crate::components::ResolvedComponent) -> Vec<String> {
    builder
        .config
        .get("insecure_registries")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every base unresolved, for `why` (a dry run contacts nothing).
pub fn unresolved(images: &[String], why: &str) -> Vec<Base> {
    images.iter().map(|i| Base::unresolved(i, why)).collect()
}

fn resolve_one(image: &str, lookup: &Lookup<'_>) -> Base {
    let reference = match names::parse(image) {
        Ok(r) => r,
        Err(e) => return Base::unresolved(image, e),
    };
    let (insecure, timeout) = (lookup.insecure, lookup.timeout);
    if let Some(engine) = &lookup.engine {
        match super::load::engine_image_id(engine, image, timeout) {
            Ok(Some(id)) => return Base::resolved(image, id),
            // Not in the engine: the builder pulls it from its registry.
            Ok(None) => {}
            Err(why) => return Base::unresolved(image, why),
        }
    }
    if let Some(digest) = reference.digest() {
        return Base::resolved(image, digest);
    }
    let host = reference.registry().to_string();
    let repo = reference.repository().to_string();
    let tag = reference.tag().unwrap_or("latest").to_string();
    let answer = (|| {
        let credentials = dockercfg::lookup(&host, timeout)?;
        let (client, runtime) = client_for(&host, insecure, credentials, timeout)?;
        match runtime.block_on(client.resolve(&repo, &tag)) {
            Ok(Some(m)) => Ok(m.digest),
            Ok(None) => Err(format!("{host} has no {repo}:{tag}")),
            Err(CallError::Denied(why) | CallError::Unavailable(why) | CallError::Failed(why)) => {
                Err(why)
            }
        }
    })();
    match answer {
        Ok(digest) => Base {
            pin: Some(format!("{host}/{repo}@{digest}")),
            ..Base::resolved(image, digest)
        },
        Err(why) => Base::unresolved(image, why),
    }
}

/// A client for the registry at `host` (one retry of 429 and 5xx, each
/// request bounded by `timeout`) and the runtime to run its calls on.
pub fn client_for(
    host: &str,
    insecure: &[String],
    credentials: Option<kiln_distribution::Credentials>,
    timeout: Duration,
) -> std::result::Result<(RegistryClient, tokio::runtime::Runtime), String> {
    let client = RegistryClient::for_host(
        host,
        insecure,
        credentials,
        timeout,
        Retry::with_backoff_ms(1, 200),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
    Ok((client, runtime))
}

/// An OCI layout folder's `index.json`, or an archive's bytes, as a digest
/// (`PATH[:TAG|@DIGEST]`: a digest suffix is itself).
fn layout(image: &str, spec: &str) -> Base {
    if let Some((_, digest)) = spec.rsplit_once('@') {
        return Base::resolved(image, digest);
    }
    let path = Path::new(spec);
    let path = if path.exists() {
        path.to_path_buf()
    } else {
        match spec.rsplit_once(':') {
            Some((p, _)) => Path::new(p).to_path_buf(),
            None => path.to_path_buf(),
        }
    };
    let file = if path.is_dir() {
        path.join("index.json")
    } else {
        path
    };
    let mut hasher = Sha256::new();
    match fs::File::open(&file).and_then(|mut f| std::io::copy(&mut f, &mut hasher)) {
        Ok(_) => Base::resolved(image, format!("sha256:{:x}", hasher.finalize())),
        Err(e) => Base::unresolved(image, format!("{}: {e}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str, args: &[(&str, &str)]) -> Vec<String> {
        let args: Vec<(String, String)> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        referenced(text, &args, &[]).expect("parses")
    }

    #[test]
    fn bases_are_images_not_stages_with_args_expanded() {
        let text = "ARG BASE=alpine:3\nARG TOOL\nFROM $BASE AS build\nRUN true\n\
                    FROM build AS again\nCOPY --from=busybox:1 /bin/sh /sh\n\
                    COPY --from=0 /x /x\nFROM scratch\nCOPY --from=again /a /a\n\
                    RUN --mount=type=bind,from=reg.io/tools:2,target=/t true\n";
        assert_eq!(refs(text, &[]), ["alpine:3", "busybox:1", "reg.io/tools:2"]);
        assert_eq!(
            refs(text, &[("BASE", "debian:12")]),
            ["busybox:1", "debian:12", "reg.io/tools:2"]
        );
        // A stage name is matched without regard to case.
        assert_eq!(refs("FROM a:1 AS One\nFROM one\n", &[]), ["a:1"]);
        // A Dockerfile that does not parse has no known bases: an error.
        assert!(referenced("FROM\n", &[], &[]).is_err());
    }

    #[test]
    fn platform_args_pick_per_platform_bases() {
        let p = Platform::parse_list("linux/amd64,linux/arm64").expect("platforms");
        let got = referenced("FROM app:$TARGETARCH\n", &[], &p).expect("parses");
        assert_eq!(got, ["app:amd64", "app:arm64"]);
    }

    #[test]
    fn digests_and_layouts_resolve_without_a_registry() {
        let pinned = format!("alpine@sha256:{}", "a".repeat(64));
        let lookup = Lookup {
            timeout: RESOLVE_TIMEOUT,
            ..Lookup::default()
        };
        let b = resolve(std::slice::from_ref(&pinned), &BTreeMap::new(), &lookup);
        assert_eq!(b[0].digest.as_deref(), Some(&pinned[7..]));
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("index.json"), "{}").expect("write");
        let contexts = BTreeMap::from([(
            "base".to_string(),
            NamedContext::OciLayout(dir.path().display().to_string()),
        )]);
        let one = resolve(&["base".into()], &contexts, &lookup);
        fs::write(dir.path().join("index.json"), "{ }").expect("write");
        let two = resolve(&["base".into()], &contexts, &lookup);
        assert!(one[0].digest.is_some() && one[0].digest != two[0].digest);
        let gone = resolve(
            &["base".into()],
            &BTreeMap::from([(
                "base".to_string(),
                NamedContext::OciLayout("/nonexistent/layout".into()),
            )]),
            &lookup,
        );
        assert!(gone[0].unresolved.is_some());
    }
}
