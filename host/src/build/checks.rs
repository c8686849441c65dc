//! Step 6's decision: whether the existence checks run, what their answers
//! mean, and whether to build. Pure: the answers come from
//! [`super::registry`].

use super::options::OnUnknown;
use crate::error::{exit, Error, Result};

/// One checker's answer to "does this image already exist?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckAnswer {
    /// It exists, with this digest (`uri@sha256:...`).
    Exists(String),
    /// It does not exist.
    Absent,
    /// The checker could not tell, and why.
    Unknown(String),
}

/// What to do, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Build.
    Build {
        /// Why (shown to the user and in `--json`).
        reason: String,
    },
    /// Do not build: the image exists.
    Skip {
        /// The existing image's digest.
        digest: String,
        /// Why.
        reason: String,
    },
}

/// What an existing image records of the inputs it was built from
/// (kiln's label), next to this build's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The same inputs as this build's.
    Same,
    /// Other inputs: the names of those that differ.
    Changed(Vec<String>),
    /// No record (not built by kiln, or by a kiln that did not record).
    Nothing,
    /// The record could not be read, and why.
    Unreadable(String),
}

/// A skip checked against what the existing image records: one built from
/// other inputs under the same tag is built again, naming the inputs that
/// changed (a skip would hand back an image these inputs do not make), as
/// is one whose config cannot be read (a registry that serves a manifest
/// but not its config is not believed). An image that records nothing (made
/// by another tool) is skipped as before (Flyte's rule: the tag is the
/// user's word), saying so.
pub fn confirm(decision: Decision, tag: &str, recorded: Recorded) -> Decision {
    let Decision::Skip { digest, reason } = decision else {
        return decision;
    };
    match recorded {
        Recorded::Same => Decision::Skip {
            digest,
            reason: format!("{reason}, built from the same inputs"),
        },
        Recorded::Changed(names) => Decision::Build {
            reason: format!(
                "{reason} under tag {tag}, but built from other inputs (changed: {})",
                names.join(", ")
            ),
        },
        Recorded::Nothing => Decision::Skip {
            digest,
            reason: format!(
                "{reason} (it records no kiln inputs, so the tag is trusted; --force builds)"
            ),
        },
        Recorded::Unreadable(why) => Decision::Build {
            reason: format!(
                "{reason} under tag {tag}, but what it was built from could not be read \
                 ({why}), so a skip could be wrong"
            ),
        },
    }
}

/// Whether the existence checks run at all for this tag.
pub fn checks_apply(tag: &str, force: bool) -> Result<(), String> {
    if force {
        return Err("--force: always build".into());
    }
    if tag == "latest" {
        return Err("tag `latest` always builds (it moves)".into());
    }
    Ok(())
}

/// Flyte's rule, with ZenML's names: `latest` and `--force` always build; any
/// checker that finds the image skips the build; an image every checker
/// calls absent or unknown is built (with no checkers: built).
pub fn decide(tag: &str, force: bool, answers: &[(String, CheckAnswer)]) -> Decision {
    if let Err(reason) = checks_apply(tag, force) {
        return Decision::Build { reason };
    }
    if let Some((checker, CheckAnswer::Exists(digest))) = answers
        .iter()
        .find(|(_, a)| matches!(a, CheckAnswer::Exists(_)))
    {
        return Decision::Skip {
            digest: digest.clone(),
            reason: format!("{checker} has it already"),
        };
    }
    if answers.is_empty() {
        return Decision::Build {
            reason: "no existence checker configured".into(),
        };
    }
    if all_unknown(answers) {
        let why: Vec<String> = answers
            .iter()
            .map(|(c, a)| match a {
                CheckAnswer::Unknown(r) => format!("{c}: {r}"),
                _ => String::new(),
            })
            .collect();
        return Decision::Build {
            reason: format!("no checker could tell ({})", why.join("; ")),
        };
    }
    Decision::Build {
        reason: "not found by any checker".into(),
    }
}

fn all_unknown(answers: &[(String, CheckAnswer)]) -> bool {
    answers
        .iter()
        .all(|(_, a)| matches!(a, CheckAnswer::Unknown(_)))
}

/// `--on-unknown fail`: an error (exit 7) when checks ran and none could
/// tell whether `image` exists.
pub fn on_unknown(
    policy: OnUnknown,
    image: &str,
    tag: &str,
    force: bool,
    answers: &[(String, CheckAnswer)],
) -> Result<()> {
    if policy != OnUnknown::Fail
        || answers.is_empty()
        || !all_unknown(answers)
        || checks_apply(tag, force).is_err()
    {
        return Ok(());
    }
    let why: Vec<String> = answers.iter().map(|(c, a)| format!("{c}: {a:?}")).collect();
    let registry = answers
        .first()
        .map(|(c, _)| c.trim_start_matches("registry ").to_string())
        .unwrap_or_default();
    Err(Error::Registry {
        registry,
        message: format!(
            "no checker could tell whether {image} exists ({}), and --on-unknown fail is set",
            why.join("; ")
        ),
        code: exit::REGISTRY,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(answers: &[CheckAnswer]) -> Vec<(String, CheckAnswer)> {
        answers
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("checker{i}"), a.clone()))
            .collect()
    }

    #[test]
    fn the_existence_rules() {
        use CheckAnswer::*;
        let exists = Exists("reg/app@sha256:1".into());
        let unknown = Unknown("503".into());
        // latest and --force always build, whatever the checkers say.
        assert!(matches!(
            decide("latest", false, &named(std::slice::from_ref(&exists))),
            Decision::Build { .. }
        ));
        assert!(matches!(
            decide("v1", true, &named(std::slice::from_ref(&exists))),
            Decision::Build { .. }
        ));
        // Any checker that has it: skip, with its digest.
        match decide(
            "v1",
            false,
            &named(&[Absent, unknown.clone(), exists.clone()]),
        ) {
            Decision::Skip { digest, reason } => {
                assert_eq!(digest, "reg/app@sha256:1");
                assert!(reason.contains("checker2"));
            }
            other => panic!("{other:?}"),
        }
        // Absent, or all unknown, or no checkers: build.
        assert!(matches!(
            decide("v1", false, &named(&[Absent])),
            Decision::Build { .. }
        ));
        match decide("v1", false, &named(&[unknown.clone(), unknown])) {
            Decision::Build { reason } => assert!(reason.contains("503"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decide("v1", false, &[]), Decision::Build { .. }));
    }

    #[test]
    fn a_skip_stands_only_when_the_image_was_built_from_the_same_inputs() {
        let skip = || Decision::Skip {
            digest: "reg/app@sha256:1".into(),
            reason: "registry reg has it already".into(),
        };
        match confirm(skip(), "v1", Recorded::Same) {
            Decision::Skip { digest, reason } => {
                assert_eq!(digest, "reg/app@sha256:1");
                assert!(reason.contains("same inputs"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let changed = Recorded::Changed(vec!["context".into(), "label:team".into()]);
        match confirm(skip(), "v1", changed.clone()) {
            Decision::Build { reason } => {
                assert!(reason.contains("changed: context, label:team"), "{reason}");
                assert!(reason.contains("tag v1"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match confirm(skip(), "v1", Recorded::Nothing) {
            Decision::Skip { reason, .. } => {
                assert!(reason.contains("records no kiln inputs"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match confirm(skip(), "v1", Recorded::Unreadable("timed out".into())) {
            Decision::Build { reason } => assert!(reason.contains("timed out"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // A build stays a build, whatever is recorded.
        let build = Decision::Build {
            reason: "not found".into(),
        };
        assert_eq!(confirm(build.clone(), "v1", Recorded::Same), build);
        assert_eq!(confirm(build.clone(), "v1", changed), build);
    }

    #[test]
    fn on_unknown_fail_stops_only_when_every_checker_is_unknown() {
        let unknown = named(&[CheckAnswer::Unknown("503".into())]);
        let err =
            on_unknown(OnUnknown::Fail, "r/a:1", "1", false, &unknown).expect_err("all unknown");
        assert_eq!(err.exit_code(), exit::REGISTRY);
        assert!(err.to_string().contains("503"), "{err}");
        assert!(on_unknown(OnUnknown::Build, "r/a:1", "1", false, &unknown).is_ok());
        assert!(on_unknown(OnUnknown::Fail, "r/a:1", "1", true, &unknown).is_ok());
        assert!(on_unknown(OnUnknown::Fail, "r/a:1", "1", false, &[]).is_ok());
        let mixed = named(&[CheckAnswer::Unknown("x".into()), CheckAnswer::Absent]);
        assert!(on_unknown(OnUnknown::Fail, "r/a:1", "1", false, &mixed).is_ok());
    }
}
