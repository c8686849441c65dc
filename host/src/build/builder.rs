//! Step 2 of a build: the builder. The component or flavor named, else the
//! daemonless [`DEFAULT_FLAVOR`] (which runs `RUN` through an OCI runtime).

use kiln_plugin_api::ComponentType;

use super::options::BuilderChoice;
use crate::{
    components::ResolvedComponent,
    error::{Error, Result},
    plugins::Catalog,
    session::Session,
};

/// The flavor used when no builder is named: the daemonless builder.
pub const DEFAULT_FLAVOR: &str = "oci";

/// Resolve `choice`.
pub fn choose(
    session: &Session<'_>,
    catalog: &Catalog,
    choice: &BuilderChoice,
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
