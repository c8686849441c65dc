//! The program in kiln's example image. It shows what the Dockerfile
//! arranged: `GREETING` from `ENV`, the working directory from `WORKDIR`,
//! the user from `USER`, and the files `CMD` names, copied by `COPY` or
//! written at build time by `RUN greeter --record FILE`.

#![allow(clippy::disallowed_methods)] // The example program shows its environment.

use std::process::ExitCode;

/// The real uid, read from `/proc` (there is no libc wrapper in `std`).
fn uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_else(|| "?".into())
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".into());
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "?".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, file] = args.as_slice() {
        if flag == "--record" {
            let line = format!(
                "{greeting}, recorded by RUN at build time (uid {}, in {cwd})\n",
                uid()
            );
            if let Err(e) = std::fs::write(file, &line) {
                eprintln!("greeter: {file}: {e}");
                return ExitCode::FAILURE;
            }
            print!("{line}");
            return ExitCode::SUCCESS;
        }
    }
    println!(
        "{greeting} from an image kiln built without a daemon (uid {}, in {cwd})",
        uid()
    );
    for file in std::env::args().skip(1) {
        match std::fs::read_to_string(&file) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("greeter: {file}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
