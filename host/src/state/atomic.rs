//! Atomic file replacement: write a temp file beside the target, fsync, rename.

use std::{fs, io::Write, path::Path};

use crate::error::{Error, Result};

/// Replace `path` with `contents` atomically, with permission bits `mode`.
///
/// Readers see the old file or the new one, never a mix; a crash leaves at
/// most a stray temp file, never a truncated target.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating a temp file in", dir, e))?;
    set_mode(tmp.as_file(), mode)
        .map_err(|e| Error::io("setting permissions on", tmp.path(), e))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io("writing", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("replacing", path, e.error))?;
    if let Ok(d) = fs::File::open(dir) {
        // Make the rename durable; not all filesystems support it.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(file: &fs::File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_file: &fs::File, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_sets_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.json");
        fs::write(&p, b"old").expect("write");
        write_atomic(&p, b"new", 0o600).expect("atomic write");
        assert_eq!(fs::read(&p).expect("read"), b"new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".kiln-tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left behind");
    }
}
