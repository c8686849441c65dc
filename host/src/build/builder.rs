//! Step 2 of a build: the builder. The component or flavor named, else the
//! daemonless [`DEFAULT_FLAVOR`] when the Dockerfile runs no command; a
//! Dockerfile with `RUN` and no builder named is refused, naming the line
//! and [`RUNNING_FLAVOR`].

use std::path::Path;

use kiln_plugin_api::ComponentType;

use super::options::BuilderChoice;
use crate::{
    components::ResolvedComponent,
    error::{Error, Result},
    plugins::Catalog,
    session::Session,
};

/// The flavor used when no builder is named and the Dockerfile runs no
/// command: the daemonless builder.
pub const DEFAULT_FLAVOR: &str = "oci";
/// The flavor named when the Dockerfile runs commands.
pub const RUNNING_FLAVOR: &str = "local";

/// The 1-based line of the first `RUN`, by kiln's one Dockerfile parser.
/// A Dockerfile that does not parse has none here: the builder reports
/// the parse error, naming the line.
pub fn first_run(text: &str) -> Option<usize> {
    let file = kiln_dockerfile::parse(text).ok()?;
    file.instructions
        .iter()
        .find(|i| i.keyword == "RUN")
        .map(|i| i.line)
}

/// Resolve `choice`; `dockerfile` (on disk) is read only when nothing is
/// named.
pub fn choose(
    session: &Session<'_>,
    catalog: &Catalog,
    choice: &BuilderChoice,
    dockerfile: &Path,
) -> Result<ResolvedComponent> {
    let t = ComponentType::IMAGE_BUILDER;
    match choice {
        BuilderChoice::Component(name) => {
            ResolvedComponent::from_component(session, catalog, name, t)
        }
        BuilderChoice::Flavor { name, config } => {
            let flavor = catalog.find(Some(t), name)?;
            ResolvedComponent::from_flavor(flavor.clone(), config.clone())
        }
        BuilderChoice::Default => {
            let text = std::fs::read_to_string(dockerfile)
                .map_err(|e| Error::io("reading", dockerfile.to_path_buf(), e))?;
            if let Some(line) = first_run(&text) {
                return Err(Error::BadArgument(format!(
                    "{} line {line}: RUN runs a command, and the default builder (flavor \
                     {DEFAULT_FLAVOR}, no daemon) runs none: build with a Docker Engine with \
                     --builder-flavor {RUNNING_FLAVOR}, or name a builder with --builder COMPONENT",
                    dockerfile.display()
                )));
            }
            let flavor = catalog.find(Some(t), DEFAULT_FLAVOR).map_err(|e| {
                Error::BadArgument(format!(
                    "no builder named: pass --builder COMPONENT or --builder-flavor FLAVOR \
                     (the default, flavor {DEFAULT_FLAVOR:?}, is not available: {e})"
                ))
            })?;
            ResolvedComponent::from_flavor(flavor.clone(), Default::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_run_past_continuations_and_comments() {
        assert_eq!(first_run("FROM scratch\nCOPY a /\n"), None);
        assert_eq!(first_run("FROM scratch\n  run make\n"), Some(2));
        // A RUN inside another instruction's continuation is an argument.
        assert_eq!(first_run("FROM x\nLABEL a=1 \\\n  # c\n\nRUN=2\n"), None);
        assert_eq!(
            first_run("FROM x\nENV A=1 \\\n    B=2\nRUN true\n"),
            Some(4)
        );
        assert_eq!(first_run("FROM x\n# RUN nothing\nCOPY a b\n"), None);
        // With the backtick escape, a backslash does not continue a line.
        assert_eq!(
            first_run("# escape=`\nFROM x\nCOPY a c:\\\nRUN dir\n"),
            Some(4)
        );
        assert_eq!(first_run("# escape=`\nFROM x\nLABEL a=1 `\nRUN=x\n"), None);
        // A here-document's body is not an instruction.
        assert_eq!(
            first_run("FROM x\nCOPY <<EOF /notes\nRUN is just text here\nEOF\nRUN real\n"),
            Some(5)
        );
    }
}
