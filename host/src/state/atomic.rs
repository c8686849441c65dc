//! Atomic file replacement for the state files, over kiln-archive's one
//! implementation (temp file beside the target, fsync, rename).

use std::path::Path;

use crate::error::{Error, Result};

/// Replace `path` with `contents` atomically, with permission bits `mode`.
///
/// Readers see the old file or the new one, never a mix; a crash leaves at
/// most a stray temp file, never a truncated target.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    kiln_archive::atomic::write(path, contents, mode).map_err(|e| Error::Io {
        action: e.action,
        path: e.path,
        source: e.source,
    })
}
