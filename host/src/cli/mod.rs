//! The command layer: turns parsed arguments into calls on the library and
//! results on stdout. `main` only parses and maps the outcome to an exit code.

mod args;
mod build;
mod cache;
mod component;
mod context;
mod flavor;
mod image;
mod plugin;

pub use args::Cli;
use args::Command;

pub use crate::session::Environment;
use crate::{
    error::{exit, Result},
    session::Session,
    state::Project,
};

/// Run a parsed command line. Returns the exit code for success paths that
/// still report failure (`plugin check` with bad files); errors carry theirs.
pub fn run(cli: Cli, env: &Environment) -> Result<i32> {
    crate::output::init_colour(env.var("NO_COLOR").is_some_and(|v| !v.is_empty()));
    let session = Session::new(&cli.plugins_dirs, cli.project.as_ref(), env);
    match cli.command {
        Command::Flavor(cmd) => flavor::run(&session, cmd),
        Command::Plugin(cmd) => plugin::run(&session, cmd),
        Command::Component(cmd) => component::run(&session, cmd),
        Command::Context(cmd) => context::run(&session, cmd),
        Command::Image(cmd) => image::run(&session, cmd),
        Command::Cache(cmd) => cache::run(&session, cmd),
        Command::Build(args) => build::run(&session, *args),
        Command::Push {
            image,
            registry,
            json,
        } => build::push(&session, &image, &registry, json),
        Command::Worker => crate::build::worker::run_worker(&session),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command, "kiln", &mut out);
            crate::output::result(String::from_utf8_lossy(&out).trim_end());
            Ok(exit::OK)
        }
        Command::Man { dir } => {
            let dir = env.cwd.join(dir);
            let written = man_pages(&dir)?;
            crate::output::result(&format!("wrote {written} man pages to {}", dir.display()));
            Ok(exit::OK)
        }
        Command::Init => {
            let root = session
                .project_flag()
                .cloned()
                .unwrap_or_else(|| env.cwd.clone());
            let (project, created) = Project::init(&root)?;
            let dir = project.dir();
            if created {
                // The user made this project: its plugins folder is theirs.
                if let Some(store) =
                    crate::plugins::trust::store_path(env.user_plugins_dir.as_deref())
                {
                    crate::plugins::trust::trust(&store, &project.plugins_dir())?;
                }
                crate::output::result(&format!("initialised kiln project in {}", dir.display()));
            } else {
                crate::output::result(&format!("{} is already a kiln project", dir.display()));
            }
            Ok(exit::OK)
        }
    }
}

/// One page per command (`kiln.1`, `kiln-build.1`, `kiln-flavor-list.1`,
/// ...), hidden commands left out, each written atomically.
fn man_pages(dir: &std::path::Path) -> Result<usize> {
    fn walk(
        command: &clap::Command,
        prefix: &str,
        dir: &std::path::Path,
        written: &mut usize,
    ) -> Result<()> {
        let name = if prefix.is_empty() {
            command.get_name().to_string()
        } else {
            format!("{prefix}-{}", command.get_name())
        };
        let page = command.clone().name(name.clone());
        let mut roff = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut roff)
            .map_err(|e| crate::error::Error::io("rendering", &name, e))?;
        let path = dir.join(format!("{name}.1"));
        kiln_archive::atomic::write(&path, &roff, 0o644)
            .map_err(|e| crate::error::Error::io("writing", &path, e.source))?;
        *written += 1;
        for sub in command
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            walk(sub, &name, dir, written)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::io("creating", dir, e))?;
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let mut written = 0;
    walk(&command, "", dir, &mut written)?;
    Ok(written)
}
