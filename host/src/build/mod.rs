//! `kiln build` as a library. One build, in order:
//!
//! 1. **Options**: the raw flags become validated [`Options`]
//!    ([`Options::from_args`]); nothing is read or loaded yet.
//! 2. **Builder**: the component or flavor named, else the daemonless
//!    default ([`builder::choose`]).
//! 3. **Context**: the context is resolved, the builder's context hook adds
//!    its files, the archive is written (hashed only, for a dry run)
//!    ([`Plan::make`]).
//! 4. **Names**: `-t`, else from the folder and the registry's address,
//!    with the derived tag ([`naming::image_names`]): a hash of every input
//!    ([`TagInputs`]), the bases among them, resolved when a skip depends on
//!    them ([`bases`]).
//! 5. **Plan**: builder, context, images, checks and request as one value
//!    ([`Plan`]); `--dry-run` prints exactly it.
//! 6. **Execute**: the registry is constructed (membership, existence),
//!    the checks decide ([`checks::decide`]), the builder is constructed and
//!    builds ([`execute()`]), in a worker process ([`execute_in_worker`])
//!    so that a plugin that crashes never takes kiln down.
//! 7. **Outcome**: what happened ([`Outcome`]); the CLI prints it.
//!
//! Errors from plugins map to exit codes in one place,
//! [`crate::Error::from_plugin`]. `kiln push` ([`worker::push_in_worker`],
//! then [`push()`] in the worker) shares the registry steps ([`registry`]).

pub mod bases;
pub mod builder;
pub mod checks;
pub mod execute;
pub mod interrupt;
pub mod load;
pub mod naming;
pub mod options;
pub mod plan;
pub mod push;
pub mod registry;
pub mod worker;

pub use checks::{checks_apply, decide, CheckAnswer, Decision};
pub use execute::{execute, Outcome};
pub use naming::{default_name, LastBuild, TagInputs};
pub use options::{BuildArgs, Options};
pub use plan::Plan;
pub use push::{push, Pushed};
pub use worker::execute_in_worker;

use crate::{error::Result, session::Session};

/// Steps 2-5: plan the build `options` describes.
pub fn plan(session: &Session<'_>, options: &Options) -> Result<Plan> {
    Plan::make(session, options)
}
