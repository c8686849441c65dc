//! The `kiln` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use kiln::{
    cli::{self, Cli, Environment},
    exit, output,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    init_tracing(cli.verbose);
    let code = match Environment::from_process().and_then(|env| cli::run(cli, &env)) {
        Ok(code) => code,
        Err(e) => {
            output::error(&e.to_string());
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "kiln=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}
