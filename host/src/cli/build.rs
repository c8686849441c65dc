//! `kiln build DIR` and `kiln push NAME:TAG`: validate the flags, call the
//! build library, print what it returns. The work is in [`crate::build`].

use crate::{
    build::{self, BuildArgs, Options},
    error::{exit, Result},
    output,
    session::Session,
};

pub(crate) fn run(session: &Session<'_>, args: BuildArgs) -> Result<i32> {
    let options = Options::from_args(&args, &session.env.cwd, &|name| session.env.var(name))?;
    build::interrupt::while_planning();
    let plan = build::plan(session, &options)?;
    if options.dry_run {
        if args.json {
            output::json(&plan.to_json());
        } else {
            output::result(&plan.to_string());
        }
        return Ok(exit::OK);
    }
    let outcome = build::execute_in_worker(session, plan)?;
    if args.json {
        output::json(&serde_json::to_value(&outcome).unwrap_or_default());
    } else {
        output::result(&outcome.to_string());
    }
    Ok(exit::OK)
}

pub(crate) fn push(session: &Session<'_>, image: &str, registry: &str, json: bool) -> Result<i32> {
    let pushed = build::worker::push_in_worker(session, image, registry)?;
    if json {
        output::json(&serde_json::to_value(&pushed).unwrap_or_default());
    } else {
        output::result(&format!("pushed {} ({})", pushed.image, pushed.digest));
    }
    Ok(exit::OK)
}
