//! Step 1 of a build: the raw `kiln build` flags ([`BuildArgs`], clap's
//! view) become validated [`Options`] before any plugin is loaded or any
//! file read, so a bad `--output`, `--build-context`, `--platform`, name or
//! `KEY=VALUE` fails at once (ripgrep's low args → high args).

// The doc comments on clap types are `--help` text, written for the
// terminal: `[:TAG]` and `<Dockerfile>` are not links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::{collections::BTreeMap, fmt, path::PathBuf};

use clap::{Args, ValueEnum};
use kiln_distribution::{names, split_tag, Platform};
use kiln_plugin_api::CacheSpec;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// `--on-unknown`: what to do when no checker can tell whether the image
/// exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnknown {
    /// Build the image.
    Build,
    /// Stop with exit code 7.
    Fail,
}

/// `kiln build DIR ...`, as typed.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The context root; `-` reads it from standard input, as `docker build
    /// -` does: a tar archive (plain or gzip) is the context, anything else
    /// is a Dockerfile with an empty context.
    #[arg(value_name = "DIR|-")]
    pub dir: PathBuf,
    /// Image name, NAME[:TAG] (repeatable). Without a tag, the tag is derived
    /// from the context hash, Dockerfile, build args, target and platform.
    /// Default name: the context folder's name.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// The Dockerfile, relative to the working directory (default:
    /// DIR/Dockerfile); with a context from standard input, a path inside it.
    #[arg(short = 'f', long = "file", value_name = "DOCKERFILE")]
    pub file: Option<PathBuf>,
    /// The ignore file (default: <Dockerfile>.dockerignore, else DIR/.dockerignore).
    #[arg(long, value_name = "FILE")]
    pub dockerignore: Option<PathBuf>,
    /// The image-builder component to use.
    #[arg(long, value_name = "COMPONENT", conflicts_with = "builder_flavor")]
    pub builder: Option<String>,
    /// Use this builder flavor directly, configured with --builder-config
    /// (default: oci, the daemonless builder, for any Dockerfile).
    #[arg(long = "builder-flavor", value_name = "FLAVOR")]
    pub builder_flavor: Option<String>,
    /// JSON config for --builder-flavor, validated against the flavor's schema.
    #[arg(
        long = "builder-config",
        value_name = "JSON",
        requires = "builder_flavor"
    )]
    pub builder_config: Option<String>,
    /// The container-registry component: it answers whether the image exists
    /// already (skipping the build), every image name must belong to it, and the
    /// builder pushes through it.
    #[arg(long, value_name = "COMPONENT", conflicts_with_all = ["registry_flavor", "registry_config"])]
    pub registry: Option<String>,
    /// Push every image to the registry its name (-t) says, as `docker
    /// buildx build --push`: Docker's credentials for that host apply, no
    /// project needed. An explicit tag is always built and pushed; a derived
    /// one is skipped when the registry has it.
    #[arg(long)]
    pub push: bool,
    /// The registry flavor --push goes through (default: `default`, any
    /// OCI distribution registry).
    #[arg(long = "registry-flavor", value_name = "FLAVOR", requires = "push")]
    pub registry_flavor: Option<String>,
    /// JSON config for the --push registry, validated against its flavor's
    /// schema; `uri` defaults to the host of the first -t.
    #[arg(long = "registry-config", value_name = "JSON", requires = "push")]
    pub registry_config: Option<String>,
    /// Where a builder that writes archives puts the image, buildx's spelling:
    /// type=oci,dest=FILE (an archive `docker load` and OCI tools read);
    /// dest=- writes it to standard output; type=registry is --push,
    /// type=image is --load; type=local,dest=FOLDER and type=tar,dest=FILE
    /// write the image's filesystem.
    #[arg(short = 'o', long, value_name = "type=oci,dest=FILE")]
    pub output: Option<String>,
    /// Write the image ID to FILE, as buildx does: the config digest (an
    /// index's digest for several platforms), read from the image archive
    /// (-o, --load); with no archive (--push alone, or a skipped build) the
    /// manifest digest.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the build's result to FILE as JSON with buildx's keys
    /// (`containerimage.digest`, `containerimage.config.digest`,
    /// `image.name`) and kiln's (`kiln.status`, `kiln.pushed`).
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Load the image into the local Docker Engine (DOCKER_HOST, else the
    /// default socket), as `docker buildx build --load`.
    #[arg(long, conflicts_with = "output")]
    pub load: bool,
    /// A named base for FROM and COPY --from, buildx's spelling (repeatable):
    /// NAME=oci-layout://PATH[:TAG] (an OCI layout folder or archive) or
    /// NAME=docker-image://REF.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// A secret for RUN --mount=type=secret, buildx's spelling (repeatable):
    /// id=ID,src=FILE or id=ID,env=VAR (id=ID alone reads the variable ID).
    /// Its value goes to the builder only: never into the image, the
    /// cache, a log or the plan.
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// Where earlier builds' layers and RUN results may be found, buildx's
    /// spelling (repeatable): type=registry,ref=REF, or REF alone.
    #[arg(long = "cache-from", value_name = "type=registry,ref=REF")]
    pub cache_from: Vec<String>,
    /// Store this build's layers and RUN results in a registry, for other
    /// machines' --cache-from (repeatable): type=registry,ref=REF[,mode=max]
    /// (min, the default: the image's layers; max: every stage's). Never a
    /// secret or a cache mount's contents.
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF[,mode=max]")]
    pub cache_to: Vec<String>,
    /// Build-time variable KEY=VALUE (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build this stage of a multi-stage Dockerfile.
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform (linux/amd64, ...); a comma-separated list builds one
    /// image per platform and an OCI image index over them.
    #[arg(long, value_name = "PLATFORM[,PLATFORM...]")]
    pub platform: Option<String>,
    /// Image label KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Do not use the builder's cache.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Always try to pull newer versions of base images.
    #[arg(long)]
    pub pull: bool,
    /// Build even when a checker finds the image already.
    #[arg(long)]
    pub force: bool,
    /// What to do when no checker can tell whether the image exists: build
    /// (default, Flyte's rule) or fail.
    #[arg(long = "on-unknown", value_enum, default_value_t = OnUnknown::Build)]
    pub on_unknown: OnUnknown,
    /// Print the plan (builder, context hash and size, image, checks) and stop:
    /// nothing is constructed or contacted.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// How progress is shown on stderr, buildx's names: tty (a live line
    /// with the current step, output above it), plain (lines), auto (tty
    /// on a terminal, else plain), quiet (warnings and errors only),
    /// rawjson (one JSON object per line).
    #[arg(long, value_name = "MODE", value_parser = ["auto", "tty", "plain", "quiet", "rawjson"], default_value = "auto")]
    pub progress: String,
    /// Quiet, as `docker build -q`: no progress, and the image ID (else the
    /// digest) alone on stdout.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print the result as JSON: {"image","digest","pushed","image_id","status","reason","context_sha1","seconds"} (digest: the manifest digest; pushed: repo@digest in a registry; image_id: the config digest).
    #[arg(long)]
    pub json: bool,
}

/// Which registry a build goes through.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryChoice {
    /// `--registry COMPONENT`: a project's component.
    Component(String),
    /// `--push`: a flavor and config given inline, for the host of `image`.
    Push {
        /// `--registry-flavor`.
        flavor: Option<String>,
        /// `--registry-config`, as typed.
        config: Option<String>,
        /// The first `-t`, whose host the registry is by default.
        image: String,
        /// Whether that image's tag was given (always built and pushed) or
        /// is derived from the inputs (skipped when the registry has it).
        explicit_tag: bool,
    },
}

/// Which builder the user named.
#[derive(Debug, Clone, PartialEq)]
pub enum BuilderChoice {
    /// Nothing named: the default flavor, chosen from the Dockerfile.
    Default,
    /// `--builder COMPONENT`.
    Component(String),
    /// `--builder-flavor FLAVOR [--builder-config JSON]`.
    Flavor {
        /// The flavor.
        name: String,
        /// Its config (an object; empty when not given).
        config: Map<String, Value>,
    },
}

/// `--output`'s `type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// An OCI image layout archive.
    Oci,
    /// Docker's `docker save` archive.
    Docker,
    /// The image's filesystem, written into a folder (buildx's `local`).
    Local,
    /// The image's filesystem as a tar (buildx's `tar`).
    Tar,
}

impl OutputKind {
    /// Its `type=` name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Oci => "oci",
            OutputKind::Docker => "docker",
            OutputKind::Local => "local",
            OutputKind::Tar => "tar",
        }
    }

    /// Whether it is an image archive (not a filesystem).
    pub fn is_image(self) -> bool {
        matches!(self, OutputKind::Oci | OutputKind::Docker)
    }
}

/// `--output type=oci,dest=FILE`, with `dest` made absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OutputSpec {
    /// `type=`.
    #[serde(rename = "type")]
    pub kind: OutputKind,
    /// `dest=`, absolute, or `-` for standard output.
    pub dest: PathBuf,
    /// `--load`: the archive goes to the Docker Engine (`dest` is `-`:
    /// kiln, not the builder, decides where it goes).
    #[serde(skip)]
    pub load: bool,
}

impl OutputSpec {
    /// `dest=-`: the archive goes to standard output.
    pub fn to_stdout(&self) -> bool {
        self.dest.as_os_str() == "-" && !self.load
    }

    /// The builder writes a temporary file that kiln then hands on (to
    /// standard output, or to the Docker Engine for `--load`).
    pub fn through_kiln(&self) -> bool {
        self.dest.as_os_str() == "-"
    }
}

/// One `--build-context NAME=VALUE`, buildx's spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `oci-layout://PATH[:TAG|@DIGEST]`: an OCI layout folder or archive;
    /// the path is absolute, the suffix kept.
    OciLayout(String),
    /// `docker-image://REF`.
    DockerImage(String),
}

impl fmt::Display for NamedContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamedContext::OciLayout(p) => write!(f, "oci-layout://{p}"),
            NamedContext::DockerImage(r) => write!(f, "docker-image://{r}"),
        }
    }
}

impl Serialize for NamedContext {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NamedContext {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Some(path) = text.strip_prefix("oci-layout://") {
            Ok(NamedContext::OciLayout(path.to_string()))
        } else if let Some(reference) = text.strip_prefix("docker-image://") {
            Ok(NamedContext::DockerImage(reference.to_string()))
        } else {
            Err(serde::de::Error::custom(format!(
                "not a build context: {text:?}"
            )))
        }
    }
}

/// Everything `kiln build` was asked, validated. Paths are absolute
/// against the working directory; nothing has been read.
#[derive(Debug, Clone)]
pub struct Options {
    /// The context root, as given (resolved by the context).
    pub dir: PathBuf,
    /// `-f`, as given.
    pub dockerfile: Option<PathBuf>,
    /// `--dockerignore`, as given.
    pub dockerignore: Option<PathBuf>,
    /// The builder named.
    pub builder: BuilderChoice,
    /// `--registry COMPONENT` or `--push`.
    pub registry: Option<RegistryChoice>,
    /// `-t`, each a valid reference `NAME[:TAG]` (no digest).
    pub tags: Vec<String>,
    /// `--build-arg`, in order given.
    pub build_args: Vec<(String, String)>,
    /// `--label`, in order given.
    pub labels: Vec<(String, String)>,
    /// `--target`.
    pub target: Option<String>,
    /// `--platform`, normalised: none, one, or several (an image index).
    pub platforms: Vec<Platform>,
    /// `--output`.
    pub output: Option<OutputSpec>,
    /// `--build-context`, by name.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// `--secret`: where each value is read from (not the values).
    pub secrets: Vec<SecretSpec>,
    /// `--cache-from`.
    pub cache_from: Vec<CacheSpec>,
    /// `--cache-to`.
    pub cache_to: Vec<CacheSpec>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// `--force`.
    pub force: bool,
    /// `--on-unknown`.
    pub on_unknown: OnUnknown,
    /// `--dry-run`.
    pub dry_run: bool,
    /// The context came from standard input (`kiln build -`): its archive
    /// is not kept in the cache, and the default image name is `stdin`.
    pub from_stdin: bool,
}

impl Options {
    /// Validate `args`; relative paths in `--output` and `--build-context`
    /// are taken against `cwd`. No file is read.
    pub fn from_args(
        args: &BuildArgs,
        cwd: &std::path::Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let builder = match (&args.builder, &args.builder_flavor) {
            (Some(name), _) => BuilderChoice::Component(name.clone()),
            (None, Some(name)) => BuilderChoice::Flavor {
                name: name.clone(),
                config: match &args.builder_config {
                    Some(text) => json_object("--builder-config", text)?,
                    None => Map::new(),
                },
            },
            (None, None) => BuilderChoice::Default,
        };
        // buildx's exporters that are not archives: `type=registry` (and
        // `type=image,push=true`) is --push, `type=image` is --load.
        let output = args
            .output
            .as_deref()
            .map(|spec| output(spec, cwd))
            .transpose()?;
        let push = args.push || matches!(output, Some(Output::Push));
        let load = args.load || matches!(output, Some(Output::Load));
        let tags = args
            .tags
            .iter()
            .map(|t| image_name(t))
            .collect::<Result<Vec<_>>>()?;
        if args.json
            && args
                .output
                .as_deref()
                .is_some_and(|o| o.split(',').any(|part| part == "dest=-"))
        {
            return Err(Error::BadArgument(
                "--output dest=- writes the image to standard output, which --json would share; \
                 give dest=FILE or leave out --json"
                    .into(),
            ));
        }
        let platforms = match args.platform.as_deref() {
            Some(list) => Platform::parse_list(list)
                .map_err(|e| Error::BadArgument(format!("--platform: {e}")))?,
            None => Vec::new(),
        };
        if let Some(target) = &args.target {
            if target.is_empty() || target.chars().any(char::is_whitespace) {
                return Err(Error::BadArgument(format!(
                    "--target {target:?}: expected a stage name"
                )));
            }
        }
        let mut named_contexts = BTreeMap::new();
        for spec in &args.build_contexts {
            let (name, context) = named_context(spec, cwd)?;
            named_contexts.insert(name, context);
        }
        Ok(Self {
            dir: args.dir.clone(),
            dockerfile: args.file.clone(),
            dockerignore: args.dockerignore.clone(),
            builder,
            registry: match (&args.registry, push) {
                (Some(name), _) => Some(RegistryChoice::Component(name.clone())),
                (None, true) => {
                    let first = tags.first().ok_or_else(|| {
                        Error::BadArgument(
                            "--push needs -t NAME[:TAG] naming the registry to push to \
                             (for example -t registry.example.com/team/app:1)"
                                .into(),
                        )
                    })?;
                    Some(RegistryChoice::Push {
                        flavor: args.registry_flavor.clone(),
                        config: args.registry_config.clone(),
                        image: first.clone(),
                        explicit_tag: tags.iter().all(|t| split_tag(t).1.is_some()),
                    })
                }
                (None, false) => None,
            },
            tags,
            build_args: build_args(&args.build_args, env)?,
            labels: labels(&args.labels)?,
            target: args.target.clone(),
            platforms,
            output: if load {
                Some(OutputSpec {
                    kind: OutputKind::Docker,
                    dest: PathBuf::from("-"),
                    load: true,
                })
            } else if let Some(Output::Archive(archive)) = output {
                Some(archive)
            } else {
                None
            },
            named_contexts,
            secrets: args
                .secrets
                .iter()
                .map(|s| secret_spec(s, cwd))
                .collect::<Result<_>>()?,
            cache_from: args
                .cache_from
                .iter()
                .map(|s| cache_spec("--cache-from", s))
                .collect::<Result<_>>()?,
            cache_to: args
                .cache_to
                .iter()
                .map(|s| cache_spec("--cache-to", s))
                .collect::<Result<_>>()?,
            no_cache: args.no_cache,
            pull: args.pull,
            force: args.force,
            on_unknown: args.on_unknown,
            dry_run: args.dry_run,
            from_stdin: false,
        })
    }
}

/// A `-t` value: a reference by Docker's grammar, with at most a tag.
pub fn image_name(name: &str) -> Result<String> {
    names::parse(name).map_err(|e| Error::BadArgument(format!("-t {name:?}: {e}")))?;
    if name.contains('@') {
        return Err(Error::BadArgument(format!(
            "-t {name:?}: give NAME[:TAG]; a digest names an image that exists already"
        )));
    }
    if let (_, Some("")) = split_tag(name) {
        return Err(Error::BadArgument(format!("-t {name:?}: the tag is empty")));
    }
    Ok(name.to_string())
}

/// `text` as a JSON object, or an error naming `flag`.
pub(crate) fn json_object(flag: &str, text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::BadArgument(format!("{flag} must be a JSON object"))),
        Err(e) => Err(Error::BadArgument(format!("{flag} is not valid JSON: {e}"))),
    }
}

/// `KEY=VALUE` pairs, in order.
/// `--build-arg KEY=VALUE`, or `KEY` alone: its value from the environment,
/// and left out when the variable is unset (as buildx does).
fn build_args(
    values: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for v in values {
        if v.contains('=') {
            out.extend(pairs("--build-arg", std::slice::from_ref(v))?);
            continue;
        }
        let name_ok = v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(Error::BadArgument(format!(
                "--build-arg {v:?}: expected KEY=VALUE, or a variable name KEY to take from the \
                 environment"
            )));
        }
        if let Some(value) = env(v) {
            out.push((v.clone(), value));
        }
    }
    Ok(out)
}

/// `--label`s: `KEY=VALUE`, none of them kiln's own record of the inputs.
fn labels(values: &[String]) -> Result<Vec<(String, String)>> {
    let labels = pairs("--label", values)?;
    if labels.iter().any(|(k, _)| k == super::naming::INPUTS_LABEL) {
        return Err(Error::BadArgument(format!(
            "--label {}: kiln sets this label itself (it records the build's inputs)",
            super::naming::INPUTS_LABEL
        )));
    }
    Ok(labels)
}

fn pairs(flag: &str, values: &[String]) -> Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
            _ => Err(Error::BadArgument(format!(
                "{flag} {v:?}: expected KEY=VALUE"
            ))),
        })
        .collect()
}

/// What `--output` asks for.
#[derive(Debug)]
enum Output {
    /// An archive file (or standard output).
    Archive(OutputSpec),
    /// `type=registry`, `type=image,push=true`: --push.
    Push,
    /// `type=image`: --load.
    Load,
}

/// `--output`, buildx's spelling: `type=registry` and
/// `type=image[,push=true|false][,name=...]` are the exporters kiln maps
/// onto --push and --load; any other type is an archive ([`output_spec`]).
fn output(spec: &str, cwd: &std::path::Path) -> Result<Output> {
    let value = |key: &str| {
        spec.split(',')
            .filter_map(|part| part.split_once('='))
            .rfind(|(k, _)| *k == key)
            .map(|(_, v)| v)
    };
    let registry = match value("type") {
        Some("registry") => true,
        Some("image") => false,
        _ => return output_spec(spec, cwd).map(Output::Archive),
    };
    let push = match value("push") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(Error::BadArgument(format!(
                "--output {spec:?}: push={other:?}: expected true or false"
            )))
        }
    };
    match (registry, push) {
        (true, Some(false)) => Err(Error::BadArgument(format!(
            "--output {spec:?}: type=registry always pushes"
        ))),
        (true, _) | (false, Some(true)) => Ok(Output::Push),
        (false, _) => Ok(Output::Load),
    }
}

fn output_spec(spec: &str, cwd: &std::path::Path) -> Result<OutputSpec> {
    let bad = || {
        Error::BadArgument(format!(
            "--output {spec:?}: expected type=oci|docker|tar,dest=FILE|-, \
             type=local,dest=FOLDER, type=registry or type=image[,push=true]"
        ))
    };
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", "oci")) => kind = Some(OutputKind::Oci),
            Some(("type", "docker")) => kind = Some(OutputKind::Docker),
            Some(("type", "local")) => kind = Some(OutputKind::Local),
            Some(("type", "tar")) => kind = Some(OutputKind::Tar),
            // `-`: standard output, as buildx has it.
            Some(("dest", "-")) => dest = Some(PathBuf::from("-")),
            Some(("dest", v)) if !v.is_empty() => dest = Some(cwd.join(v)),
            _ => return Err(bad()),
        }
    }
    match (kind, dest) {
        (Some(OutputKind::Local), Some(dest)) if dest.as_os_str() == "-" => {
            Err(Error::BadArgument(format!(
                "--output {spec:?}: type=local writes a folder: give dest=FOLDER (type=tar,dest=- \
                 writes the same files to standard output)"
            )))
        }
        (Some(kind), Some(dest)) => Ok(OutputSpec {
            kind,
            dest,
            load: false,
        }),
        _ => Err(bad()),
    }
}

/// Where a `--secret`'s value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    /// A file (absolute).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// One `--secret`: its id and where its value is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SecretSpec {
    /// The id `RUN --mount=type=secret,id=ID` names.
    pub id: String,
    /// Where the value is.
    pub source: SecretSource,
}

impl SecretSpec {
    /// Read the value; the error names the source, never the value.
    pub fn read(&self, session_var: impl Fn(&str) -> Option<String>) -> Result<Vec<u8>> {
        match &self.source {
            SecretSource::File(path) => std::fs::read(path).map_err(|e| {
                Error::BadArgument(format!(
                    "--secret id={}: reading {}: {e}",
                    self.id,
                    path.display()
                ))
            }),
            SecretSource::Env(var) => session_var(var).map(String::into_bytes).ok_or_else(|| {
                Error::BadArgument(format!(
                    "--secret id={}: the environment variable {var} is not set",
                    self.id
                ))
            }),
        }
    }
}

/// `id=ID,src=FILE`, `id=ID,env=VAR`, `id=ID` (the variable ID); `type=file`
/// or `type=env` and `source=` as buildx also takes them.
fn secret_spec(spec: &str, cwd: &std::path::Path) -> Result<SecretSpec> {
    let bad = |why: &str| Error::BadArgument(format!("--secret {spec:?}: {why}"));
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE pairs"))?;
        match k {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" => kind = Some(v.to_string()),
            other => return Err(bad(&format!("unknown key {other:?} (id, src, env, type)"))),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| bad("id=ID is required"))?;
    if id.contains('/') {
        return Err(bad("an id cannot contain '/'"));
    }
    let source = match (kind.as_deref(), src, env) {
        (_, Some(_), Some(_)) => return Err(bad("give src or env, not both")),
        (None | Some("file"), Some(path), None) if !path.is_empty() => {
            SecretSource::File(cwd.join(path))
        }
        (Some("env"), Some(var), None) | (None | Some("env"), None, Some(var))
            if !var.is_empty() =>
        {
            SecretSource::Env(var)
        }
        (None | Some("env"), None, None) => SecretSource::Env(id.clone()),
        (Some(t), ..) if t != "file" && t != "env" => {
            return Err(bad(&format!("type={t}: must be file or env")))
        }
        _ => return Err(bad("expected src=FILE or env=VAR")),
    };
    Ok(SecretSpec { id, source })
}

/// `--cache-from`/`--cache-to` (`flag`), buildx's spelling:
/// `type=registry,ref=REF[,mode=min|max]`, or `REF` alone. Other cache
/// types are refused by name; buildx's registry options that kiln's format
/// always satisfies (`image-manifest`, `oci-mediatypes`) are accepted.
pub fn cache_spec(flag: &str, spec: &str) -> Result<CacheSpec> {
    let bad = |why: String| Error::BadArgument(format!("{flag} {spec:?}: {why}"));
    let mut out = CacheSpec {
        kind: "registry".into(),
        ..CacheSpec::default()
    };
    if !spec.contains('=') {
        out.reference = spec.to_string();
    } else {
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad("expected KEY=VALUE pairs".into()))?;
            match k {
                "type" if v == "registry" => {}
                "type" => {
                    return Err(bad(format!(
                        "type={v}: kiln keeps a shared cache in a registry only \
                         (type=registry,ref=REF)"
                    )))
                }
                "ref" => out.reference = v.to_string(),
                "mode" if flag == "--cache-to" && (v == "min" || v == "max") => {
                    out.mode = v.to_string()
                }
                "mode" => return Err(bad(format!("mode={v}: expected min or max (--cache-to)"))),
                "image-manifest" | "oci-mediatypes" if v == "true" => {}
                other => {
                    return Err(bad(format!(
                        "unknown key {other:?} (type, ref{})",
                        if flag == "--cache-to" { ", mode" } else { "" }
                    )))
                }
            }
        }
    }
    if out.reference.is_empty() {
        return Err(bad("ref=REF is required".into()));
    }
    names::parse(&out.reference).map_err(|e| bad(format!("ref: {e}")))?;
    if out.reference.contains('@') {
        return Err(bad(
            "ref: give NAME[:TAG]; a cache is stored under a tag".into()
        ));
    }
    Ok(out)
}

fn named_context(spec: &str, cwd: &std::path::Path) -> Result<(String, NamedContext)> {
    let (name, value) = spec
        .split_once('=')
        .filter(|(n, _)| !n.is_empty())
        .ok_or_else(|| {
            Error::BadArgument(format!("--build-context {spec:?}: expected NAME=VALUE"))
        })?;
    let context = if let Some(path) = value.strip_prefix("oci-layout://") {
        if path.is_empty() {
            return Err(Error::BadArgument(format!(
                "--build-context {spec:?}: oci-layout:// needs a path"
            )));
        }
        NamedContext::OciLayout(cwd.join(path).to_string_lossy().into_owned())
    } else if let Some(reference) = value.strip_prefix("docker-image://") {
        names::parse(reference)
            .map_err(|e| Error::BadArgument(format!("--build-context {spec:?}: {e}")))?;
        NamedContext::DockerImage(reference.to_string())
    } else {
        return Err(Error::BadArgument(format!(
            "--build-context {spec:?}: kiln takes oci-layout://PATH[:TAG] (an OCI layout \
             folder or archive) or docker-image://REF"
        )));
    };
    Ok((name.to_string(), context))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BuildArgs,
    }

    fn options(extra: &[&str]) -> Result<Options> {
        let mut argv = vec!["kiln", "ctx"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).expect("clap");
        Options::from_args(&cli.args, Path::new("/work"), &|name| {
            (name == "FROM_ENV").then(|| "env value".to_string())
        })
    }

    #[test]
    fn buildx_exporters_map_to_push_and_load() {
        let o = options(&["-t", "reg.io/a/b:1", "-o", "type=registry"]).expect("registry");
        assert!(matches!(o.registry, Some(RegistryChoice::Push { .. })));
        assert_eq!(o.output, None);
        let o =
            options(&["-t", "reg.io/a/b:1", "-o", "type=image,name=x,push=true"]).expect("push");
        assert!(matches!(o.registry, Some(RegistryChoice::Push { .. })));
        let o = options(&["-t", "b:1", "-o", "type=image"]).expect("image");
        assert!(o.registry.is_none());
        assert!(o.output.as_ref().is_some_and(|out| out.load));
        // The image's filesystem: a folder, or a tar (to standard output too).
        let o = options(&["-o", "type=local,dest=rootfs"]).expect("local");
        let out = o.output.expect("an output");
        assert_eq!(
            (out.kind, out.dest.as_path(), out.kind.is_image()),
            (OutputKind::Local, Path::new("/work/rootfs"), false)
        );
        let o = options(&["--output", "type=tar,dest=-"]).expect("tar");
        let out = o.output.expect("an output");
        assert_eq!((out.kind, out.to_stdout()), (OutputKind::Tar, true));
        refused(&["-o", "type=local,dest=-"], "type=local writes a folder");
        refused(&["-o", "type=local"], "type=local,dest=FOLDER");
        refused(&["-o", "type=zip,dest=x"], "type=oci|docker|tar");
        refused(&["-o", "type=registry,push=false"], "always pushes");
        refused(&["-o", "type=registry"], "--push needs -t");
    }

    fn refused(extra: &[&str], needle: &str) {
        match options(extra) {
            Err(Error::BadArgument(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("{extra:?}: {other:?}"),
        }
    }

    #[test]
    fn good_flags_become_typed_options() {
        let o = options(&[
            "-t",
            "127.0.0.1:5000/team/app:1",
            "-t",
            "app",
            "--output",
            "type=oci,dest=out/img.tar",
            "--build-context",
            "base=oci-layout://layouts/b:1",
            "--build-context",
            "img=docker-image://alpine:3",
            "--platform",
            "linux/arm64/v8",
            "--build-arg",
            "A=1=2",
            "--build-arg",
            "FROM_ENV",
            "--build-arg",
            "UNSET_IN_ENV",
            "--builder-flavor",
            "oci",
            "--builder-config",
            r#"{"created": 5}"#,
        ])
        .expect("valid");
        assert_eq!(o.tags, ["127.0.0.1:5000/team/app:1", "app"]);
        assert_eq!(
            o.output,
            Some(OutputSpec {
                kind: OutputKind::Oci,
                dest: "/work/out/img.tar".into(),
                load: false,
            })
        );
        assert_eq!(
            o.named_contexts["base"].to_string(),
            "oci-layout:///work/layouts/b:1"
        );
        assert_eq!(
            o.named_contexts["img"].to_string(),
            "docker-image://alpine:3"
        );
        assert_eq!(Platform::join(&o.platforms), "linux/arm64/v8");
        assert_eq!(
            o.build_args,
            [
                ("A".to_string(), "1=2".to_string()),
                ("FROM_ENV".to_string(), "env value".to_string())
            ]
        );
        assert!(
            matches!(o.builder, BuilderChoice::Flavor { ref name, ref config }
            if name == "oci" && config["created"] == 5)
        );
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        refused(&["--output", "type=oci"], "--output");
        refused(&["--output", "type=rar,dest=x"], "--output");
        refused(&["--output", "dest=x,type=oci,extra=1"], "--output");
        refused(&["--build-context", "x"], "--build-context");
        refused(&["--build-context", "=oci-layout://x"], "--build-context");
        refused(&["--build-context", "x=local://y"], "oci-layout://");
        refused(
            &["--build-context", "x=docker-image://Bad:1"],
            "invalid reference",
        );
        refused(&["--platform", "linux"], "--platform");
        refused(&["--platform", "linux/amd64/v8/x"], "--platform");
        refused(&["--platform", "linux/amd64,linux/amd64"], "named twice");
        refused(&["-t", "Hello:1"], "-t \"Hello:1\"");
        refused(&["-t", "hello:bad tag"], "invalid reference");
        refused(&["-t", "hello::x"], "invalid reference");
        refused(
            &[
                "-t",
                "app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ],
            "digest",
        );
        refused(&["--build-arg", "=1"], "--build-arg");
        refused(&["--build-arg", "NOT A NAME"], "--build-arg");
        refused(&["--label", "nolabel"], "--label");
        refused(&["--label", "dev.kiln.inputs={}"], "kiln sets this label");
        refused(
            &["--builder-flavor", "oci", "--builder-config", "[1]"],
            "JSON object",
        );
        refused(
            &["--builder-flavor", "oci", "--builder-config", "{"],
            "not valid JSON",
        );
        refused(&["--target", ""], "--target");
    }

    #[test]
    fn cache_specs_take_buildx_spellings_and_refuse_other_kinds() {
        let o = options(&[
            "--cache-from",
            "reg.io/team/cache:main",
            "--cache-to",
            "type=registry,ref=reg.io/team/cache:main,mode=max,image-manifest=true",
        ])
        .expect("cache");
        assert_eq!(o.cache_from[0].kind, "registry");
        assert_eq!(o.cache_from[0].reference, "reg.io/team/cache:main");
        assert_eq!(o.cache_from[0].mode, "");
        assert_eq!(o.cache_to[0].mode, "max");
        for (flag, bad, said) in [
            ("--cache-to", "type=local,dest=/tmp/c", "type=local"),
            ("--cache-from", "type=gha", "type=gha"),
            ("--cache-to", "type=registry", "ref=REF is required"),
            ("--cache-to", "type=registry,ref=Bad:tag:x", "ref:"),
            (
                "--cache-to",
                "ref=reg.io/a@sha256:".to_string().as_str(),
                "ref:",
            ),
            ("--cache-to", "ref=reg.io/a:1,mode=all", "mode=all"),
            ("--cache-from", "ref=reg.io/a:1,mode=max", "mode=max"),
            (
                "--cache-to",
                "ref=reg.io/a:1,compression=zstd",
                "compression",
            ),
        ] {
            let e = options(&[flag, bad]).expect_err(bad).to_string();
            assert!(e.contains(flag) && e.contains(said), "{bad}: {e}");
        }
    }
}
