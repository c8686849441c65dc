//! Steps 6-7 of a build: execute a [`Plan`]. Construct the registry
//! (membership, existence), decide, construct the builder, build, and say
//! what happened as an [`Outcome`].

use std::fmt;

use kiln_plugin_api::BuildContext;
use serde::Serialize;

use super::{
    checks::{confirm, decide, on_unknown, Decision},
    interrupt,
    plan::Plan,
    registry::Connected,
};
use crate::{
    components::ResolvedComponent,
    error::{exit, Error, Result},
    output,
    plugins::{progress_sink, CancelFlag},
    session::Session,
};

/// What a build (or a dry run) did.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Outcome {
    /// The image (the first name).
    pub image: String,
    /// The image's manifest (or index) digest, `sha256:...`, when known.
    pub digest: Option<String>,
    /// `repo@sha256:...` when the image is in a registry (pushed, or found
    /// there by a skip); null otherwise.
    pub pushed: Option<String>,
    /// The image ID (its config's digest; an index's digest for several
    /// platforms), when kiln has the image's archive to read it from.
    pub image_id: Option<String>,
    /// `built`, `skipped` or `planned`.
    pub status: String,
    /// Why.
    pub reason: String,
    /// The context hash.
    pub context_sha1: String,
    /// Seconds since `kiln build` started.
    pub seconds: f64,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digest = self
            .pushed
            .as_deref()
            .or(self.digest.as_deref())
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        write!(
            f,
            "{} {}{digest} in {:.1} s: {}",
            self.status, self.image, self.seconds, self.reason
        )
    }
}

/// Which plugin a build is in, for a worker to report before each step.
pub type Observer<'o> = &'o mut dyn FnMut(&'static str, &ResolvedComponent);

/// Run `plan` (a real build's: its archive is written) in this process,
/// telling `observe` which plugin is about to be called. The worker calls
/// it; `kiln build` goes through [`super::execute_in_worker`].
pub fn execute(session: &Session<'_>, mut plan: Plan, observe: Observer<'_>) -> Result<Outcome> {
    let builder = &plan.builder_component;
    let outcome = |plan: &Plan, digest: Option<String>, status: &str, reason: String| Outcome {
        image: plan.image.clone(),
        image_id: None,
        pushed: digest.clone().filter(|d| d.contains('@')),
        digest: digest.map(|d| match d.split_once('@') {
            Some((_, digest)) => digest.to_string(),
            None => d,
        }),
        status: status.to_string(),
        reason,
        context_sha1: plan.context.sha1.clone(),
        seconds: plan.seconds(),
    };

    if plan.request.platform.len() > 1 {
        needs_feature(
            builder,
            kiln_plugin_api::feature::MULTI_PLATFORM,
            "--platform",
            "does not build several platforms in one run",
            "0.2.2",
        )?;
    }

    if !plan.request.cache_from.is_empty() || !plan.request.cache_to.is_empty() {
        needs_feature(
            builder,
            kiln_plugin_api::feature::REGISTRY_CACHE,
            if plan.request.cache_to.is_empty() {
                "--cache-from"
            } else {
                "--cache-to"
            },
            "keeps no cache in a registry",
            "0.2.3",
        )?;
    }

    if let Some(o) = plan.request.output.as_ref().filter(|o| !o.kind.is_image()) {
        needs_feature(
            builder,
            kiln_plugin_api::feature::FILESYSTEM_OUTPUT,
            &format!("--output type={}", o.kind.as_str()),
            "does not write an image's filesystem",
            "0.2.4",
        )?;
    }

    // The registry: constructed, membership, existence.
    let registry = match &plan.registry_component {
        Some(component) => {
            observe("registry checks", component);
            let r =
                Connected::connect(session, component, &builder.label, builder.builds_locally())?;
            r.check_members(&plan.images)?;
            Some(r)
        }
        None => None,
    };
    let mut answers = Vec::new();
    if let (Some(r), super::plan::CheckPlan::Registry { .. }) = (&registry, &plan.checks) {
        answers.push(r.exists(&plan.image, &plan.request.platform)?);
    }
    on_unknown(
        plan.on_unknown,
        &plan.image,
        plan.tag(),
        plan.force,
        &answers,
    )?;
    let decision = decide(plan.tag(), plan.force, &answers);
    // A skip stands only for an image built from these same inputs, as far
    // as the image records them.
    let decision = match (&decision, &registry) {
        (Decision::Skip { digest, .. }, Some(r)) => {
            let platform = plan
                .request
                .platform
                .first()
                .cloned()
                .unwrap_or_else(kiln_distribution::Platform::host);
            let recorded = r.recorded(
                &plan.image,
                digest,
                &platform,
                &super::bases::insecure_registries(builder),
                &plan.inputs,
            );
            confirm(decision, plan.tag(), recorded)
        }
        _ => decision,
    };
    let reason = match decision {
        Decision::Skip { digest, reason } => {
            // buildx exports a cache after every build; a skipped build
            // made nothing to export, which the user should know.
            for spec in &plan.request.cache_to {
                crate::output::warn(&format!(
                    "--cache-to {}: not exported, the build was skipped (the image exists); \
                     --force builds and exports it",
                    spec.reference
                ));
            }
            return Ok(outcome(&plan, Some(digest), "skipped", reason));
        }
        Decision::Build { reason } => match &plan.checks {
            super::plan::CheckPlan::Off(why) => why.clone(),
            _ => reason,
        },
    };

    // The builder, constructed only now, with secrets resolved.
    observe("build", builder);
    let handle = builder
        .flavor
        .plugin
        .construct_builder(builder.flavor.name(), &builder.resolved_config(session)?)
        .map_err(|e| Error::from_plugin("construct", builder, e))?;
    let flag = CancelFlag::new();
    interrupt::install(&flag);
    output::status(&format!(
        "building {} with {} ({} files, {} bytes of context): {reason}",
        plan.images.join(", "),
        builder.describe(),
        plan.context.files,
        plan.context.bytes
    ));
    let archive = plan
        .archive
        .take()
        .ok_or_else(|| Error::BadArgument("a dry run's plan cannot be executed".into()))?;
    let mut request = plan.request.to_request(&plan.images, &plan.dockerfile);
    request.secrets = secrets(session, &plan.request.secrets, builder)?;
    // The inputs, recorded in the image for the next build's check.
    request.labels.push((
        super::naming::INPUTS_LABEL.to_string(),
        plan.inputs.to_label(),
    ));
    let build_context = BuildContext {
        archive_path: archive.path().to_string_lossy().into_owned(),
        gzip: false,
        sha1: plan.context.sha1.clone(),
        size: plan.context.bytes,
        uploaded_uri: None,
    };
    let built = handle.build(
        &request,
        &build_context,
        registry.as_ref().map(|r| r.handle.clone()),
        progress_sink(&builder.flavor.plugin.name, &flag),
    );
    drop(archive);
    if flag.is_set() {
        return Err(Error::Build {
            builder: builder.label.clone(),
            message: "interrupted".into(),
            code: exit::INTERRUPTED,
        });
    }
    let built = built.map_err(|e| Error::from_plugin("build", builder, e))?;
    Ok(Outcome {
        image: built.image,
        ..outcome(&plan, built.digest, "built", reason)
    })
}

/// Refuse, naming `flag` and what to do, a builder whose plugin does not
/// implement protocol `feature` (added in plugin-api `since`).
fn needs_feature(
    builder: &ResolvedComponent,
    feature: &str,
    flag: &str,
    lacking: &str,
    since: &str,
) -> Result<()> {
    let plugin = &builder.flavor.plugin;
    if plugin.features.iter().any(|f| f == feature) {
        return Ok(());
    }
    Err(Error::BadArgument(format!(
        "{flag}: builder {} (plugin {} {}, plugin-api {}) {lacking}; update the plugin to \
         one built against plugin-api {since} or later",
        builder.label, plugin.name, plugin.version, plugin.api_version
    )))
}

/// The `--secret` values, for a builder whose plugin takes them (protocol
/// feature `secrets`). Read here, when the build runs: never planned,
/// printed or stored.
fn secrets(
    session: &Session<'_>,
    specs: &[super::options::SecretSpec],
    builder: &ResolvedComponent,
) -> Result<Vec<kiln_plugin_api::BuildSecret>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    needs_feature(
        builder,
        kiln_plugin_api::feature::SECRETS,
        "--secret",
        "does not take secrets",
        "0.2.1",
    )?;
    specs
        .iter()
        .map(|spec| {
            Ok(kiln_plugin_api::BuildSecret {
                id: spec.id.clone(),
                value: spec.read(|name| session.env.var(name))?,
            })
        })
        .collect()
}
