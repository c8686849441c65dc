//! The builder's content-addressed cache:
//!
//! - `blobs/sha256/<hex>`: blobs by digest (layers made, base image blobs);
//! - `diffids/<format>/<hex>`: for each layer this builder made, its `diff_id` to
//!   its blob's digest and size, so a layer whose tar is unchanged is not
//!   compressed again, and, for a layer kept as pieces of several files,
//!   the ranges of cache files its blob is made of;
//! - `packs/<format>/<digest hex>-<unique>`: the new pieces of a layer whose
//!   other pieces were made before (the rest of it is not copied again);
//! - `unpacked/<hex>`: a base layer's uncompressed tar by its `diff_id`
//!   (checked against it when unpacked), so a base is decompressed once;
//! - `pieces/<format>/<hex>`: where the gzip member made from a piece of
//!   layer tar is kept (a range of a blob or pack), by the piece's sha256,
//!   so a layer that changed by a few files compresses and writes only the
//!   pieces around the change (pieces are cut at content-defined
//!   boundaries);
//! - `recipes/<format>/<hex>`: a layer's recipe (the context archive's sha1, where
//!   each file's bytes sit in it, every path and its metadata) to its
//!   `diff_id`, so an unchanged `COPY` from an unchanged context finds its
//!   layer without building or hashing the tar at all.
//!
//! Every write goes through a temporary file renamed into place (a file is
//! never changed in place, so holding one open and reading it later is
//! safe). A made layer's blob is synced and renamed, and its records
//! written, on a thread of the store's own while the build goes on (it
//! reads the blob through the open file); whatever reads the cache by name
//! waits for those writes first, and so does the end of the build. Layer
//! blobs are opened, not read, and checked against their recorded size;
//! base blobs are checked against their digest as they are read. A torn or
//! altered file is ignored, and so is a layer one of whose files was pruned
//! (a layer in use touches all of its files, so they age together).

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
};

use kiln_archive::{
    atomic::{touch, AtomicFile, Writeback},
    pipeline::{Looked, Reuse, Sink},
};
use sha2::{Digest, Sha256};

use crate::{
    data::Data,
    image::{media, Layer, BLOB_FORMAT},
};

/// The cache folder, and for one build: caches elsewhere to look in
/// (`--cache-from`) and the recipes it used (for `--cache-to`).
pub struct Store {
    root: PathBuf,
    remotes: Vec<Box<dyn Remote>>,
    used: Mutex<BTreeMap<String, String>>,
    warnings: Mutex<Vec<String>>,
    pending: Arc<Pending>,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.pending.settle();
    }
}

/// A cache write that need not hold up the build.
type Job = Box<dyn FnOnce() + Send>;

/// Cache writes run in the order given on a thread of their own (a blob's
/// sync and rename before the records that name it).
#[derive(Default)]
pub struct Pending(Mutex<Option<(mpsc::Sender<Job>, JoinHandle<()>)>>);

impl Pending {
    /// Run `job` after those given before (here and now when no thread
    /// can be had).
    fn defer(&self, job: Job) {
        let Ok(mut worker) = self.0.lock() else {
            return job();
        };
        if worker.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name("kiln-cache-writes".into())
                .spawn(move || rx.into_iter().for_each(|job| job()));
            if let Ok(handle) = spawned {
                *worker = Some((tx, handle));
            }
        }
        match worker.as_ref() {
            Some((tx, _)) => {
                if let Err(mpsc::SendError(job)) = tx.send(job) {
                    job();
                }
            }
            None => job(),
        }
    }

    /// Wait until every write given so far is done.
    fn settle(&self) {
        if let Ok(mut worker) = self.0.lock() {
            if let Some((tx, handle)) = worker.take() {
                drop(tx);
                let _ = handle.join();
            }
        }
    }
}

/// Layers made by other machines (a registry cache, `--cache-from`), by
/// recipe.
pub trait Remote: Send + Sync {
    /// The `diff_id` of the layer recipe `key` made there.
    fn diff_id(&self, key: &str) -> Option<String>;
    /// Fetch the layer `diff_id` into `store` (its blob checked against
    /// its digest and its tar against `diff_id`), recording it as a layer
    /// this builder made.
    fn fetch(&self, diff_id: &str, store: &Store) -> Result<(), String>;
    /// Where it is, for messages.
    fn name(&self) -> &str;
}

fn hex(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

impl Store {
    /// Open (creating) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self, String> {
        for sub in [
            "blobs/sha256".to_string(),
            "unpacked".to_string(),
            format!("diffids/{BLOB_FORMAT}"),
            format!("recipes/{BLOB_FORMAT}"),
            format!("pieces/{BLOB_FORMAT}"),
            format!("packs/{BLOB_FORMAT}"),
        ] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("creating the cache {}: {e}", dir.display()))?;
            // What a killed build was writing.
            kiln_archive::atomic::remove_stale(&dir, &[kiln_archive::atomic::TEMP_PREFIX]);
        }
        set_cache_root(root);
        Ok(Self {
            root: root.to_path_buf(),
            remotes: Vec::new(),
            used: Mutex::new(BTreeMap::new()),
            warnings: Mutex::new(Vec::new()),
            pending: Arc::default(),
        })
    }

    /// Look in `remote` too for layers by recipe (after this cache).
    pub fn add_remote(&mut self, remote: Box<dyn Remote>) {
        self.remotes.push(remote);
    }

    /// Every recipe this build used or made, with its layer's `diff_id`.
    pub fn used_recipes(&self) -> BTreeMap<String, String> {
        self.used.lock().map(|u| u.clone()).unwrap_or_default()
    }

    /// What went wrong with remote caches since the last call.
    pub fn take_warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }

    fn note_used(&self, key: &str, diff_id: &str) {
        if let Ok(mut used) = self.used.lock() {
            used.insert(key.to_string(), diff_id.to_string());
        }
    }

    /// Record that this builder has the layer `diff_id` as the blob
    /// `digest` of `size` bytes (already in the cache).
    pub fn put_diff_id(&self, diff_id: &str, digest: &str, size: u64) -> Result<(), String> {
        self.write(
            &self.diffid_path(diff_id),
            format!("{digest} {size}").as_bytes(),
        )
    }

    /// The default folder: `$KILN_CACHE_DIR/oci`, else the user's cache
    /// folder (`~/.cache/kiln/oci`), else a folder in the temp dir.
    #[allow(clippy::disallowed_methods)] // the one home of KILN_CACHE_DIR
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("KILN_CACHE_DIR") {
            return PathBuf::from(dir).join("oci");
        }
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("kiln")
            .join("oci")
    }

    fn diffid_path(&self, diff_id: &str) -> PathBuf {
        self.root
            .join("diffids")
            .join(BLOB_FORMAT)
            .join(hex(diff_id))
    }

    fn recipe_path(&self, key: &str) -> PathBuf {
        self.root.join("recipes").join(BLOB_FORMAT).join(hex(key))
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex(digest))
    }

    /// The blob `digest`, when cached and intact (hashed as it is read,
    /// in chunks; a damaged file is removed).
    pub fn blob(&self, digest: &str) -> Option<Data> {
        if !digest.starts_with("sha256:") || hex(digest).contains(['/', '.']) {
            return None;
        }
        self.pending.settle();
        let path = self.blob_path(digest);
        let data = Data::whole(std::fs::File::open(&path).ok()?).ok()?;
        if !has_digest(&data, digest).ok()? {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // Marked as used at most every ten minutes: marking changes the
        // times `has_digest` trusts it by.
        let stale = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age > std::time::Duration::from_secs(600));
        if stale {
            touch(&path);
        }
        Some(data)
    }

    /// A new blob to write into the cache ([`Incoming::keep`] names it by
    /// its digest).
    pub fn incoming(&self) -> Result<Incoming, String> {
        let temp = AtomicFile::beside(&self.root.join("blobs/sha256/incoming"))
            .map_err(|e| format!("the cache: {e}"))?;
        Ok(Incoming::Cache(
            temp,
            self.root.clone(),
            self.pending.clone(),
        ))
    }

    /// Write a record, after the writes given before it: a record is
    /// named only after the blob it names (one naming a blob the disk
    /// could not take is ignored when read, as a torn one is).
    fn write(&self, path: &Path, data: &[u8]) -> Result<(), String> {
        let (path, data) = (path.to_path_buf(), data.to_vec());
        self.pending.defer(Box::new(move || {
            let _ = write_now(&path, &data);
        }));
        Ok(())
    }

    /// The layer this builder made earlier with this `diff_id`: its blob
    /// file of the size recorded, or the ranges of cache files it is made
    /// of (each within its file).
    pub fn layer(&self, diff_id: &str) -> Option<Layer> {
        self.pending.settle();
        let text = std::fs::read_to_string(self.diffid_path(diff_id)).ok()?;
        let mut lines = text.lines();
        let mut words = lines.next()?.split_whitespace();
        let digest = words.next()?.to_string();
        let size: u64 = words.next()?.parse().ok()?;
        if !digest.starts_with("sha256:") || hex(&digest).contains(['/', '.']) {
            return None;
        }
        let mut opened = HashMap::new();
        let mut parts = Vec::new();
        for line in lines {
            let (name, offset, len) = parse_range(line)?;
            parts.push(open_range(&self.root, name, offset, len, &mut opened)?.data());
        }
        let blob = if parts.is_empty() {
            let path = self.blob_path(&digest);
            touch(&path);
            Data::whole(File::open(&path).ok()?).ok()?
        } else {
            Data::concat(parts)
        };
        if blob.len() != size {
            return None;
        }
        // Used now: a cache pruned least recently used first keeps it, all
        // its files alike.
        for name in opened.keys() {
            touch(&self.root.join(&**name));
        }
        touch(&self.diffid_path(diff_id));
        Some(Layer {
            blob,
            digest,
            diff_id: diff_id.to_string(),
            media_type: media::LAYER_GZIP.into(),
        })
    }

    /// The gzip'd pieces this cache holds, for a layer being made: read
    /// from when `read` (not with `--no-cache`); the layer's new pieces are
    /// added when it is kept ([`Incoming::keep_layer`]).
    pub fn pieces(&self, read: bool) -> Pieces {
        Pieces {
            root: self.root.clone(),
            read,
            opened: Mutex::default(),
        }
    }

    /// The layer made from the recipe `key` before: here, else in a
    /// remote cache (fetched into this one). A remote that fails is
    /// passed over with a warning ([`Self::take_warnings`]): a cache is an
    /// optimisation.
    pub fn recipe(&self, key: &str) -> Option<Layer> {
        self.pending.settle();
        let path = self.recipe_path(key);
        if let Some(layer) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|diff_id| self.layer(diff_id.trim()))
        {
            touch(&path);
            self.note_used(key, &layer.diff_id);
            return Some(layer);
        }
        for remote in &self.remotes {
            let Some(diff_id) = remote.diff_id(key) else {
                continue;
            };
            let layer = match self.layer(&diff_id) {
                Some(layer) => Some(layer),
                None => match remote.fetch(&diff_id, self) {
                    Ok(()) => self.layer(&diff_id),
                    Err(e) => {
                        if let Ok(mut w) = self.warnings.lock() {
                            w.push(format!("the cache {}: {e}", remote.name()));
                        }
                        None
                    }
                },
            };
            if let Some(layer) = layer {
                let _ = self.put_recipe(key, &diff_id);
                return Some(layer);
            }
        }
        None
    }

    /// Remember that recipe `key` makes the layer `diff_id`.
    pub fn put_recipe(&self, key: &str, diff_id: &str) -> Result<(), String> {
        self.note_used(key, diff_id);
        self.write(&self.recipe_path(key), diff_id.as_bytes())
    }
}

/// Write a cache record whole and synced.
fn write_now(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut temp = AtomicFile::beside(path).map_err(|e| format!("the cache: {e}"))?;
    temp.file_mut()
        .write_all(data)
        .map_err(|e| format!("writing the cache {}: {e}", path.display()))?;
    temp.commit().map_err(|e| format!("the cache: {e}"))
}

/// The longest gzip'd piece a record may name: a piece is at most 4 MiB
/// of tar, and gzip adds little even to bytes it cannot compress.
const PIECE_MAX: u64 = 8 << 20;

/// Where a piece's gzip'd form was in `pieces/`, by its plain bytes' sha256.
fn piece_path(root: &Path, key: &[u8; 32]) -> PathBuf {
    use std::fmt::Write;
    let mut name = String::with_capacity(64);
    for b in key {
        let _ = write!(name, "{b:02x}");
    }
    root.join("pieces").join(BLOB_FORMAT).join(name)
}

/// `<name> <offset> <len>`: a range of the cache file `name` (a path below
/// the cache folder, in `blobs/` or `packs/`, nothing else).
fn parse_range(line: &str) -> Option<(&str, u64, u64)> {
    let mut words = line.split(' ');
    let (name, offset, len) = (words.next()?, words.next()?, words.next()?);
    let fine = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let top = name.split('/').next()?;
    if words.next().is_some() || !matches!(top, "blobs" | "packs") || !name.split('/').all(fine) {
        return None;
    }
    Some((name, offset.parse().ok()?, len.parse().ok()?))
}

/// Cache files open, by name, with their sizes.
type Opened = HashMap<Arc<str>, (Arc<File>, u64)>;

/// The range `offset..offset+len` of the cache file `name` (opened once per
/// `opened`), when the file is that long.
fn open_range(root: &Path, name: &str, offset: u64, len: u64, opened: &mut Opened) -> Option<Kept> {
    let (name, (file, size)) = match opened.get_key_value(name) {
        Some((name, f)) => (name.clone(), f.clone()),
        None => {
            let file = File::open(root.join(name)).ok()?;
            let size = file.metadata().ok()?.len();
            let (name, f): (Arc<str>, _) = (name.into(), (Arc::new(file), size));
            opened.insert(name.clone(), f.clone());
            (name, f)
        }
    };
    if offset.checked_add(len)? > size {
        return None;
    }
    Some(Kept {
        name,
        file,
        offset,
        len,
    })
}

/// A range of a cache file holding gzip'd pieces of a layer: the file's
/// name below the cache folder, and the file open.
#[derive(Clone)]
pub struct Kept {
    name: Arc<str>,
    file: Arc<File>,
    offset: u64,
    len: u64,
}

impl Kept {
    /// Its bytes, read from the open file.
    fn data(&self) -> Data {
        Data::File {
            file: self.file.clone(),
            offset: self.offset,
            len: self.len,
        }
    }
}

/// What [`Pieces`] tells the layer's writer of a piece: its key (the sha256
/// of its plain bytes) and where its gzip'd form is kept, when it was found.
pub struct Note {
    key: [u8; 32],
    kept: Option<Kept>,
}

/// The cache's gzip'd pieces ([`Store::pieces`]).
pub struct Pieces {
    root: PathBuf,
    read: bool,
    opened: Mutex<Opened>,
}

impl Pieces {
    /// The gzip member kept for the piece `key`, read, and where it is.
    fn find(&self, key: &[u8; 32]) -> Option<(Vec<u8>, Kept)> {
        let path = piece_path(&self.root, key);
        let text = std::fs::read_to_string(&path).ok()?;
        let (name, offset, len) = parse_range(text.trim_end())?;
        if len > PIECE_MAX {
            return None;
        }
        let kept = {
            let mut opened = self.opened.lock().ok()?;
            open_range(&self.root, name, offset, len, &mut opened)?
        };
        let mut gzip = vec![0; usize::try_from(len).ok()?];
        std::io::Read::read_exact(&mut kept.data().reader(), &mut gzip).ok()?;
        // A gzip member starts so, and is never empty.
        if !gzip.starts_with(&[0x1f, 0x8b]) {
            return None;
        }
        touch(&path);
        Some((gzip, kept))
    }
}

impl Reuse for Pieces {
    type Note = Note;

    fn get(&self, plain: &[u8]) -> Looked<Note> {
        let key: [u8; 32] = Sha256::digest(plain).into();
        let found = if self.read { self.find(&key) } else { None };
        let (gzip, kept) = found.map_or((None, None), |(g, k)| (Some(g), Some(k)));
        Looked {
            gzip,
            note: Note { key, kept },
        }
    }
}

/// One stretch of a layer's blob: new bytes at a place in the layer's own
/// pack, or a range kept from before.
enum Part {
    Pack { offset: u64, len: u64 },
    Kept(Kept),
}

/// The writer of a layer's gzip'd pieces ([`Sink`]): pieces kept from
/// before are not written again, only named; new ones go to the file
/// being made (the layer's pack). Everything is hashed, as the blob.
pub struct Packing<'a> {
    out: std::io::BufWriter<Writeback<'a>>,
    hash: Sha256,
    size: u64,
    written: u64,
    parts: Vec<Part>,
    fresh: Vec<([u8; 32], u64, u64)>,
}

/// A layer's blob as [`Packing`] left it.
pub struct Packed {
    /// `sha256:` of the blob.
    pub digest: String,
    /// Its size.
    pub size: u64,
    parts: Vec<Part>,
    fresh: Vec<([u8; 32], u64, u64)>,
}

impl<'a> Packing<'a> {
    /// Write new pieces to `out`.
    pub fn new(out: Writeback<'a>) -> Self {
        Self {
            out: std::io::BufWriter::with_capacity(1 << 20, out),
            hash: Sha256::new(),
            size: 0,
            written: 0,
            parts: Vec::new(),
            fresh: Vec::new(),
        }
    }

    /// All written out.
    pub fn finish(self) -> std::io::Result<Packed> {
        self.out.into_inner().map_err(|e| e.into_error())?;
        Ok(Packed {
            digest: format!("sha256:{:x}", self.hash.finalize()),
            size: self.size,
            parts: self.parts,
            fresh: self.fresh,
        })
    }
}

impl Sink for Packing<'_> {
    type Note = Note;

    fn piece(&mut self, gzip: &[u8], note: Option<(Note, bool)>) -> std::io::Result<()> {
        self.hash.update(gzip);
        self.size += gzip.len() as u64;
        let len = gzip.len() as u64;
        if let Some((Note { kept: Some(k), .. }, true)) = note {
            if let Some(Part::Kept(last)) = self.parts.last_mut() {
                if last.name == k.name && last.offset + last.len == k.offset {
                    last.len += k.len;
                    return Ok(());
                }
            }
            self.parts.push(Part::Kept(k));
            return Ok(());
        }
        self.out.write_all(gzip)?;
        if let Some((note, _)) = note {
            self.fresh.push((note.key, self.written, len));
        }
        match self.parts.last_mut() {
            Some(Part::Pack { offset, len: n }) if *offset + *n == self.written => *n += len,
            _ => self.parts.push(Part::Pack {
                offset: self.written,
                len,
            }),
        }
        self.written += len;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Whether `data` has the digest `digest`: hashed in chunks, unless it is
/// a range of a file that was hashed to that digest before and is unchanged
/// since (git's index: the file's device, inode, size, mtime and ctime, and
/// the range, recorded in the cache's `checked/` folder; a file changed
/// within the clock's resolution of its record is never recorded).
/// Unchanged bases (cached blobs, OCI layout archives of hundreds of MB)
/// are then not read again at every build.
pub fn has_digest(data: &Data, digest: &str) -> std::io::Result<bool> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    has_digest_in(cache_root().as_deref(), data, digest, now)
}

/// [`has_digest`] with the cache folder and the time given.
fn has_digest_in(
    root: Option<&Path>,
    data: &Data,
    digest: &str,
    now: u64,
) -> std::io::Result<bool> {
    let record = root.and_then(|r| checked_record(r, data, digest, now));
    if record.as_ref().is_some_and(|p| p.is_file()) {
        return Ok(true);
    }
    if sha256_of(data)? != digest {
        return Ok(false);
    }
    if let Some(path) = record {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::File::create(path);
    }
    Ok(true)
}

/// Where the record that `data` hashed to `digest` goes, when `data` is a
/// range of a file old enough to be trusted by its metadata.
fn checked_record(root: &Path, data: &Data, digest: &str, now: u64) -> Option<PathBuf> {
    use kiln_archive::identity::Identity;
    let Data::File { file, offset, len } = data else {
        return None;
    };
    let id = Identity::of(&file.metadata().ok()?);
    // Racy: changed so recently that a later change may keep its times.
    if id.racy(i128::from(now) * 1_000_000_000, 2_000_000_000) {
        return None;
    }
    let key = format!("v2 {id} {offset} {len} {digest}");
    let hex = format!("{:x}", Sha256::digest(key.as_bytes()));
    Some(root.join("checked").join(&hex[..2]).join(&hex[2..]))
}

/// `sha256:<hex>` of `data`, read in chunks.
pub fn sha256_of(data: &Data) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    data.chunks(|c| {
        h.update(c);
        Ok(())
    })?;
    Ok(format!("sha256:{:x}", h.finalize()))
}

/// Where a blob being made is written: a temporary file in the cache's blob
/// folder, renamed to its digest when kept, or (without a cache) an
/// anonymous file that disappears with the build.
pub enum Incoming {
    /// In the cache: the temporary file, the cache folder, and where the
    /// store's writes wait their turn.
    Cache(AtomicFile, PathBuf, Arc<Pending>),
    /// An unnamed temporary file.
    Anonymous(std::fs::File),
}

impl Incoming {
    /// An unnamed temporary file, in the scratch folder.
    pub fn anonymous() -> Result<Self, String> {
        scratch_file().map(Incoming::Anonymous)
    }

    /// An unnamed temporary file in the system's temp folder (where a
    /// layer goes when the cache's disk is full).
    pub fn elsewhere() -> std::io::Result<Self> {
        tempfile::tempfile().map(Incoming::Anonymous)
    }

    /// Whether it is a file in the cache.
    pub fn in_cache(&self) -> bool {
        matches!(self, Incoming::Cache(..))
    }

    /// A writer to the file: for the cache, one that starts the disk as
    /// it goes (the commit syncs it).
    pub fn writer(&self) -> Writeback<'_> {
        match self {
            Incoming::Cache(temp, ..) => temp.writer(),
            Incoming::Anonymous(f) => Writeback::plain(f),
        }
    }

    /// Keep what was written as the blob `digest` of `size` bytes: read
    /// through the open file from now on; in the cache, synced and named
    /// by its digest on the store's thread (a blob the disk cannot take is
    /// not kept, and the build goes on from the file).
    pub fn keep(self, digest: &str, size: u64) -> std::io::Result<Data> {
        match self {
            Incoming::Cache(temp, root, pending) => {
                let file = temp.file().try_clone()?;
                let path = root.join("blobs/sha256").join(hex(digest));
                pending.defer(Box::new(move || {
                    let _ = temp.commit_as(&path);
                }));
                Ok(Data::File {
                    file: Arc::new(file),
                    offset: 0,
                    len: size,
                })
            }
            Incoming::Anonymous(file) => Ok(Data::File {
                file: std::sync::Arc::new(file),
                offset: 0,
                len: size,
            }),
        }
    }

    /// Keep the layer `diff_id` that [`Packing`] wrote here: its blob is
    /// read at once, through the open files. In the cache, on the store's
    /// thread: the new pieces synced and named (as the blob itself when
    /// nothing was kept from before, else as a pack), then where each new
    /// piece is recorded, then the layer's record (the ranges it is made of).
    pub fn keep_layer(self, packed: Packed, diff_id: &str) -> std::io::Result<Data> {
        let file = Arc::new(match &self {
            Incoming::Cache(temp, ..) => temp.file().try_clone()?,
            Incoming::Anonymous(f) => f.try_clone()?,
        });
        let data = Data::concat(packed.parts.iter().map(|p| match p {
            Part::Pack { offset, len } => Data::File {
                file: file.clone(),
                offset: *offset,
                len: *len,
            },
            Part::Kept(k) => k.data(),
        }));
        let Incoming::Cache(temp, root, pending) = self else {
            return Ok(data);
        };
        let whole = packed.parts.iter().all(|p| matches!(p, Part::Pack { .. }));
        let name = if whole {
            format!("blobs/sha256/{}", hex(&packed.digest))
        } else {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!(
                "packs/{BLOB_FORMAT}/{}-{:x}-{nanos:x}",
                hex(&packed.digest),
                std::process::id()
            )
        };
        let mut record = format!("{} {}\n", packed.digest, packed.size);
        let mut kept = Vec::new();
        if !whole {
            for p in &packed.parts {
                let line = match p {
                    Part::Pack { offset, len } => format!("{name} {offset} {len}\n"),
                    Part::Kept(k) => {
                        kept.push(root.join(&*k.name));
                        format!("{} {} {}\n", k.name, k.offset, k.len)
                    }
                };
                record.push_str(&line);
            }
        }
        let index: Vec<(PathBuf, String)> = packed
            .fresh
            .iter()
            .map(|(key, offset, len)| (piece_path(&root, key), format!("{name} {offset} {len}")))
            .collect();
        let diffid_path = root.join("diffids").join(BLOB_FORMAT).join(hex(diff_id));
        let has_new = packed.parts.iter().any(|p| matches!(p, Part::Pack { .. }));
        pending.defer(Box::new(move || {
            if has_new && temp.commit_as(&root.join(&name)).is_err() {
                return;
            }
            // Where new pieces are: whole or not at all, not synced (one
            // lost to a crash is made again).
            for (path, text) in index {
                let _ = kiln_archive::atomic::write_unsynced(&path, text.as_bytes(), 0o600);
            }
            kept.iter().for_each(|p| touch(p));
            let _ = write_now(&diffid_path, record.as_bytes());
        }));
        Ok(data)
    }
}

static CACHE_ROOT: std::sync::RwLock<Option<PathBuf>> = std::sync::RwLock::new(None);

fn cache_root() -> Option<PathBuf> {
    CACHE_ROOT.read().ok()?.clone()
}

/// The cache folder of this process's builds: unnamed temporary files go
/// there, unpacked layers in its `unpacked/`; the last store opened wins.
pub fn set_cache_root(dir: &Path) {
    if let Ok(mut root) = CACHE_ROOT.write() {
        *root = Some(dir.to_path_buf());
    }
}

/// Where the uncompressed tar of the layer `diff_id` is kept in the cache
/// (`unpacked/<hex>`), when there is a cache and the `diff_id` is a digest.
pub fn unpacked_path(diff_id: &str) -> Option<PathBuf> {
    let hex = diff_id.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(cache_root()?.join("unpacked").join(hex))
}

/// An unnamed temporary file (gone when closed, whatever happens to the
/// process) in the cache folder, else the system's temp folder.
pub fn scratch_file() -> Result<std::fs::File, String> {
    cache_root()
        .and_then(|dir| tempfile::tempfile_in(dir).ok())
        .map_or_else(tempfile::tempfile, Ok)
        .map_err(|e| format!("creating a temporary file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sha256;

    #[test]
    fn a_digest_is_trusted_by_file_identity_only_when_the_file_is_unchanged() {
        use std::io::{Seek, Write};
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let path = root.join("blob");
        std::fs::write(&path, b"the layer's bytes").expect("write");
        let open = || Data::whole(std::fs::File::open(&path).expect("open")).expect("data");
        let digest = sha256_of(&open()).expect("hash");
        let records = || {
            std::fs::read_dir(root.join("checked"))
                .map(|d| d.flatten().count())
                .unwrap_or(0)
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        // Just written: hashed, not recorded (a change now could keep its times).
        assert!(has_digest_in(Some(root), &open(), &digest, now).expect("check"));
        assert_eq!(records(), 0);
        assert!(!has_digest_in(Some(root), &open(), &sha256(b"x"), now + 10).expect("check"));
        assert_eq!(records(), 0, "a mismatch is never recorded");
        // Old enough: recorded, then trusted.
        assert!(has_digest_in(Some(root), &open(), &digest, now + 10).expect("check"));
        assert_eq!(records(), 1);
        let record = checked_record(root, &open(), &digest, now + 10).expect("record");
        assert!(record.is_file());
        // Changed in place (same size): its ctime moves, the record no longer
        // applies, and the new bytes are hashed.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        f.write_all(b"THE").expect("write");
        drop(f);
        assert!(!has_digest_in(Some(root), &open(), &digest, now + 20).expect("check"));
        // Memory is always hashed.
        let mem = Data::from(b"m".to_vec());
        assert!(has_digest_in(Some(root), &mem, &sha256(b"m"), now + 10).expect("check"));
        assert!(!has_digest_in(Some(root), &mem, &digest, now + 10).expect("check"));
    }

    #[test]
    fn blobs_and_layers_round_trip_and_damage_is_ignored() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let blob = b"compressed".to_vec();
        let layer = Layer {
            digest: sha256(&blob),
            diff_id: sha256(b"plain"),
            blob: Data::from(blob.clone()),
            media_type: media::LAYER_GZIP.into(),
        };
        assert!(store.layer(&layer.diff_id).is_none());
        let into = store.incoming().expect("incoming");
        into.writer().write_all(&blob).expect("blob");
        into.keep(&layer.digest, blob.len() as u64).expect("keep");
        store
            .put_diff_id(&layer.diff_id, &layer.digest, layer.blob.len())
            .expect("record");
        assert_eq!(store.layer(&layer.diff_id), Some(layer.clone()));
        let key = sha256(b"recipe");
        assert!(store.recipe(&key).is_none());
        store.put_recipe(&key, &layer.diff_id).expect("recipe");
        assert_eq!(store.recipe(&key), Some(layer.clone()));
        // A cut-short blob is not used as a layer; a changed one not as a blob.
        std::fs::write(store.blob_path(&layer.digest), b"cut").expect("damage");
        assert!(store.layer(&layer.diff_id).is_none());
        assert!(store.recipe(&key).is_none());
        assert!(store.blob(&layer.digest).is_none());
        assert!(store.blob("sha256:../../etc/passwd").is_none());
    }

    #[test]
    fn a_kept_blob_is_read_at_once_and_named_before_its_records() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let bytes = b"a gzip'd layer".repeat(1000);
        let digest = sha256(&bytes);
        let into = store.incoming().expect("incoming");
        into.writer().write_all(&bytes).expect("write");
        let blob = into.keep(&digest, bytes.len() as u64).expect("keep");
        // Read through the open file, whether or not it is named yet.
        assert_eq!(blob, Data::from(bytes.clone()));
        store
            .put_diff_id(&sha256(b"tar"), &digest, bytes.len() as u64)
            .expect("record");
        // A reader by name waits for the writes given before it.
        let layer = store.layer(&sha256(b"tar")).expect("the layer is found");
        assert_eq!(layer.blob, blob);
        assert!(store.blob(&digest).is_some_and(|b| b == blob));
        // The end of the build leaves everything named and nothing else.
        store
            .put_recipe(&sha256(b"recipe"), &sha256(b"tar"))
            .expect("recipe");
        let recipe = store.recipe_path(&sha256(b"recipe"));
        drop(store);
        assert!(recipe.is_file());
        let temps = walkdir(dir.path())
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".kiln-tmp-"))
            .count();
        assert_eq!(temps, 0);
    }

    #[test]
    fn a_layer_made_mostly_of_earlier_pieces_is_kept_as_their_ranges() {
        use crate::image::{Entry, Kind};
        let dir = tempfile::tempdir().expect("tempdir");
        // Bytes gzip cannot shrink, in many pieces.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut body: Vec<u8> = (0..(12 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let make = |store: &Store, body: &[u8], read: bool| {
            let entries = BTreeMap::from([(
                "big".to_string(),
                Entry {
                    kind: Kind::File(Data::from(body.to_vec())),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
            )]);
            let pieces = store.pieces(read);
            let into = store.incoming().expect("incoming");
            Layer::make(&entries, 0, into, Some(&pieces), None).expect("layer")
        };
        let files = |sub: &str| walkdir(&dir.path().join(sub)).len();
        let store = Store::open(dir.path()).expect("store");
        let cold = make(&store, &body, true);
        assert!(matches!(cold.blob, Data::File { .. }), "{:?}", cold.blob);
        drop(store);
        // Cold: one blob, every piece recorded, no pack.
        assert_eq!(files("blobs/sha256"), 1);
        assert!(files(&format!("pieces/{BLOB_FORMAT}")) > 3);
        assert_eq!(files(&format!("packs/{BLOB_FORMAT}")), 0);

        // One byte changed near the end: the layer is the earlier blob's
        // ranges and a small pack of the new pieces.
        let end = body.len() - 1000;
        body[end] ^= 0xff;
        let store = Store::open(dir.path()).expect("store");
        let edited = make(&store, &body, true);
        assert!(
            matches!(&edited.blob, Data::Parts { .. }),
            "{:?}",
            edited.blob
        );
        let fresh = {
            let other = tempfile::tempdir().expect("tempdir");
            let store = Store::open(other.path()).expect("store");
            make(&store, &body, true)
        };
        assert_eq!(
            (&edited.digest, &edited.diff_id),
            (&fresh.digest, &fresh.diff_id)
        );
        assert_eq!(edited.blob, fresh.blob, "the same bytes as a cold build");
        drop(store);
        let packs = walkdir(&dir.path().join(format!("packs/{BLOB_FORMAT}")));
        assert_eq!(packs.len(), 1);
        let pack_size = std::fs::metadata(&packs[0]).expect("pack").len();
        assert!(pack_size < 5 << 20, "the pack holds {pack_size} bytes");

        // Read back by diff_id: the same ranges, the same bytes.
        let store = Store::open(dir.path()).expect("store");
        let again = store.layer(&edited.diff_id).expect("found");
        assert!(matches!(&again.blob, Data::Parts { .. }));
        assert_eq!(again.blob, fresh.blob);
        drop(store);
        // A file of it pruned: the layer is not found (so made again),
        // never read short.
        std::fs::remove_file(&packs[0]).expect("prune");
        let store = Store::open(dir.path()).expect("store");
        assert!(store.layer(&edited.diff_id).is_none());
        // `--no-cache` reads no piece and makes the same layer whole.
        let plain = make(&store, &body, false);
        assert!(matches!(plain.blob, Data::File { .. }));
        assert_eq!(plain.digest, edited.digest);
        drop(store);
        let store = Store::open(dir.path()).expect("store");
        let whole = store.layer(&edited.diff_id).expect("found");
        assert!(matches!(whole.blob, Data::File { .. }));
        assert_eq!(whole.blob, fresh.blob);
    }

    #[test]
    fn records_naming_files_outside_the_cache_are_ignored() {
        for bad in [
            "../etc/passwd 0 1",
            "/etc/passwd 0 1",
            "blobs/../../x 0 1",
            "pieces/x 0 1",
            "blobs/sha256/ab 0",
            "blobs/sha256/ab 0 1 2",
            "blobs/sha256/a\tb 0 1",
        ] {
            assert!(parse_range(bad).is_none(), "{bad}");
        }
        assert_eq!(
            parse_range("packs/f-1/ab-1 3 4"),
            Some(("packs/f-1/ab-1", 3, 4))
        );
    }

    fn walkdir(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            }
            out.push(p);
        }
        out
    }
}
