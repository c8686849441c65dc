//! Artifact stores for builders that do not build locally (ZenML's
//! `_upload_build_context`): the gzip archive is stored content-addressed as
//! `<store>/<dir>/<sha1>.tar.gz`, skipped when already present, and written
//! atomically. A local directory is the first store; an object store only
//! has to implement [`ArtifactStore`].

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::{Context, ContextError, Report};

/// The folder under the store that build contexts go to by default.
pub const DEFAULT_DIR: &str = "kiln-build-contexts";

/// Somewhere archives can be kept and read back by a remote builder.
pub trait ArtifactStore: Send + Sync {
    /// The URI of `key` in this store (what the builder is told).
    fn uri(&self, key: &str) -> String;
    /// Whether `key` exists already.
    fn contains(&self, key: &str) -> io::Result<bool>;
    /// A local folder to write the archive in before `put_file`, chosen so
    /// that `put_file` can move it cheaply (the system temp folder unless the
    /// store says otherwise).
    fn staging_dir(&self, _key: &str) -> io::Result<PathBuf> {
        Ok(std::env::temp_dir())
    }
    /// Store the finished local file `src` as `key`, atomically: readers see
    /// the whole object or nothing. `src` may be moved.
    fn put_file(&self, key: &str, src: &Path) -> io::Result<()>;
}

/// A directory on the local file system (a path or a `file://` URL).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Parse a path or `file://` URL; relative paths are relative to `cwd`.
    pub fn parse(spec: &str, cwd: &Path) -> Result<Self, String> {
        let path = if let Some(rest) = spec.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(format!(
                    "artifact store {spec:?}: a file:// URL needs an absolute path (file:///path)"
                ));
            }
            PathBuf::from(rest)
        } else if spec.contains("://") {
            return Err(format!(
                "artifact store {spec:?}: only local directories (a path or file:///path) are supported"
            ));
        } else {
            cwd.join(spec)
        };
        Ok(Self { root: path })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

impl ArtifactStore for LocalStore {
    fn uri(&self, key: &str) -> String {
        format!("file://{}", self.path(key).display())
    }

    fn contains(&self, key: &str) -> io::Result<bool> {
        match fs::metadata(self.path(key)) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn staging_dir(&self, key: &str) -> io::Result<PathBuf> {
        let target = self.path(key);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn put_file(&self, key: &str, src: &Path) -> io::Result<()> {
        let target = self.path(key);
        let dir = self.staging_dir(key)?;
        if src.parent() == Some(dir.as_path()) {
            // Same folder: a rename is atomic.
            return fs::rename(src, &target);
        }
        let mut temp = tempfile::Builder::new()
            .prefix(".kiln-upload-")
            .tempfile_in(&dir)?;
        io::copy(&mut fs::File::open(src)?, temp.as_file_mut())?;
        temp.as_file().sync_all()?;
        temp.persist(&target).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The outcome of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Where the archive is.
    pub uri: String,
    /// sha1 of the gzip archive.
    pub sha1: String,
    /// Size of the gzip archive.
    pub bytes: u64,
    /// Whether the store had it already.
    pub skipped: bool,
}

/// Pack `context` with gzip and store it as `<dir>/<sha1>.tar.gz`.
///
/// The archive is written once, to a staging file, while its hash is
/// computed; it is then moved into the store, or dropped when the store has
/// that hash already.
pub fn upload(
    context: &Context,
    store: &dyn ArtifactStore,
    dir: &str,
) -> Result<(Uploaded, Report), ContextError> {
    let dir = dir.trim_matches('/');
    let probe_key = format!("{dir}/_");
    let store_err = |key: &str, source| ContextError::Output {
        path: PathBuf::from(store.uri(key)),
        source,
    };
    let staging = store
        .staging_dir(&probe_key)
        .map_err(|e| store_err(dir, e))?;
    let temp = tempfile::Builder::new()
        .prefix(".kiln-upload-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&staging)
        .map_err(|e| store_err(dir, e))?;
    let (summary, report, temp) = context.write_to(true, temp)?;
    let key = format!("{dir}/{}.tar.gz", summary.sha1);
    let skipped = store.contains(&key).map_err(|e| store_err(&key, e))?;
    if !skipped {
        temp.as_file().sync_all().map_err(|e| store_err(&key, e))?;
        let path = temp.into_temp_path();
        store
            .put_file(&key, &path)
            .map_err(|e| store_err(&key, e))?;
    }
    let uploaded = Uploaded {
        uri: store.uri(&key),
        sha1: summary.sha1,
        bytes: summary.bytes,
        skipped,
    };
    Ok((uploaded, report))
}
