//! `kiln push NAME:TAG --registry COMPONENT`: membership, then the registry
//! plugin's `prepare_image_push` and `push_image`, with the same registry
//! rules and error mapping as a build.

use kiln_distribution::split_tag;
use kiln_plugin_api::{client::RegistryCalls, ComponentType};
use serde::Serialize;

use super::{interrupt, options::image_name, registry::Connected};
use crate::{
    components::ResolvedComponent,
    error::{Error, Result},
    plugins::{progress_sink, CancelFlag},
    session::Session,
};

/// A finished push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Pushed {
    /// The image pushed.
    pub image: String,
    /// The digest the registry reports.
    pub digest: String,
}

/// The registry component `registry` and a checked `image` (an explicit
/// tag) for a push: what `kiln push` resolves before anything is called.
pub fn prepare(session: &Session<'_>, image: &str, registry: &str) -> Result<ResolvedComponent> {
    image_name(image)?;
    if split_tag(image).1.is_none() {
        return Err(Error::BadArgument(format!(
            "{image}: push an explicit tag (NAME:TAG); kiln never pushes every tag of a name"
        )));
    }
    let catalog = session.catalog();
    ResolvedComponent::from_component(
        session,
        &catalog,
        registry,
        ComponentType::CONTAINER_REGISTRY,
    )
}

/// Push `image` through `component` ([`prepare`]d) in this process:
/// membership, `prepare_image_push`, `push_image`. The worker calls it;
/// `kiln push` goes through [`super::worker::push_in_worker`].
pub fn push(session: &Session<'_>, component: &ResolvedComponent, image: &str) -> Result<Pushed> {
    let connected = Connected::connect(session, component, "kiln push", true)?;
    connected.check_members(&[image.to_string()])?;
    let fail = |call, e| Error::from_plugin(call, component, e);
    connected
        .handle
        .prepare_image_push(image)
        .map_err(|e| fail("prepare_image_push", e))?;
    let flag = CancelFlag::new();
    interrupt::install(&flag);
    let digest = connected
        .handle
        .observed(progress_sink(&component.flavor.plugin.name, &flag))
        .push_image(image)
        .map_err(|e| fail("push_image", e))?;
    Ok(Pushed {
        image: image.to_string(),
        digest,
    })
}
