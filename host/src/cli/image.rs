//! `kiln image exists`: one registry question, as the adapters (Flyte's
//! `ImageChecker`, ZenML's skip) ask it, answered in a worker process like
//! every other plugin call that constructs something.

use kiln_distribution::Platform;
use kiln_plugin_api::ComponentType;
use serde_json::json;

use super::args::ImageCommand;
use crate::{
    build::{checks::CheckAnswer, options::image_name},
    components::ResolvedComponent,
    error::{exit, Error, Result},
    output,
    session::Session,
};

pub(crate) fn run(session: &Session<'_>, cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Exists {
            image,
            platforms,
            registry,
            registry_flavor,
            registry_config,
            json,
        } => {
            image_name(&image)?;
            let mut wanted: Vec<Platform> = Vec::new();
            for list in &platforms {
                for p in Platform::parse_list(list)
                    .map_err(|e| Error::BadArgument(format!("--platform: {e}")))?
                {
                    if !wanted.contains(&p) {
                        wanted.push(p);
                    }
                }
            }
            let catalog = session.catalog();
            let component = match registry {
                Some(name) => ResolvedComponent::from_component(
                    session,
                    &catalog,
                    &name,
                    ComponentType::CONTAINER_REGISTRY,
                )?,
                None => crate::build::registry::inline(
                    &catalog,
                    registry_flavor.as_deref(),
                    registry_config.as_deref(),
                    &image,
                )?,
            };
            let (_, answer) =
                crate::build::worker::exists_in_worker(session, &component, &image, &wanted)?;
            let platforms: Vec<String> = wanted.iter().map(Platform::to_string).collect();
            let (body, code) = match &answer {
                CheckAnswer::Exists(digest) => (
                    json!({"image": image, "platforms": platforms, "state": "exists", "exists": true, "digest": digest}),
                    exit::OK,
                ),
                CheckAnswer::Absent => (
                    json!({"image": image, "platforms": platforms, "state": "absent", "exists": false}),
                    exit::FAILURE,
                ),
                CheckAnswer::Unknown(reason) => (
                    json!({"image": image, "platforms": platforms, "state": "unknown", "exists": null, "reason": reason}),
                    exit::REGISTRY,
                ),
            };
            if json {
                output::json(&body);
            } else {
                match &answer {
                    CheckAnswer::Exists(digest) => {
                        output::result(&format!("{image} exists: {digest}"))
                    }
                    CheckAnswer::Absent => output::result(&format!("{image} does not exist")),
                    CheckAnswer::Unknown(reason) => output::warn(&format!(
                        "{} cannot tell whether {image} exists: {reason}",
                        component.describe()
                    )),
                }
            }
            Ok(code)
        }
    }
}
