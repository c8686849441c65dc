//! The command layer: turns parsed arguments into calls on the library and
//! results on stdout. `main` only parses and maps the outcome to an exit code.

mod args;
mod build;
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
    let session = Session::new(&cli.plugins_dirs, cli.project.as_ref(), env);
    match cli.command {
        Command::Flavor(cmd) => flavor::run(&session, cmd),
        Command::Plugin(cmd) => plugin::run(&session, cmd),
        Command::Component(cmd) => component::run(&session, cmd),
        Command::Context(cmd) => context::run(&session, cmd),
        Command::Image(cmd) => image::run(&session, cmd),
        Command::Build(args) => build::run(&session, *args),
        Command::Push {
            image,
            registry,
            json,
        } => build::push(&session, &image, &registry, json),
        Command::Worker => crate::build::worker::run_worker(&session),
        Command::Init => {
            let root = session
                .project_flag()
                .cloned()
                .unwrap_or_else(|| env.cwd.clone());
            let (project, created) = Project::init(&root)?;
            let dir = project.dir();
            if created {
                crate::output::result(&format!("initialised kiln project in {}", dir.display()));
            } else {
                crate::output::result(&format!("{} is already a kiln project", dir.display()));
            }
            Ok(exit::OK)
        }
    }
}
