//! Steps 2-5 of a build: the plan. One value that `--dry-run` prints (text
//! through `Display`, `--json` through `Serialize`) and a real build
//! executes, so the two cannot drift. Making it reads the Dockerfile, runs
//! the builder's context hook and hashes the context (a real build writes
//! the archive it will send); it constructs nothing and contacts nothing.

use std::{fmt, time::Instant};

use kiln_distribution::Platform;
use kiln_plugin_api::{BuildRequest, ComponentType};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

use super::{
    bases, builder,
    checks::checks_apply,
    naming::{image_names, tag_of, TagInputs},
    options::{NamedContext, OnUnknown, Options, OutputSpec, RegistryChoice},
};
use crate::{
    components::ResolvedComponent,
    context::{Context, ContextOptions, ContextSummary},
    error::{Error, Result},
    output,
    session::Session,
};

/// Which existence checks the build will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckPlan {
    /// None, and why (`latest`, `--force`).
    Off(String),
    /// No checker configured.
    NoneConfigured,
    /// The registry component is asked about the first image.
    Registry {
        /// The component.
        registry: String,
        /// Its flavor.
        flavor: String,
        /// The image asked about.
        image: String,
    },
}

impl fmt::Display for CheckPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckPlan::Off(reason) => write!(f, "none ({reason})"),
            CheckPlan::NoneConfigured => write!(f, "none configured: the image will be built"),
            CheckPlan::Registry {
                registry,
                flavor,
                image,
            } => write!(
                f,
                "registry {registry} (flavor {flavor}) is asked whether {image} exists; \
                 the build is skipped if it does"
            ),
        }
    }
}

/// What the builder is asked to do, besides the names and the context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestPlan {
    /// `--build-arg`, in order.
    #[serde(serialize_with = "pairs_object", deserialize_with = "object_pairs")]
    pub build_args: Vec<(String, String)>,
    /// `--label`, in order.
    #[serde(serialize_with = "pairs_object", deserialize_with = "object_pairs")]
    pub labels: Vec<(String, String)>,
    /// `--target`.
    pub target: Option<String>,
    /// `--platform`: none, one, or several (printed as buildx's list).
    #[serde(serialize_with = "platform_list", deserialize_with = "list_platforms")]
    pub platform: Vec<Platform>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// `--output`.
    pub output: Option<OutputSpec>,
    /// `--build-context`.
    pub build_contexts: std::collections::BTreeMap<String, NamedContext>,
    /// `--secret`: ids and sources, never values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<super::options::SecretSpec>,
    /// `--cache-from`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<kiln_plugin_api::CacheSpec>,
    /// `--cache-to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_to: Vec<kiln_plugin_api::CacheSpec>,
}

fn pairs_object<S: Serializer>(
    pairs: &[(String, String)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let map: Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    map.serialize(s)
}

fn object_pairs<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<(String, String)>, D::Error> {
    let map = Map::<String, Value>::deserialize(d)?;
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(v) => Ok((k, v)),
            other => Err(serde::de::Error::custom(format!(
                "{k}: not a string: {other}"
            ))),
        })
        .collect()
}

fn list_platforms<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<Platform>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(list) => Platform::parse_list(&list).map_err(serde::de::Error::custom),
        None => Ok(Vec::new()),
    }
}

fn platform_list<S: Serializer>(list: &[Platform], s: S) -> std::result::Result<S::Ok, S::Error> {
    match list {
        [] => s.serialize_none(),
        list => s.collect_str(&Platform::join(list)),
    }
}

impl RequestPlan {
    fn from_options(options: &Options) -> Self {
        Self {
            build_args: options.build_args.clone(),
            labels: options.labels.clone(),
            target: options.target.clone(),
            platform: options.platforms.clone(),
            no_cache: options.no_cache,
            pull: options.pull,
            output: options.output.clone(),
            build_contexts: options.named_contexts.clone(),
            secrets: options.secrets.clone(),
            cache_from: options.cache_from.clone(),
            cache_to: options.cache_to.clone(),
        }
    }

    /// The plugin-api request for `tags` and the Dockerfile at `dockerfile`
    /// (inside the context).
    pub fn to_request(&self, tags: &[String], dockerfile: &str) -> BuildRequest {
        BuildRequest {
            tags: tags.to_vec(),
            dockerfile: dockerfile.to_owned(),
            build_args: self.build_args.clone(),
            labels: self.labels.clone(),
            target: self.target.clone(),
            platform: match self.platform.as_slice() {
                [one] => Some(one.to_string()),
                _ => None,
            },
            platforms: match self.platform.as_slice() {
                [_, _, ..] => self.platform.iter().map(Platform::to_string).collect(),
                _ => Vec::new(),
            },
            no_cache: self.no_cache,
            pull: self.pull,
            output: self.output.as_ref().map(|out| kiln_plugin_api::OutputSpec {
                kind: out.kind.as_str().to_owned(),
                dest: out.dest.to_string_lossy().into_owned(),
            }),
            build_contexts: self
                .build_contexts
                .iter()
                .map(|(name, c)| (name.clone(), c.to_string()))
                .collect(),
            // Values are read only when a build runs (execute.rs).
            secrets: Vec::new(),
            cache_from: self.cache_from.clone(),
            cache_to: self.cache_to.clone(),
        }
    }
}

/// The context archive a real build sends.
#[derive(Debug)]
pub enum Archive {
    /// This build's link to the archive kept in the cache
    /// ([`crate::context::kept`]); the link is removed when dropped.
    Kept(tempfile::TempPath),
    /// Written by the process that planned the build (a worker's view).
    At(std::path::PathBuf),
}

impl Archive {
    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Archive::Kept(p) => p,
            Archive::At(p) => p,
        }
    }
}

/// One build, planned.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// The first image (the one checks ask about).
    pub image: String,
    /// Every image the build produces.
    pub images: Vec<String>,
    /// The builder: component name or `flavor NAME`.
    #[serde(rename = "builder", serialize_with = "label")]
    pub builder_component: ResolvedComponent,
    /// The builder's flavor.
    pub flavor: String,
    /// The registry component, when one is used.
    #[serde(rename = "registry", serialize_with = "label_option")]
    pub registry_component: Option<ResolvedComponent>,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// The context.
    #[serde(flatten, serialize_with = "context_fields")]
    pub context: ContextSummary,
    /// The existence checks.
    #[serde(serialize_with = "display")]
    pub checks: CheckPlan,
    /// What the builder is asked.
    pub request: RequestPlan,
    /// The images the build starts from, resolved when a skip depends on
    /// them.
    pub bases: Vec<bases::Base>,
    /// Every input, by name, as the derived tag hashes them.
    #[serde(skip)]
    pub inputs: TagInputs,
    /// `--force`.
    #[serde(skip)]
    pub force: bool,
    /// `--on-unknown`.
    pub on_unknown: OnUnknown,
    /// The archive a real build sends (none for a dry run).
    #[serde(skip)]
    pub(crate) archive: Option<Archive>,
    /// When `kiln build` started.
    #[serde(skip)]
    pub(crate) started: Instant,
}

fn label<S: Serializer>(c: &ResolvedComponent, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&c.label)
}

fn label_option<S: Serializer>(
    c: &Option<ResolvedComponent>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_str(&c.label),
        None => s.serialize_none(),
    }
}

fn display<S: Serializer, T: fmt::Display>(v: &T, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn context_fields<S: Serializer>(c: &ContextSummary, s: S) -> std::result::Result<S::Ok, S::Error> {
    json!({"context_sha1": c.sha1, "context_bytes": c.bytes, "context_files": c.files}).serialize(s)
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan: build {} with {}",
            self.images.join(", "),
            self.builder_component.describe()
        )?;
        writeln!(
            f,
            "  context: {} files, {} bytes, sha1 {}",
            self.context.files, self.context.bytes, self.context.sha1
        )?;
        writeln!(f, "  dockerfile: {}", self.dockerfile)?;
        let r = &self.request;
        let pairs = |p: &[(String, String)]| {
            p.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if !r.build_args.is_empty() {
            writeln!(f, "  build args: {}", pairs(&r.build_args))?;
        }
        if !r.labels.is_empty() {
            writeln!(f, "  labels: {}", pairs(&r.labels))?;
        }
        if let Some(t) = &r.target {
            writeln!(f, "  target: {t}")?;
        }
        if !r.platform.is_empty() {
            writeln!(f, "  platform: {}", Platform::join(&r.platform))?;
        }
        for (name, c) in &r.build_contexts {
            writeln!(f, "  build context: {name}={c}")?;
        }
        if !r.secrets.is_empty() {
            let ids: Vec<&str> = r.secrets.iter().map(|s| s.id.as_str()).collect();
            writeln!(f, "  secrets: {}", ids.join(", "))?;
        }
        for c in &r.cache_from {
            writeln!(f, "  cache from: {}", c.reference)?;
        }
        for c in &r.cache_to {
            writeln!(
                f,
                "  cache to: {} (mode={})",
                c.reference,
                c.effective_mode()
            )?;
        }
        for b in &self.bases {
            match (&b.digest, &b.unresolved) {
                (Some(d), _) => writeln!(f, "  base: {} ({d})", b.image)?,
                (None, why) => writeln!(
                    f,
                    "  base: {} (unresolved: {})",
                    b.image,
                    why.as_deref().unwrap_or("unknown")
                )?,
            }
        }
        if let Some(o) = &r.output {
            let kind = o.kind.as_str();
            let what = if o.kind.is_image() {
                "archive"
            } else {
                "filesystem"
            };
            if o.load {
                writeln!(f, "  output: {kind} archive loaded into the Docker Engine")?;
            } else if o.to_stdout() {
                writeln!(f, "  output: {kind} {what} to standard output")?;
            } else if o.kind == super::options::OutputKind::Local {
                writeln!(f, "  output: {kind} filesystem into {}", o.dest.display())?;
            } else {
                writeln!(f, "  output: {kind} {what} {}", o.dest.display())?;
            }
        }
        let flags: Vec<&str> = [(r.no_cache, "--no-cache"), (r.pull, "--pull")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| *f)
            .collect();
        if !flags.is_empty() {
            writeln!(f, "  options: {}", flags.join(" "))?;
        }
        write!(f, "  checks: {}", self.checks)
    }
}

/// Every input that decides what the build produces (see [`TagInputs`]):
/// the context (which holds the Dockerfile), the Dockerfile's path, build
/// args, labels, secret ids, target, platforms, named contexts, the
/// builder's flavor and config without secrets, each base as resolved.
fn tag_inputs(
    context_sha1: &str,
    dockerfile: &str,
    request: &RequestPlan,
    builder: &ResolvedComponent,
    bases: &[bases::Base],
) -> TagInputs {
    let mut inputs = TagInputs::default()
        .with("context", context_sha1)
        .with("dockerfile", dockerfile)
        .with(
            "builder",
            &format!(
                "{} {}",
                builder.flavor.name(),
                Value::Object(builder.public_config())
            ),
        );
    for (k, v) in &request.build_args {
        inputs = inputs.with(format!("build-arg:{k}"), v);
    }
    for (k, v) in &request.labels {
        inputs = inputs.with(format!("label:{k}"), v);
    }
    for secret in &request.secrets {
        inputs = inputs.with(format!("secret:{}", secret.id), "");
    }
    if let Some(t) = &request.target {
        inputs = inputs.with("target", t);
    }
    if !request.platform.is_empty() {
        inputs = inputs.with("platform", &Platform::join(&request.platform));
    }
    for (name, c) in &request.build_contexts {
        inputs = inputs.with(format!("build-context:{name}"), &c.to_string());
    }
    for b in bases {
        let value = b.digest.as_deref().unwrap_or("unresolved");
        inputs = inputs.with(format!("base:{}", b.image), value);
    }
    inputs
}

impl Plan {
    /// The tag the checks look at.
    pub fn tag(&self) -> &str {
        tag_of(&self.image)
    }

    /// Plan a build of `options`. For a real build (`options.dry_run`
    /// false) the context archive is written to a temporary file here, once;
    /// a dry run only hashes it.
    pub fn make(session: &Session<'_>, options: &Options) -> Result<Self> {
        let started = Instant::now();
        let catalog = session.catalog();
        let context_options = ContextOptions {
            root: options.dir.clone(),
            dockerfile: options.dockerfile.clone(),
            ignore_file: options.dockerignore.clone(),
        };
        let mut context = Context::resolve(&context_options, &session.env.cwd)?;
        let builder = builder::choose(session, &catalog, &options.builder)?;
        let registry = match &options.registry {
            None => None,
            Some(RegistryChoice::Component(name)) => Some(ResolvedComponent::from_component(
                session,
                &catalog,
                name,
                ComponentType::CONTAINER_REGISTRY,
            )?),
            Some(RegistryChoice::Push {
                flavor,
                config,
                image,
                ..
            }) => Some(super::registry::inline(
                &catalog,
                flavor.as_deref(),
                config.as_deref(),
                image,
            )?),
        };
        // `--push` with a tag the user chose: buildx builds and pushes it
        // whatever the registry holds (the tag may move).
        let push_always = matches!(
            options.registry,
            Some(RegistryChoice::Push {
                explicit_tag: true,
                ..
            })
        );
        let address = registry
            .as_ref()
            .map(ResolvedComponent::registry_address)
            .transpose()?;
        let mut request = RequestPlan::from_options(options);
        let named_contexts = builder.declares(kiln_plugin_api::capability::NAMED_CONTEXTS);
        if let Some(name) = request
            .build_contexts
            .keys()
            .next()
            .filter(|_| !named_contexts)
        {
            return Err(Error::BadArgument(format!(
                "--build-context {name}: builder {} (flavor {}) does not take named contexts; \
                 the oci builder does",
                builder.label,
                builder.flavor.name()
            )));
        }

        // The builder's context hook (describe stage: nothing constructed).
        let files =
            builder.context_files(session, &request.to_request(&[], context.dockerfile()))?;
        context.add_files(files)?;

        let (summary, report, archive) = if options.dry_run {
            let (summary, report) = context.digest()?;
            (summary, report, None)
        } else if options.from_stdin {
            // A context from standard input is new every time: written
            // once for this build, never kept.
            let temp = super::interrupt::temp_archive("kiln-context-")?;
            let (summary, report) = context.pack_to_file(&temp, false)?;
            (summary, report, Some(Archive::Kept(temp)))
        } else {
            // Kept in the cache: an unchanged context is neither read nor
            // written again.
            let kept = crate::context::kept::archive(
                &context,
                &session.env.cache_dir.join("contexts"),
                crate::context::RACY_NS,
            )?;
            (kept.summary, kept.report, Some(Archive::Kept(kept.path)))
        };
        for w in &report.warnings {
            output::warn(w);
        }
        // Bases are resolved whenever the build goes through a registry
        // (a skip may depend on them; the image records them), whether or
        // not this run's check applies, so that `--force` and `latest`
        // record what a checked build records. A dry run contacts nothing.
        let resolve = registry.is_some();
        let bases = match context
            .dockerfile_text()
            .and_then(|t| bases::referenced(&t, &options.build_args, &options.platforms))
        {
            Err(why) => vec![bases::Base::unresolved(context.dockerfile(), why)],
            Ok(images) if options.dry_run => {
                bases::unresolved(&images, "a dry run contacts no registry")
            }
            Ok(images) if !resolve => {
                bases::unresolved(&images, "resolved only for a build through a registry")
            }
            Ok(images) => {
                let insecure = bases::insecure_registries(&builder);
                // A builder that starts from the engine's images: asked
                // there first (unless --pull, which pulls from the registry,
                // or another platform than the engine's is asked for).
                let host_platform = options
                    .platforms
                    .iter()
                    .all(|p| *p == kiln_distribution::Platform::host());
                let engine = (builder
                    .declares(kiln_plugin_api::capability::BASES_FROM_DOCKER_ENGINE)
                    && !options.pull
                    && host_platform)
                    .then(|| {
                        kiln_distribution::engine::docker_host(
                            builder.config.get("docker_host").and_then(Value::as_str),
                        )
                    });
                let lookup = bases::Lookup {
                    insecure: &insecure,
                    engine,
                    timeout: bases::RESOLVE_TIMEOUT,
                };
                bases::resolve(&images, &request.build_contexts, &lookup)
            }
        };
        let inputs = tag_inputs(
            &summary.sha1,
            context.dockerfile(),
            &request,
            &builder,
            &bases,
        );
        let derived = inputs.derived_tag();
        // Each base resolved from its registry is built from the digest
        // resolved (a named context by digest), not from a tag that may
        // have moved since; a stage of the same name keeps its meaning.
        if named_contexts && bases.iter().any(|b| b.pin.is_some()) {
            let stages = context
                .dockerfile_text()
                .map(|t| bases::stage_names(&t))
                .unwrap_or_default();
            for base in &bases {
                if let Some(pin) = base
                    .pin
                    .as_ref()
                    .filter(|_| !stages.contains(&base.image.to_lowercase()))
                {
                    request
                        .build_contexts
                        .insert(base.image.clone(), NamedContext::DockerImage(pin.clone()));
                }
            }
        }
        let folder = if options.from_stdin {
            "stdin".to_string()
        } else {
            context
                .root()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let images = image_names(&options.tags, &folder, address.as_ref(), &derived);
        let image = images[0].clone();
        let applies = checks_apply(tag_of(&image), options.force).and_then(|()| {
            if push_always {
                Err("--push with an explicit tag always builds and pushes".to_string())
            } else {
                Ok(())
            }
        });
        // A base that could not be resolved may have moved: no skip.
        let applies = applies.and_then(|()| match bases.iter().find(|b| b.digest.is_none()) {
            Some(b) if resolve && !options.dry_run => Err(format!(
                "base {} could not be resolved ({}), so a skip could be wrong",
                b.image,
                b.unresolved.as_deref().unwrap_or("unknown")
            )),
            _ => Ok(()),
        });
        let checks = match (applies, &registry) {
            (Err(reason), _) => CheckPlan::Off(reason),
            (Ok(()), None) => CheckPlan::NoneConfigured,
            (Ok(()), Some(r)) => CheckPlan::Registry {
                registry: r.label.clone(),
                flavor: r.flavor.name().to_string(),
                image: image.clone(),
            },
        };
        Ok(Plan {
            image,
            images,
            flavor: builder.flavor.name().to_string(),
            builder_component: builder,
            registry_component: registry,
            dockerfile: context.dockerfile().to_string(),
            context: summary,
            checks,
            request,
            bases,
            inputs,
            force: options.force,
            on_unknown: options.on_unknown,
            archive,
            started,
        })
    }

    /// The plan as `--dry-run --json` prints it: its fields, with the
    /// keys of a build's result (`status: "planned"`, no digest).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|e| json!({"error": e.to_string()}));
        if let Value::Object(map) = &mut v {
            map.insert("digest".into(), Value::Null);
            map.insert("pushed".into(), Value::Null);
            map.insert("image_id".into(), Value::Null);
            map.insert("status".into(), "planned".into());
            map.insert("reason".into(), "dry run: nothing was built".into());
            map.insert("seconds".into(), json!(self.seconds()));
        }
        v
    }

    /// Seconds since `kiln build` started, to the millisecond.
    pub fn seconds(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
    }
}
