//! A build failure, naming the Dockerfile line and what it comes from
//! (the input, or a registry that refused or could not be reached). The
//! plugin maps it to the host's error kinds in one place (`plugin.rs`).

use kiln_distribution::CallError;

/// A build failure, naming the Dockerfile line when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// 1-based line (0: not tied to a line).
    pub line: usize,
    /// What went wrong.
    pub message: String,
    /// Why: the input, or a registry that refused or could not be reached.
    pub cause: Cause,
}

/// What a [`BuildError`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The Dockerfile, the context or the request.
    Input,
    /// A registry refused the credentials (or wanted some).
    Auth,
    /// A registry could not be reached.
    Unavailable,
    /// A `RUN` command failed (or no runtime could run it).
    BuildFailed,
    /// Ctrl-C stopped a `RUN` command.
    Cancelled,
    /// A local disk could not take what was written (a layer, the cache).
    Storage,
}

/// Whether `error` says a disk is full (or a quota reached).
pub fn is_full(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::StorageFull
        || matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "Dockerfile line {}: {}", self.line, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

/// An input error at `line` (0: not tied to a line).
pub(crate) fn at(line: usize, message: impl Into<String>) -> BuildError {
    BuildError {
        line,
        message: message.into(),
        cause: Cause::Input,
    }
}

/// A base image that could not be fetched, at `line`.
/// A build that could not be carried out at `line` (a failing `RUN`, or
/// nothing on this machine to run it with).
pub(crate) fn failed(line: usize, message: String) -> BuildError {
    BuildError {
        line,
        message,
        cause: Cause::BuildFailed,
    }
}

pub(crate) fn pull_failed(line: usize, e: CallError) -> BuildError {
    let cause = match &e {
        CallError::Denied(_) => Cause::Auth,
        CallError::Unavailable(_) => Cause::Unavailable,
        CallError::Failed(_) => Cause::Input,
    };
    BuildError {
        line,
        message: e.to_string(),
        cause,
    }
}
