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
            if let Some(line) = super::dockerfile::first_run(&text) {
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
