//! Raw command-line arguments (clap). Validated settings are built from these
//! in `cli::run`; nothing here touches the file system.

// The doc comments on clap types are `--help` text, written for the
// terminal: `[:TAG]` and `<Dockerfile>` are not links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kiln_plugin_api::ComponentType;

pub use crate::build::options::BuildArgs;

/// kiln: build container images through builder and registry plugins.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, max_term_width = 100)]
pub struct Cli {
    /// Search this folder for plugins first (repeatable; before KILN_PLUGINS_DIR,
    /// the project's .kiln/plugins and the user's plugins folder).
    #[arg(long = "plugins-dir", value_name = "DIR", global = true)]
    pub plugins_dirs: Vec<PathBuf>,

    /// Use the project in DIR instead of searching upwards from the working directory.
    #[arg(long, value_name = "DIR", global = true)]
    pub project: Option<PathBuf>,

    /// More diagnostics on stderr (-v debug, -vv trace). KILN_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List and describe the flavors the installed plugins offer.
    #[command(subcommand)]
    Flavor(FlavorCommand),
    /// Check and install plugin libraries.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Create a kiln project (.kiln/) in the current directory or --project DIR.
    Init,
    /// Build an image from a context directory through a builder plugin.
    Build(Box<BuildArgs>),
    /// Internal: execute a build handed over on stdin, in a process of its own.
    #[command(name = "__worker", hide = true)]
    Worker,
    /// Push a local image (an explicit NAME:TAG) through a registry component.
    Push {
        /// The image, with its tag.
        #[arg(value_name = "NAME:TAG")]
        image: String,
        /// The container-registry component.
        #[arg(long, value_name = "COMPONENT")]
        registry: String,
        /// Print JSON: {"image","digest"}.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and pack build contexts (Docker's .dockerignore rules, deterministic archive).
    #[command(subcommand)]
    Context(ContextCommand),
    /// Ask a registry about an image.
    #[command(subcommand)]
    Image(ImageCommand),
    /// kiln's cache folder: how big it is, and pruning it (buildx's `du`
    /// and `prune`).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Register and manage named components (a flavor plus validated config).
    #[command(subcommand, alias = "components")]
    Component(ComponentCommand),
    /// Print a shell completion script, generated from kiln's command line
    /// (e.g. `kiln completions bash > /etc/bash_completion.d/kiln`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write kiln's man pages (kiln.1, kiln-build.1, ...) into DIR,
    /// generated from its command line.
    Man {
        /// The folder to write into (created when missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// A component type on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    /// Image builders.
    ImageBuilder,
    /// Container registries.
    ContainerRegistry,
}

impl From<TypeArg> for ComponentType {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::ImageBuilder => ComponentType::IMAGE_BUILDER,
            TypeArg::ContainerRegistry => ComponentType::CONTAINER_REGISTRY,
        }
    }
}

/// `kiln flavor ...`
#[derive(Debug, Subcommand)]
pub enum FlavorCommand {
    /// List flavors (table, or --json). Plugin problems are reported, not fatal.
    #[command(alias = "ls")]
    List {
        /// Only flavors of this type.
        #[arg(long = "type", value_name = "TYPE")]
        component_type: Option<TypeArg>,
        /// Print JSON: {"flavors": [...], "problems": [...]}.
        #[arg(long)]
        json: bool,
        /// Exit non-zero when any plugin file could not be loaded.
        #[arg(long)]
        strict: bool,
    },
    /// Show one flavor's descriptor and config schema.
    #[command(alias = "show")]
    Describe {
        /// The flavor name.
        flavor: String,
        /// Its type, when the name is offered by both types.
        #[arg(long = "type", value_name = "TYPE")]
        component_type: Option<TypeArg>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a config against a flavor's schema, as `component register`
    /// would, without registering anything (exit 0 valid, 2 not).
    Validate {
        /// The flavor name.
        flavor: String,
        /// Its type, when the name is offered by both types.
        #[arg(long = "type", value_name = "TYPE")]
        component_type: Option<TypeArg>,
        /// The config, a JSON object.
        #[arg(long, value_name = "JSON")]
        config: String,
        /// Print JSON: {"flavor","type","valid","problems"}.
        #[arg(long)]
        json: bool,
    },
}

/// `kiln cache ...`
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Show what the cache holds: size and last use per part (contexts,
    /// each builder's), and the total.
    Du {
        /// Print JSON: {"path","bytes","files","parts":[{"name","bytes","files","last_used_unix"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Remove cached files, least recently used first; without options,
    /// everything (what a running build writes or holds is never removed).
    Prune {
        /// Keep at most this much (e.g. 10GB, 512MB), the most recently used.
        #[arg(long, value_name = "SIZE")]
        keep_storage: Option<String>,
        /// Only what was not used for a while: `until=24h` (s, m, h, d).
        #[arg(long, value_name = "FILTER")]
        filter: Vec<String>,
        /// Print JSON: {"files","bytes","kept"}.
        #[arg(long)]
        json: bool,
    },
}

/// `kiln image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Whether an image exists in its registry: exit 0 it does, 1 it does
    /// not, 7 the registry cannot tell (Flyte's ImageChecker contract).
    Exists {
        /// The image.
        #[arg(value_name = "NAME:TAG")]
        image: String,
        /// A platform it must exist for (repeatable or comma-separated; all
        /// must be there).
        #[arg(long = "platform", value_name = "PLATFORM")]
        platforms: Vec<String>,
        /// A registry component of the project.
        #[arg(long, value_name = "COMPONENT", conflicts_with_all = ["registry_flavor", "registry_config"])]
        registry: Option<String>,
        /// A registry flavor to ask, no project needed (default: `default`,
        /// at the image's host, with Docker's credentials for it).
        #[arg(long, value_name = "FLAVOR")]
        registry_flavor: Option<String>,
        /// That flavor's config (JSON object); `uri` defaults to the image's host.
        #[arg(long, value_name = "JSON")]
        registry_config: Option<String>,
        /// Print JSON: {"image","state","exists","digest"|"reason"}.
        #[arg(long)]
        json: bool,
    },
}

/// `kiln plugin ...`
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load plugin files and report; non-zero exit if any is bad.
    Check {
        /// Plugin libraries.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check plugin files, then copy them into the user's plugins folder.
    Install {
        /// Plugin libraries.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show the plugin folders searched, in order.
    Dirs {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Trust the project's plugins folder (`.kiln/plugins`): load the
    /// libraries in it. `kiln init` trusts the project it creates.
    Trust,
    /// Stop trusting the project's plugins folder.
    Untrust,
}

/// Config edits shared by register and update.
#[derive(Debug, Args, Default)]
pub struct ConfigEdits {
    /// Set a config key (KEY=VALUE; VALUE is JSON when it parses, else a string;
    /// a.b=... sets a nested key). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// `kiln component ...`
#[derive(Debug, Subcommand)]
pub enum ComponentCommand {
    /// Register a new component; its config is validated against the flavor's schema.
    Register {
        /// Component name.
        name: String,
        /// Component type.
        #[arg(long = "type", value_name = "TYPE")]
        component_type: TypeArg,
        /// Flavor name.
        #[arg(long)]
        flavor: String,
        /// Config edits.
        #[command(flatten)]
        edits: ConfigEdits,
        /// Start from this JSON config file (- for stdin); --set applies on top.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List components.
    #[command(alias = "ls")]
    List {
        /// Only components of this type.
        #[arg(long = "type", value_name = "TYPE")]
        component_type: Option<TypeArg>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a component (secrets masked).
    #[command(alias = "show")]
    Describe {
        /// Component name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a component's config; the result is validated again.
    Update {
        /// Component name.
        name: String,
        /// Config edits.
        #[command(flatten)]
        edits: ConfigEdits,
        /// Remove a config key (repeatable).
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Rename a component.
    #[command(alias = "mv")]
    Rename {
        /// Current name.
        old: String,
        /// New name.
        new: String,
    },
    /// Delete a component and its stored secrets.
    #[command(alias = "rm")]
    Delete {
        /// Component name.
        name: String,
    },
}

/// Where the context comes from; shared by the `context` commands.
#[derive(Debug, Args)]
pub struct ContextArgs {
    /// The context root.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The ignore file (default: <Dockerfile>.dockerignore when present, else DIR/.dockerignore).
    #[arg(long, value_name = "FILE")]
    pub dockerignore: Option<PathBuf>,
    /// The Dockerfile, relative to the working directory as for `docker build -f`
    /// (default: DIR/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "DOCKERFILE")]
    pub file: Option<PathBuf>,
    /// Let this image-builder component add files to the context (its context hook).
    #[arg(long, value_name = "COMPONENT")]
    pub builder: Option<String>,
}

/// `kiln context ...`
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// List the files and symlinks that would be sent, sorted by byte order.
    Ls {
        /// Where the context comes from.
        #[command(flatten)]
        context: ContextArgs,
        /// Print one JSON array of relative paths.
        #[arg(long)]
        json: bool,
    },
    /// Write the context archive (tar, or tar.gz with --gzip) atomically and print its sha1.
    Pack {
        /// Where the context comes from.
        #[command(flatten)]
        context: ContextArgs,
        /// The archive to write.
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: PathBuf,
        /// Compress with gzip.
        #[arg(long)]
        gzip: bool,
        /// Print JSON: {"sha1","bytes","files","path"}.
        #[arg(long)]
        json: bool,
    },
    /// Store the gzip archive in an artifact store as <STORE>/<DIR>/<sha1>.tar.gz
    /// (skipped when present).
    Upload {
        /// Where the context comes from.
        #[command(flatten)]
        context: ContextArgs,
        /// The artifact store: a directory path or file:///path URL.
        #[arg(long, value_name = "STORE")]
        store: String,
        /// The folder inside the store.
        #[arg(long = "store-dir", value_name = "DIR", default_value = crate::context::store::DEFAULT_DIR)]
        store_dir: String,
        /// Print JSON: {"uri","sha1","bytes","skipped"}.
        #[arg(long)]
        json: bool,
    },
}
