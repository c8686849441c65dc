//! Carrying out a Dockerfile without a daemon.
//!
//! Stages start from `scratch`, an earlier stage, a registry image or an
//! OCI layout build context; base images' `ONBUILD` triggers run first.
//! `COPY`/`ADD` take local files from the context archive (globs, `--from`
//! an earlier stage or an image, `--chown` by number or by the stage's
//! `/etc/passwd` and `/etc/group`, `--chmod`), one layer each; the metadata
//! instructions (`ARG`, `ENV`, `LABEL`, `WORKDIR`, `USER`, `EXPOSE`,
//! `VOLUME`, `SHELL`, `CMD`, `ENTRYPOINT`, `STOPSIGNAL`, `HEALTHCHECK`,
//! `ONBUILD`, `MAINTAINER`) change the config. `RUN` is refused before any
//! work. File data is shared, never copied: every file is a slice of the
//! context archive or of a base layer.
//!
//! A layer whose tar is unchanged since an earlier build takes its blob from
//! the [`Store`] instead of being compressed again.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    path::Path,
    rc::Rc,
};

use bytes::Bytes;
use kiln_distribution::CallError;
use serde_json::{json, Value};

use crate::{
    base::{self, Base},
    dockerfile::{self, Args, Instruction},
    image::{
        self, history_entry, layer_tar, media, sha256, Entry, Image, Kind, Layer, Platform,
        RuntimeConfig,
    },
    store::Store,
    tree::{self, clean, remove_under},
};

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

fn at(line: usize, message: impl Into<String>) -> BuildError {
    BuildError {
        line,
        message: message.into(),
        cause: Cause::Input,
    }
}

fn pull_failed(line: usize, e: CallError) -> BuildError {
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

/// Fetches a registry image for a platform.
pub type Pull<'a> = dyn Fn(&str, &Platform) -> Result<Base, CallError> + 'a;

/// What to build.
pub struct BuildInput<'a> {
    /// The Dockerfile's text.
    pub dockerfile: &'a str,
    /// The build context the host made.
    pub context: &'a ContextFiles,
    /// The sha1 of that archive, when known: it lets an unchanged `COPY`
    /// find its layer by recipe.
    pub context_sha1: Option<&'a str>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<&'a str>,
    /// `--label`s, set on the result after the Dockerfile's own.
    pub labels: BTreeMap<String, String>,
    /// The epoch second recorded in the image (0, or `SOURCE_DATE_EPOCH`).
    pub created: u64,
    /// The platform built for.
    pub platform: Platform,
    /// `--build-context NAME=VALUE` (`oci-layout://PATH[:TAG]`,
    /// `docker-image://REF`).
    pub contexts: BTreeMap<String, String>,
    /// `--no-cache`: compress every layer again.
    pub no_cache: bool,
    /// The layer cache.
    pub store: Option<&'a Store>,
    /// Fetches registry images.
    pub pull: &'a Pull<'a>,
}

/// The result of a build.
pub struct Built {
    /// The image.
    pub image: Image,
    /// Layers made by this build.
    pub layers_made: usize,
    /// Of those, how many came from the cache.
    pub layers_cached: usize,
}

/// A stage being built.
#[derive(Clone, Default)]
struct Stage {
    name: Option<String>,
    /// The base's config, when not `scratch`.
    base_config: Option<Value>,
    /// Layers whose files are not in `files` (a base image's), bottom first.
    lower: Vec<Layer>,
    /// The files of `lower`, applied once when first needed.
    lower_fs: Option<Rc<BTreeMap<String, Entry>>>,
    /// Files this stage (or the stage it started from) added.
    files: BTreeMap<String, Entry>,
    /// All layers, bottom first.
    layers: Vec<Layer>,
    history: Vec<Value>,
    runtime: RuntimeConfig,
    /// ARG and ENV values for substitution.
    vars: BTreeMap<String, String>,
    shell: Vec<String>,
    cmd_set: bool,
    author: Option<String>,
}

impl Stage {
    fn lower_fs(&mut self) -> Result<Rc<BTreeMap<String, Entry>>, String> {
        if let Some(fs) = &self.lower_fs {
            return Ok(fs.clone());
        }
        let fs = Rc::new(base::filesystem(&self.lower)?);
        self.lower_fs = Some(fs.clone());
        Ok(fs)
    }

    /// The whole filesystem: the base's, then this stage's files.
    fn filesystem(&mut self) -> Result<BTreeMap<String, Entry>, String> {
        let mut fs = (*self.lower_fs()?).clone();
        for (path, entry) in &self.files {
            if !matches!(entry.kind, Kind::Dir) {
                remove_under(&mut fs, path);
            }
            fs.insert(path.clone(), entry.clone());
        }
        Ok(fs)
    }

    /// An entry of the filesystem, without building all of it.
    fn lookup(&mut self, path: &str) -> Result<Option<Entry>, String> {
        if let Some(e) = self.files.get(path) {
            return Ok(Some(e.clone()));
        }
        if self.lower.is_empty() {
            return Ok(None);
        }
        Ok(self.lower_fs()?.get(path).cloned())
    }
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The build context: the host's archive (an uncompressed tar), mapped,
/// and its files by path, each a slice of it.
#[derive(Default)]
pub struct ContextFiles {
    archive: Bytes,
    files: BTreeMap<String, Entry>,
}

impl ContextFiles {
    /// Map and index the archive at `path`.
    pub fn open(path: &Path) -> Result<Self, BuildError> {
        let (archive, files) = read_context(path)?;
        Ok(Self { archive, files })
    }

    /// The regular file at `path` (relative to the context root), as text.
    pub fn text(&self, path: &str) -> Option<String> {
        match &self.files.get(path)?.kind {
            Kind::File(data) => Some(String::from_utf8_lossy(data).into_owned()),
            _ => None,
        }
    }
}

/// Read the context archive (mapped): every file a slice of it.
fn read_context(path: &Path) -> Result<(Bytes, BTreeMap<String, Entry>), BuildError> {
    let failed = |e: std::io::Error| at(0, format!("build context {}: {e}", path.display()));
    let bytes = match crate::store::map(path) {
        Some(b) => b,
        None => Bytes::from(std::fs::read(path).map_err(failed)?),
    };
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(at(
            0,
            format!(
                "build context {}: pass the uncompressed tar",
                path.display()
            ),
        ));
    }
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    let members = tree::members(&bytes)
        .map_err(|e| at(0, format!("build context {}: {e}", path.display())))?;
    for (name, member) in members {
        // Docker ignores the context's owners: files are root's.
        let entry = match member {
            tree::Member::Entry(e) => e,
            tree::Member::HardLink(target, e) => match files.get(&target) {
                Some(t) => Entry {
                    kind: t.kind.clone(),
                    ..e
                },
                None => continue,
            },
        };
        files.insert(
            name,
            Entry {
                uid: 0,
                gid: 0,
                ..entry
            },
        );
    }
    Ok((bytes, files))
}

/// The recipe of a layer: everything its tar is made of, with each file's
/// bytes named by where they sit in the context archive (whose sha1 pins
/// them) rather than hashed; bytes from elsewhere are hashed.
fn recipe_key(
    context_sha1: &str,
    context: &Bytes,
    entries: &BTreeMap<String, Entry>,
    created: u64,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"kiln-oci-recipe-v1\0");
    h.update(context_sha1.as_bytes());
    h.update(created.to_le_bytes());
    let base = context.as_ptr() as usize;
    let end = base + context.len();
    for (path, e) in entries {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(e.mode.to_le_bytes());
        h.update(e.uid.to_le_bytes());
        h.update(e.gid.to_le_bytes());
        match &e.kind {
            Kind::Dir => h.update(b"d"),
            Kind::Symlink(t) => {
                h.update(b"l");
                h.update(t.as_bytes());
                h.update([0]);
            }
            Kind::File(data) => {
                let at = data.as_ptr() as usize;
                if at >= base && at + data.len() <= end {
                    h.update(b"c");
                    h.update(((at - base) as u64).to_le_bytes());
                    h.update((data.len() as u64).to_le_bytes());
                } else {
                    h.update(b"f");
                    h.update(Sha256::digest(data));
                }
            }
        }
    }
    format!("sha256:{:x}", h.finalize())
}

/// Go's `filepath.Match` on one path component: `*`, `?`, `[...]`
/// (ranges, `^` negation) and `\` escapes.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length consumed incl. ']').
        let mut i = 0;
        let negate = matches!(p.first(), Some('^') | Some('!'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let mut lo = p[i];
            if lo == '\\' {
                i += 1;
                lo = *p.get(i)?;
            }
            let mut hi = lo;
            if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&x| x != ']') {
                hi = p[i + 2];
                if hi == '\\' {
                    hi = *p.get(i + 3)?;
                    i += 1;
                }
                i += 2;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 1;
        }
        None
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match (
                n.first(),
                class(&p[1..], n.first().copied().unwrap_or('\0')),
            ) {
                (Some(_), Some((true, len))) => go(&p[1 + len..], &n[1..]),
                _ => false,
            },
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// The paths a source names in `fs`: itself, or each glob match.
fn matches(fs: &BTreeMap<String, Entry>, source: &str) -> Vec<String> {
    let source = clean(source);
    if !source.contains(['*', '?', '[']) {
        let exists = source.is_empty()
            || fs.contains_key(&source)
            || fs
                .range(format!("{source}/")..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&format!("{source}/")));
        return if exists { vec![source] } else { vec![] };
    }
    let parts: Vec<&str> = source.split('/').collect();
    let mut found = BTreeSet::new();
    for path in fs.keys() {
        let comps: Vec<&str> = path.split('/').collect();
        if comps.len() >= parts.len() && parts.iter().zip(&comps).all(|(p, c)| glob_match(p, c)) {
            found.insert(comps[..parts.len()].join("/"));
        }
    }
    found.into_iter().collect()
}

/// The entries under `path` (a directory: its contents, relative to it;
/// a file or link: itself, under its base name), symlinks at the top
/// followed as Docker does.
fn gather(fs: &BTreeMap<String, Entry>, path: &str) -> (bool, Vec<(String, Entry)>) {
    let mut path = path.to_string();
    for _ in 0..40 {
        match fs.get(&path) {
            Some(Entry {
                kind: Kind::Symlink(target),
                ..
            }) => {
                let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                let resolved = if target.starts_with('/') {
                    clean(target)
                } else {
                    clean(&format!("{parent}/{target}"))
                };
                if resolved == path || !fs.contains_key(&resolved) {
                    break;
                }
                path = resolved;
            }
            _ => break,
        }
    }
    let is_dir = path.is_empty()
        || !matches!(
            fs.get(&path).map(|e| &e.kind),
            Some(Kind::File(_) | Kind::Symlink(_))
        );
    if !is_dir {
        let base = path.rsplit('/').next().unwrap_or(&path).to_string();
        return (
            false,
            fs.get(&path)
                .map(|e| (base, e.clone()))
                .into_iter()
                .collect(),
        );
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let items = fs
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter(|(k, _)| k.len() > prefix.len())
        .map(|(k, e)| (k[prefix.len()..].to_string(), e.clone()))
        .collect();
    (true, items)
}

/// Follow symlinks in the directories of `path` (an absolute path without
/// the leading `/`) as the image's filesystem has them, so `COPY x /bin/`
/// over a base whose `/bin` links to `usr/bin` writes `usr/bin/x`.
/// With `last`, the final component is followed too (a folder copied into).
fn resolve_dirs(stage: &mut Stage, path: &str, last: bool) -> Result<String, String> {
    let mut done: Vec<String> = Vec::new();
    let mut rest: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    rest.reverse();
    let mut hops = 0;
    while let Some(part) = rest.pop() {
        if rest.is_empty() && !last {
            done.push(part);
            break;
        }
        let candidate = if done.is_empty() {
            part.clone()
        } else {
            format!("{}/{part}", done.join("/"))
        };
        match stage.lookup(&candidate)? {
            Some(Entry {
                kind: Kind::Symlink(target),
                ..
            }) => {
                hops += 1;
                if hops > 40 {
                    return Err(format!("too many levels of symbolic links in /{path}"));
                }
                if target.starts_with('/') {
                    done.clear();
                }
                for t in target.split('/').rev() {
                    if !t.is_empty() && t != "." {
                        rest.push(t.to_string());
                    }
                }
            }
            _ => {
                if part == ".." {
                    done.pop();
                } else {
                    done.push(part);
                }
            }
        }
    }
    Ok(clean(&done.join("/")))
}

fn shell_or_exec(args: &Args, shell: &[String]) -> Vec<String> {
    match args {
        Args::Exec(list) => list.clone(),
        Args::Shell(text) => {
            let mut v = shell.to_vec();
            v.push(text.clone());
            v
        }
    }
}

/// The files of a tar archive `data` (plain or gzip'd), or `None` when it
/// is not one (then `ADD` copies it as it is).
fn unpack_archive(data: &Bytes, source: &str) -> Result<Option<BTreeMap<String, Entry>>, String> {
    use std::io::Read;
    fn is_tar(d: &[u8]) -> bool {
        d.len() >= 262 && &d[257..262] == b"ustar"
    }
    let plain = if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        if flate2::read::MultiGzDecoder::new(data.as_ref())
            .read_to_end(&mut out)
            .is_err()
        {
            return Ok(None);
        }
        Bytes::from(out)
    } else if data.starts_with(b"BZh")
        || data.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])
        || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
    {
        return Err(format!(
            "ADD {source}: bzip2, xz and zstd archives are not unpacked by the oci builder; \
             unpack it into the context and COPY the folder, or gzip it"
        ));
    } else {
        data.clone()
    };
    if !is_tar(&plain) {
        return Ok(None);
    }
    let layer = Layer {
        blob: plain,
        digest: String::new(),
        diff_id: String::new(),
        media_type: media::LAYER_TAR.into(),
    };
    base::filesystem(std::slice::from_ref(&layer))
        .map(Some)
        .map_err(|e| format!("ADD {source}: {e}"))
}

/// Go's `time.ParseDuration` for `HEALTHCHECK` flags, in nanoseconds.
fn duration_ns(text: &str) -> Option<i64> {
    if text == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

fn healthcheck(ins: &Instruction, shell: &[String]) -> Result<Value, BuildError> {
    let line = ins.line;
    let text = ins.original.trim();
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    if word.eq_ignore_ascii_case("NONE") {
        if !rest.trim().is_empty() || !ins.flags.is_empty() {
            return Err(at(line, "HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(json!({"Test": ["NONE"]}));
    }
    if !word.eq_ignore_ascii_case("CMD") {
        return Err(at(
            line,
            format!("HEALTHCHECK: expected CMD or NONE, found {word:?}"),
        ));
    }
    let rest = rest.trim();
    let test: Vec<String> = match serde_json::from_str::<Vec<String>>(rest) {
        Ok(list) => std::iter::once("CMD".to_string()).chain(list).collect(),
        Err(_) if rest.is_empty() => return Err(at(line, "HEALTHCHECK CMD needs a command")),
        Err(_) => {
            let _ = shell;
            vec!["CMD-SHELL".to_string(), rest.to_string()]
        }
    };
    let mut check = json!({ "Test": test });
    for (name, value) in &ins.flags {
        let key = match name.as_str() {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let n: i64 = value.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    at(
                        line,
                        format!("HEALTHCHECK --retries={value}: expected a whole number"),
                    )
                })?;
                if n > 0 {
                    check["Retries"] = json!(n);
                }
                continue;
            }
            other => {
                return Err(at(
                    line,
                    format!("HEALTHCHECK --{other} is not a HEALTHCHECK option"),
                ))
            }
        };
        let ns = duration_ns(value).ok_or_else(|| {
            at(
                line,
                format!("HEALTHCHECK --{name}={value}: expected a duration such as 30s"),
            )
        })?;
        if ns > 0 {
            check[key] = json!(ns);
        }
    }
    Ok(check)
}

/// Look a user or group up in the stage's `/etc/passwd` or `/etc/group`.
fn id_of(stage: &mut Stage, file: &str, name: &str) -> Result<Option<(u64, u64)>, String> {
    let Some(Entry {
        kind: Kind::File(data),
        ..
    }) = stage.lookup(file)?
    else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&data);
    Ok(text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name)
            .then(|| (f[2].parse().unwrap_or(0), f[3].parse().unwrap_or(0)))
    }))
}

fn chown(stage: &mut Stage, value: &str, line: usize) -> Result<(u64, u64), BuildError> {
    let (user, group) = match value.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value, None),
    };
    let e = |m: String| at(line, m);
    let (uid, primary) = match user.parse::<u64>() {
        Ok(n) => (n, n),
        Err(_) => id_of(stage, "etc/passwd", user)
            .map_err(e)?
            .ok_or_else(|| {
                at(
                    line,
                    format!("--chown={value}: no user {user:?} in the image's /etc/passwd"),
                )
            })?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => id_of(stage, "etc/group", g)
                .map_err(e)?
                .map(|(gid, _)| gid)
                .ok_or_else(|| {
                    at(
                        line,
                        format!("--chown={value}: no group {g:?} in the image's /etc/group"),
                    )
                })?,
        },
    };
    Ok((uid, gid))
}

/// The builder's state across stages.
struct Run<'a, 'i> {
    input: &'i BuildInput<'a>,
    escape: char,
    global_args: BTreeMap<String, String>,
    stages: Vec<Stage>,
    layers_made: usize,
    layers_cached: usize,
}

impl Run<'_, '_> {
    /// The base named by `FROM` or `COPY --from`: not a stage.
    fn image(&self, name: &str, platform: &Platform, line: usize) -> Result<Base, BuildError> {
        let spec = self.input.contexts.get(name).map(String::as_str);
        match spec {
            Some(s) if s.starts_with("oci-layout://") => {
                base::from_layout(&s["oci-layout://".len()..], platform).map_err(|e| at(line, e))
            }
            Some(s) if s.starts_with("docker-image://") => {
                (self.input.pull)(&s["docker-image://".len()..], platform)
                    .map_err(|e| pull_failed(line, e))
            }
            Some(s) => Err(at(line, format!(
                "build context {name}={s}: only oci-layout:// and docker-image:// contexts are supported"
            ))),
            None => (self.input.pull)(name, platform).map_err(|e| pull_failed(line, e)),
        }
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.stages.len())
            })
    }

    fn from(&mut self, ins: &Instruction) -> Result<(), BuildError> {
        let line = ins.line;
        let text = dockerfile::expand(&ins.original, &self.global_args, self.escape)
            .map_err(|e| at(line, e))?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let name = match words.as_slice() {
            [_] => None,
            [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_lowercase()),
            _ => return Err(at(line, format!("FROM {text}: expected IMAGE [AS NAME]"))),
        };
        let mut platform = self.input.platform.clone();
        for (flag, value) in &ins.flags {
            match flag.as_str() {
                "platform" => {
                    let value = dockerfile::expand(value, &self.global_args, self.escape)
                        .map_err(|e| at(line, e))?;
                    platform = Platform::parse(&value).map_err(|e| at(line, e))?;
                }
                other => return Err(at(line, format!("FROM --{other} is not a FROM option"))),
            }
        }
        let image = words[0];
        let mut stage = if image.eq_ignore_ascii_case("scratch") {
            Stage {
                runtime: RuntimeConfig {
                    env: vec![DEFAULT_PATH.into()],
                    ..Default::default()
                },
                ..Default::default()
            }
        } else if let Some(i) = self
            .stage_index(image)
            .filter(|_| !self.input.contexts.contains_key(image))
        {
            let mut s = self.stages[i].clone();
            s.cmd_set = false;
            s
        } else {
            let base = self.image(image, &platform, line)?;
            let runtime = base
                .config
                .get("config")
                .map(RuntimeConfig::from_config)
                .unwrap_or_default();
            let history = base
                .config
                .get("history")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            Stage {
                vars: BTreeMap::new(),
                shell: runtime.shell.clone().unwrap_or_default(),
                runtime,
                history,
                lower: base.layers.clone(),
                layers: base.layers,
                base_config: Some(base.config),
                ..Default::default()
            }
        };
        stage.name = name;
        if stage.shell.is_empty() {
            stage.shell = vec!["/bin/sh".into(), "-c".into()];
        }
        stage.vars = stage
            .runtime
            .env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The base's ONBUILD triggers run now, and are not inherited.
        let triggers = std::mem::take(&mut stage.runtime.on_build);
        self.stages.push(stage);
        for trigger in triggers {
            let parsed = dockerfile::parse(&trigger).map_err(|e| {
                at(
                    line,
                    format!("ONBUILD trigger {trigger:?} of {image}: {}", e.message),
                )
            })?;
            for t in parsed.instructions {
                if matches!(
                    t.keyword.as_str(),
                    "RUN" | "FROM" | "ONBUILD" | "MAINTAINER"
                ) {
                    return Err(at(
                        line,
                        format!(
                            "{image} has the ONBUILD trigger {trigger:?}, which the daemonless `oci` \
                             builder cannot run: build with the `local` builder (--builder-flavor local)"
                        ),
                    ));
                }
                let t = Instruction { line, ..t };
                self.instruction(&t)?;
            }
        }
        Ok(())
    }

    fn instruction(&mut self, ins: &Instruction) -> Result<(), BuildError> {
        let line = ins.line;
        let escape = self.escape;
        let Some(current) = self.stages.len().checked_sub(1) else {
            return Err(at(line, format!("{} before the first FROM", ins.keyword)));
        };
        let vars = self.stages[current].vars.clone();
        let expand = |text: &str| dockerfile::expand(text, &vars, escape).map_err(|e| at(line, e));
        let mut layer = false;
        let stage = &mut self.stages[current];
        match ins.keyword.as_str() {
            "ARG" => {
                let text = expand(&ins.original)?;
                let declared = declare_args(&text, escape, &self.input.build_args, &self.global_args)
                    .map_err(|e| at(line, e))?;
                stage.vars.extend(declared);
            }
            "ENV" => {
                let text = expand(&ins.original)?;
                for (k, v) in dockerfile::pairs(&text, escape, true).map_err(|e| at(line, e))? {
                    stage.vars.insert(k.clone(), v.clone());
                    let key = format!("{k}=");
                    match stage.runtime.env.iter_mut().find(|e| e.starts_with(&key)) {
                        Some(e) => *e = format!("{k}={v}"),
                        None => stage.runtime.env.push(format!("{k}={v}")),
                    }
                }
            }
            "LABEL" => {
                let text = expand(&ins.original)?;
                for (k, v) in dockerfile::pairs(&text, escape, false).map_err(|e| at(line, e))? {
                    stage.runtime.labels.insert(k, v);
                }
            }
            "WORKDIR" => {
                let dir = expand(&ins.original)?;
                let base = stage.runtime.working_dir.clone().unwrap_or_else(|| "/".into());
                let joined = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", base.trim_end_matches('/'))
                };
                stage.runtime.working_dir = Some(format!("/{}", clean(&joined)));
            }
            "USER" => stage.runtime.user = Some(expand(&ins.original)?),
            "STOPSIGNAL" => stage.runtime.stop_signal = Some(expand(&ins.original)?),
            "EXPOSE" => {
                for port in expand(&ins.original)?.split_whitespace() {
                    let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                    let valid = !number.is_empty()
                        && number.split('-').all(|n| n.parse::<u16>().is_ok());
                    if !valid {
                        return Err(at(line, format!("EXPOSE {port}: invalid port")));
                    }
                    stage
                        .runtime
                        .exposed_ports
                        .insert(format!("{number}/{}", proto.to_lowercase()));
                }
            }
            "VOLUME" => {
                let list = match &ins.args {
                    Args::Exec(l) => l.iter().map(|v| expand(v)).collect::<Result<Vec<_>, _>>()?,
                    Args::Shell(t) => expand(t)?.split_whitespace().map(str::to_string).collect(),
                };
                if list.iter().any(|v| v.trim().is_empty()) {
                    return Err(at(line, "VOLUME specified can not be an empty string"));
                }
                stage.runtime.volumes.extend(list);
            }
            "SHELL" => match &ins.args {
                Args::Exec(l) if !l.is_empty() => {
                    stage.shell = l.clone();
                    stage.runtime.shell = Some(l.clone());
                }
                _ => return Err(at(line, "SHELL requires the arguments to be in JSON form")),
            },
            "CMD" => {
                stage.runtime.cmd = Some(shell_or_exec(&ins.args, &stage.shell));
                stage.cmd_set = true;
            }
            "ENTRYPOINT" => {
                stage.runtime.entrypoint = Some(shell_or_exec(&ins.args, &stage.shell));
                // Docker drops an inherited CMD when ENTRYPOINT is set.
                if !stage.cmd_set {
                    stage.runtime.cmd = None;
                }
            }
            "HEALTHCHECK" => stage.runtime.healthcheck = Some(healthcheck(ins, &stage.shell)?),
            "ONBUILD" => {
                let trigger = ins.original.trim();
                let word = trigger.split_whitespace().next().unwrap_or("").to_uppercase();
                if matches!(word.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(at(line, format!("{word} isn't allowed as an ONBUILD trigger")));
                }
                if word.is_empty() {
                    return Err(at(line, "ONBUILD requires an instruction"));
                }
                stage.runtime.on_build.push(trigger.to_string());
            }
            "MAINTAINER" => stage.author = Some(ins.original.trim().to_string()),
            "COPY" | "ADD" => {
                self.copy(ins, current, &vars)?;
                layer = true;
            }
            "RUN" => {
                return Err(at(
                    line,
                    "RUN runs a command, which needs a container runtime: build with the `local` builder (--builder-flavor local)",
                ))
            }
            other => return Err(at(line, format!("{other} is not supported by the oci builder"))),
        }
        let created_by = format!("{} {}", ins.keyword, ins.original.trim());
        self.stages[current]
            .history
            .push(history_entry(self.input.created, &created_by, !layer));
        Ok(())
    }

    /// The layer of `entries`: by recipe or by `diff_id` from the cache
    /// when it was made before (unless `--no-cache`), else made now.
    fn layer(
        &mut self,
        entries: &BTreeMap<String, Entry>,
        line: usize,
    ) -> Result<Layer, BuildError> {
        let store = self.input.store.filter(|_| !self.input.no_cache);
        let key = self.input.context_sha1.map(|sha1| {
            recipe_key(
                sha1,
                &self.input.context.archive,
                entries,
                self.input.created,
            )
        });
        if let (Some(store), Some(key)) = (store, &key) {
            if let Some(l) = store.recipe(key) {
                self.layers_cached += 1;
                return Ok(l);
            }
        }
        let tar_bytes = layer_tar(entries, self.input.created).map_err(|e| at(line, e))?;
        let diff_id = sha256(&tar_bytes);
        let layer = match store.and_then(|s| s.layer(&diff_id)) {
            Some(l) => {
                self.layers_cached += 1;
                l
            }
            None => Layer::compress(&tar_bytes, diff_id).map_err(|e| at(line, e))?,
        };
        // The cache is an optimisation: a full disk must not fail the build.
        if let Some(store) = self.input.store {
            let _ = store.put_layer(&layer);
            if let Some(key) = &key {
                let _ = store.put_recipe(key, &layer.diff_id);
            }
        }
        Ok(layer)
    }

    fn copy(
        &mut self,
        ins: &Instruction,
        current: usize,
        vars: &BTreeMap<String, String>,
    ) -> Result<(), BuildError> {
        let line = ins.line;
        let escape = self.escape;
        let expand = |t: &str| dockerfile::expand(t, vars, escape).map_err(|e| at(line, e));
        let mut words: Vec<String> = match &ins.args {
            Args::Exec(list) => list.iter().map(|w| expand(w)).collect::<Result<_, _>>()?,
            Args::Shell(text) => expand(text)?
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        };
        if words.len() < 2 {
            return Err(at(
                line,
                format!(
                    "{} requires at least two arguments, but got {}",
                    ins.keyword,
                    words.len()
                ),
            ));
        }
        let dest = words.pop().unwrap_or_default();
        let mut owner = None;
        let mut chmod = None;
        let mut from = None;
        for (name, value) in &ins.flags {
            match name.as_str() {
                "chown" => owner = Some(expand(value)?),
                "chmod" => {
                    chmod = Some(
                        u32::from_str_radix(value, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| {
                                at(
                                    line,
                                    format!(
                                    "--chmod={value}: expected octal permission bits such as 755"
                                ),
                                )
                            })?,
                    )
                }
                "from" if ins.keyword == "COPY" => from = Some(expand(value)?),
                "link" => {}
                other => {
                    return Err(at(
                        line,
                        format!("{} --{other} is not supported", ins.keyword),
                    ))
                }
            }
        }
        if ins.keyword == "ADD" {
            if let Some(w) = words
                .iter()
                .find(|w| w.contains("://") || w.starts_with("git@"))
            {
                return Err(at(line, format!("ADD {w}: the oci builder fetches nothing from the network; download it into the context and COPY it")));
            }
        }
        // The context is borrowed, not copied for every COPY.
        let context = self.input.context;
        let source_fs: Cow<'_, BTreeMap<String, Entry>> = match &from {
            None => Cow::Borrowed(&context.files),
            Some(name) => Cow::Owned(match self.stage_index(name).filter(|i| *i < current) {
                Some(i) => self.stages[i].filesystem().map_err(|e| at(line, e))?,
                None if self.stage_index(name).is_some() => {
                    return Err(at(
                        line,
                        format!("--from={name}: a stage cannot copy from itself or a later stage"),
                    ))
                }
                None => {
                    let base = self.image(name, &self.input.platform.clone(), line)?;
                    base::filesystem(&base.layers).map_err(|e| at(line, e))?
                }
            }),
        };
        let stage = &mut self.stages[current];
        let (uid, gid) = match &owner {
            Some(o) => chown(stage, o, line)?,
            None => (0, 0),
        };
        let workdir = stage
            .runtime
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{}/{dest}", workdir.trim_end_matches('/'))
        };
        // The destination as the image's filesystem has it: through
        // symlinked folders (a base whose /bin links to usr/bin).
        let followed = resolve_dirs(stage, &clean(&dest_abs), true).map_err(|e| at(line, e))?;
        let dest_is_dir = dest.ends_with('/')
            || followed.is_empty()
            || matches!(
                stage
                    .lookup(&followed)
                    .map_err(|e| at(line, e))?
                    .map(|e| e.kind),
                Some(Kind::Dir)
            );
        let dest_clean = if dest_is_dir {
            followed
        } else {
            resolve_dirs(stage, &clean(&dest_abs), false).map_err(|e| at(line, e))?
        };
        let mut sources: Vec<String> = Vec::new();
        let mut heredocs: Vec<(String, Bytes)> = Vec::new();
        for source in &words {
            let heredoc_name = source.strip_prefix("<<").map(|n| {
                n.trim_start_matches('-')
                    .trim_matches(|c| c == '"' || c == '\'')
            });
            if let Some(doc) = heredoc_name.and_then(|n| ins.heredocs.iter().find(|h| h.name == n))
            {
                let body = if doc.expand {
                    dockerfile::expand(&doc.body, vars, escape).map_err(|e| at(line, e))?
                } else {
                    doc.body.clone()
                };
                heredocs.push((doc.name.clone(), Bytes::from(body)));
                continue;
            }
            if from.is_none() && tree::escapes(source) {
                return Err(at(
                    line,
                    format!(
                        "{} {source}: forbidden path outside the build context",
                        ins.keyword
                    ),
                ));
            }
            let found = matches(&source_fs, source);
            if found.is_empty() {
                let place = if from.is_some() {
                    "the source stage or image"
                } else {
                    "the build context (or excluded by .dockerignore)"
                };
                return Err(at(
                    line,
                    format!(
                        "{} {source}: no such file or directory in {place}",
                        ins.keyword
                    ),
                ));
            }
            sources.extend(found);
        }
        let many = sources.len() + heredocs.len() > 1;
        if many && !dest_is_dir {
            return Err(at(line, format!("When using {} with more than one source file, the destination must be a directory and end with a /", ins.keyword)));
        }
        let join = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_string()
            } else if b.is_empty() {
                a.to_string()
            } else {
                format!("{a}/{b}")
            }
        };
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for source in &sources {
            let (is_dir, items) = gather(&source_fs, source);
            // ADD unpacks a local tar archive (plain or gzip'd), found by
            // its content as Docker does, into the destination folder.
            if ins.keyword == "ADD" && !is_dir {
                if let Some((
                    _,
                    Entry {
                        kind: Kind::File(data),
                        ..
                    },
                )) = items.first()
                {
                    if let Some(unpacked) = unpack_archive(data, source).map_err(|e| at(line, e))? {
                        for (rel, mut entry) in unpacked {
                            if owner.is_some() {
                                entry.uid = uid;
                                entry.gid = gid;
                            }
                            entries.insert(join(&dest_clean, &rel), entry);
                        }
                        continue;
                    }
                }
            }
            for (rel, mut entry) in items {
                let target = if is_dir || dest_is_dir {
                    join(&dest_clean, &rel)
                } else {
                    dest_clean.clone()
                };
                entry.uid = uid;
                entry.gid = gid;
                if let Some(m) = chmod {
                    entry.mode = m;
                }
                entries.insert(target, entry);
            }
            if is_dir && !dest_clean.is_empty() {
                entries.entry(dest_clean.clone()).or_insert(Entry {
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid,
                    gid,
                });
            }
        }
        for (name, body) in heredocs {
            let target = if dest_is_dir {
                join(&dest_clean, &name)
            } else {
                dest_clean.clone()
            };
            let entry = Entry {
                kind: Kind::File(body),
                mode: chmod.unwrap_or(0o644),
                uid,
                gid,
            };
            entries.insert(target, entry);
        }
        // Directories the layer passes through keep the metadata the image has.
        let mut parents: BTreeSet<String> = BTreeSet::new();
        for path in entries.keys() {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                parents.insert(parent.to_string());
                p = parent;
            }
        }
        for parent in parents {
            if entries.contains_key(&parent) {
                continue;
            }
            if let Some(e) = stage.lookup(&parent).map_err(|e| at(line, e))? {
                if matches!(e.kind, Kind::Dir) {
                    entries.insert(parent, e);
                }
            }
        }
        let layer = self.layer(&entries, line)?;
        self.layers_made += 1;
        let stage = &mut self.stages[current];
        for (path, entry) in entries {
            if !matches!(entry.kind, Kind::Dir) {
                remove_under(&mut stage.files, &path);
            }
            stage.files.insert(path, entry);
        }
        stage.layers.push(layer);
        Ok(())
    }
}

/// The values of the `ARG`s declared in `text` (already expanded): the
/// `--build-arg` given, else the default, else the global ARG of that name;
/// an ARG with none of these stays unset.
fn declare_args(
    text: &str,
    escape: char,
    build_args: &BTreeMap<String, String>,
    global: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    Ok(dockerfile::arg_decls(text, escape)?
        .into_iter()
        .filter_map(|(name, default)| {
            let value = build_args
                .get(&name)
                .cloned()
                .or(default)
                .or_else(|| global.get(&name).cloned())?;
            Some((name, value))
        })
        .collect())
}

/// BuildKit's automatic platform ARGs, in the global scope (usable in
/// `FROM`; a stage sees them once it declares them). BUILD* name this
/// machine, TARGET* the platform built for.
fn platform_args(target: &Platform) -> BTreeMap<String, String> {
    let build = Platform {
        os: "linux".into(),
        architecture: image::host_architecture().into(),
        variant: None,
    };
    let mut args = BTreeMap::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", &build)] {
        args.insert(format!("{prefix}PLATFORM"), p.to_string());
        args.insert(format!("{prefix}OS"), p.os.clone());
        args.insert(format!("{prefix}ARCH"), p.architecture.clone());
        args.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    args
}

/// Build the target stage of `input` into an image.
pub fn build(input: &BuildInput<'_>) -> Result<Built, BuildError> {
    let file = dockerfile::parse(input.dockerfile).map_err(|e| at(e.line, e.message))?;
    if let Some(e) = dockerfile::needs_runtime(&file) {
        return Err(at(e.line, e.message));
    }
    if !file.instructions.iter().any(|i| i.keyword == "FROM") {
        return Err(at(0, "the Dockerfile has no FROM"));
    }
    let mut run = Run {
        input,
        escape: file.escape,
        global_args: platform_args(&input.platform),
        stages: Vec::new(),
        layers_made: 0,
        layers_cached: 0,
    };
    // Stages the target does not need are skipped, as BuildKit does.
    let needed = needed_stages(&file, input.target)?;
    let mut index = 0usize;
    let mut skipping = false;
    for ins in &file.instructions {
        if ins.keyword == "ARG" && run.stages.is_empty() && !skipping {
            let text = dockerfile::expand(&ins.original, &run.global_args, run.escape)
                .map_err(|e| at(ins.line, e))?;
            let declared = declare_args(&text, run.escape, &input.build_args, &run.global_args)
                .map_err(|e| at(ins.line, e))?;
            run.global_args.extend(declared);
            continue;
        }
        if ins.keyword == "FROM" {
            skipping = !needed.contains(&index);
            index += 1;
            if skipping {
                // Keep stage numbering: a placeholder for a stage not built.
                run.stages.push(Stage {
                    name: stage_name(ins),
                    ..Default::default()
                });
                continue;
            }
            run.from(ins)?;
            continue;
        }
        if !skipping {
            run.instruction(ins)?;
        }
    }
    let target = needed.iter().max().copied().unwrap_or(0);
    let mut stage = run.stages.swap_remove(target);
    stage.runtime.labels.extend(input.labels.clone());
    let image = image::assemble(image::Assembly {
        base_config: stage.base_config.as_ref(),
        runtime: &stage.runtime,
        layers: stage.layers,
        history: stage.history,
        author: stage.author.as_deref(),
        created: input.created,
        platform: &input.platform,
    });
    Ok(Built {
        image,
        layers_made: run.layers_made,
        layers_cached: run.layers_cached,
    })
}

fn stage_name(ins: &Instruction) -> Option<String> {
    let words: Vec<&str> = ins.original.split_whitespace().collect();
    match words.as_slice() {
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_lowercase()),
        _ => None,
    }
}

/// The stages the target needs: itself and, transitively, the stages its
/// `FROM` and `COPY --from` name.
fn needed_stages(
    file: &dockerfile::Dockerfile,
    target: Option<&str>,
) -> Result<BTreeSet<usize>, BuildError> {
    let mut names: Vec<Option<String>> = Vec::new();
    let mut deps: Vec<BTreeSet<String>> = Vec::new();
    for ins in &file.instructions {
        if ins.keyword == "FROM" {
            names.push(stage_name(ins));
            let image = ins
                .original
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_lowercase();
            deps.push(std::iter::once(image).collect());
        } else if let Some(d) = deps.last_mut() {
            for (flag, value) in &ins.flags {
                if flag == "from" {
                    d.insert(value.to_lowercase());
                }
            }
        }
    }
    let find = |name: &str| {
        names
            .iter()
            .position(|n| n.as_deref() == Some(name))
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < names.len()))
    };
    let last = names.len().saturating_sub(1);
    let start = match target {
        Some(t) => find(&t.to_lowercase())
            .ok_or_else(|| at(0, format!("target stage {t:?} could not be found")))?,
        None => last,
    };
    let mut needed = BTreeSet::new();
    let mut todo = vec![start];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        for d in &deps[i] {
            if let Some(j) = find(d).filter(|j| *j < i) {
                todo.push(j);
            }
        }
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_go_filepath_match() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[ab]*", "bcd"));
        assert!(!glob_match("[^ab]*", "bcd"));
        assert!(glob_match("file[0-9].md", "file7.md"));
        assert!(!glob_match("file[0-9].md", "fileX.md"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("\\*", "a"));
    }

    fn ctx(paths: &[&str]) -> BTreeMap<String, Entry> {
        paths
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    Entry {
                        kind: Kind::File(Bytes::from(p.to_string())),
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn sources_match_files_dirs_and_globs() {
        let c = ctx(&["a.txt", "b.txt", "src/x.rs", "src/sub/y.rs"]);
        assert_eq!(matches(&c, "./a.txt"), vec!["a.txt".to_string()]);
        assert_eq!(matches(&c, "src/"), vec!["src".to_string()]);
        assert_eq!(matches(&c, "*.txt").len(), 2);
        assert_eq!(matches(&c, "s*/*.rs"), vec!["src/x.rs".to_string()]);
        assert_eq!(matches(&c, "."), vec![String::new()]);
        assert!(matches(&c, "missing").is_empty());
        let (is_dir, items) = gather(&c, "src");
        assert!(is_dir);
        let names: Vec<&str> = items.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, vec!["sub/y.rs", "x.rs"]);
        let (is_dir, items) = gather(&c, "a.txt");
        assert!(!is_dir);
        assert_eq!(items[0].0, "a.txt");
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("10"), None);
        assert_eq!(duration_ns("x"), None);
    }

    fn no_pull(name: &str, _: &Platform) -> Result<Base, CallError> {
        Err(CallError::Failed(format!(
            "no registry in this test: {name}"
        )))
    }

    #[test]
    fn run_is_refused_before_any_work() {
        let input = BuildInput {
            dockerfile: "FROM scratch\nRUN echo hi\n",
            context: &ContextFiles::default(),
            context_sha1: None,
            build_args: BTreeMap::new(),
            target: None,
            labels: BTreeMap::new(),
            created: 0,
            platform: Platform::parse("linux/amd64").expect("platform"),
            contexts: BTreeMap::new(),
            no_cache: false,
            store: None,
            pull: &no_pull,
        };
        let e = build(&input).err().expect("RUN refused");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("local"));
    }

    #[test]
    fn stages_the_target_does_not_need_are_skipped() {
        let f = dockerfile::parse(
            "FROM scratch AS a\nFROM scratch AS b\nCOPY --from=a x y\nFROM scratch AS c\nFROM b\n",
        )
        .expect("parse");
        assert_eq!(
            needed_stages(&f, None).expect("ok"),
            [0, 1, 3].into_iter().collect()
        );
        assert_eq!(
            needed_stages(&f, Some("c")).expect("ok"),
            [2].into_iter().collect()
        );
        assert!(needed_stages(&f, Some("zzz")).is_err());
    }

    /// A context archive holding `files` (a path ending in `/` is a folder,
    /// `->` makes a symlink), and a build of `dockerfile` over it.
    fn build_over(dockerfile: &str, files: &[(&str, &[u8])]) -> Result<Built, BuildError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            if let Some((link, target)) = path.split_once(" -> ") {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, link, target).expect("link");
            } else if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, path, std::io::empty())
                    .expect("dir");
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, *data).expect("file");
            }
        }
        let context = dir.path().join("context.tar");
        std::fs::write(&context, tar.into_inner().expect("tar")).expect("write");
        build(&BuildInput {
            dockerfile,
            context: &ContextFiles::open(&context)?,
            context_sha1: None,
            build_args: [("FROM_CLI".to_string(), "cli value".to_string())].into(),
            target: None,
            labels: BTreeMap::new(),
            created: 0,
            platform: Platform::parse("linux/arm64").expect("platform"),
            contexts: BTreeMap::new(),
            no_cache: false,
            store: None,
            pull: &no_pull,
        })
    }

    fn config(built: &Built) -> Value {
        serde_json::from_slice(&built.image.config).expect("config")
    }

    fn paths(layer: &Layer) -> Vec<String> {
        base::filesystem(std::slice::from_ref(layer))
            .expect("layer")
            .into_keys()
            .collect()
    }

    #[test]
    fn args_keep_quotes_and_platform_args_are_global() {
        let built = build_over(
            "ARG BASE=scratch\nFROM --platform=$BUILDPLATFORM $BASE\n\
             ARG MSG=\"hello world\" FROM_CLI TARGETARCH\n\
             LABEL msg=\"$MSG\" cli=\"$FROM_CLI\" arch=$TARGETARCH\n",
            &[],
        )
        .expect("build");
        let c = config(&built);
        assert_eq!(c["config"]["Labels"]["msg"], "hello world");
        assert_eq!(c["config"]["Labels"]["cli"], "cli value");
        assert_eq!(c["config"]["Labels"]["arch"], "arm64");
        assert_eq!(c["architecture"], "arm64");
        // ARG values are not left in the image's environment.
        assert!(!c["config"]["Env"].to_string().contains("hello world"));
    }

    #[test]
    fn add_unpacks_local_tar_archives_and_copies_other_files() {
        let mut inner = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o600);
        h.set_uid(7);
        h.set_size(3);
        h.set_entry_type(tar::EntryType::Regular);
        inner
            .append_data(&mut h, "pkg/data.txt", &b"abc"[..])
            .expect("inner");
        let inner = inner.into_inner().expect("inner");
        let gz = image::gzip_parallel(&inner).expect("gzip");
        let built = build_over(
            "FROM scratch\nADD bundle.tgz plain.tar notes.gz /opt/\n",
            &[
                ("bundle.tgz", &gz),
                ("plain.tar", &inner),
                ("notes.gz", b"\x1f\x8bnot gzip"),
            ],
        )
        .expect("build");
        let fs = base::filesystem(&built.image.layers).expect("fs");
        assert_eq!(fs["opt/pkg/data.txt"].mode, 0o600);
        assert_eq!(fs["opt/pkg/data.txt"].uid, 7, "ownership from the archive");
        assert!(fs.contains_key("opt/notes.gz"), "not an archive: copied");
        assert!(!fs.contains_key("opt/bundle.tgz"));
        let e = build_over(
            "FROM scratch\nADD a.tar.xz /\n",
            &[("a.tar.xz", b"\xfd7zXZ\x00rest")],
        )
        .err()
        .expect("xz refused");
        assert!(e.message.contains("xz") && e.line == 2, "{e}");
        let e = build_over("FROM scratch\nADD https://example.com/x /\n", &[])
            .err()
            .expect("url refused");
        assert!(e.message.contains("network"), "{e}");
    }

    #[test]
    fn copies_follow_symlinked_folders_and_dockers_destination_rules() {
        let built = build_over(
            "FROM scratch AS root\nCOPY rootfs/ /\nCOPY link /followed\n\
             FROM root\nCOPY tool /bin/\nCOPY tool /renamed\nCOPY dir/ /into/\n\
             WORKDIR /w\nCOPY one two ./\n",
            &[
                ("rootfs/", b""),
                ("rootfs/usr/", b""),
                ("rootfs/usr/bin/", b""),
                ("rootfs/usr/bin/x", b"x"),
                ("rootfs/bin -> usr/bin", b""),
                ("link -> tool", b""),
                ("tool", b"t"),
                ("dir/", b""),
                ("dir/sub/f", b"f"),
                ("one", b"1"),
                ("two", b"2"),
            ],
        )
        .expect("build");
        let layers = &built.image.layers;
        // A symlink inside a copied folder stays a link; a source that is
        // a link is followed (BuildKit's FollowSymlinks).
        let root = base::filesystem(&layers[..1]).expect("fs");
        assert_eq!(root["bin"].kind, Kind::Symlink("usr/bin".into()));
        assert_eq!(paths(&layers[1]), vec!["followed"]);
        assert_eq!(paths(&layers[2]), vec!["usr", "usr/bin", "usr/bin/tool"]);
        assert_eq!(paths(&layers[3]), vec!["renamed"]);
        assert_eq!(paths(&layers[4]), vec!["into", "into/sub", "into/sub/f"]);
        assert_eq!(paths(&layers[5]), vec!["w", "w/one", "w/two"]);
        let e = build_over(
            "FROM scratch\nCOPY one two /file\n",
            &[("one", b"1"), ("two", b"2")],
        )
        .err()
        .expect("many into a file");
        assert!(e.message.contains("must be a directory"), "{e}");
        let e = build_over("FROM scratch\nCOPY missing /\n", &[])
            .err()
            .expect("missing");
        assert!(e.message.contains("missing") && e.line == 2, "{e}");
        assert!(e.message.contains(".dockerignore"), "{e}");
        for escaping in ["../one", "sub/../../one", "/../one"] {
            let e = build_over(
                &format!("FROM scratch\nCOPY {escaping} /\n"),
                &[("one", b"1")],
            )
            .err()
            .expect("outside the context");
            assert!(
                e.message.contains("outside the build context"),
                "{escaping}: {e}"
            );
        }
        // Inside the context, `..` is fine.
        build_over("FROM scratch\nCOPY sub/../one /\n", &[("one", b"1")]).expect("inside");
    }

    #[test]
    fn heredocs_become_files() {
        let built = build_over(
            "FROM scratch\nARG WHO=kiln\nCOPY <<EOF <<'RAW' /etc/app/\nhello $WHO\nEOF\nraw $WHO\nRAW\n\
             COPY --chmod=755 <<-SCRIPT /run.sh\n\t#!/bin/sh\n\techo hi\n\tSCRIPT\n",
            &[],
        )
        .expect("build");
        let fs = base::filesystem(&built.image.layers).expect("fs");
        assert_eq!(
            fs["etc/app/EOF"].kind,
            Kind::File(Bytes::from("hello kiln\n"))
        );
        assert_eq!(
            fs["etc/app/RAW"].kind,
            Kind::File(Bytes::from("raw $WHO\n"))
        );
        assert_eq!(
            fs["run.sh"].kind,
            Kind::File(Bytes::from("#!/bin/sh\necho hi\n"))
        );
        assert_eq!(fs["run.sh"].mode, 0o755);
    }

    #[test]
    fn metadata_instructions_reach_the_config() {
        let built = build_over(
            "FROM scratch AS base\nCMD [\"base-cmd\"]\nONBUILD LABEL from=onbuild\n\
             FROM base\nENTRYPOINT [\"/app\"]\nHEALTHCHECK --interval=1m30s --retries=3 CMD [\"/app\", \"check\"]\n\
             EXPOSE 80 53/UDP\nSTOPSIGNAL SIGQUIT\nSHELL [\"/bin/bash\", \"-c\"]\nCMD run it\nMAINTAINER someone\n",
            &[],
        )
        .expect("build");
        let c = config(&built);
        let cfg = &c["config"];
        assert_eq!(cfg["Entrypoint"], serde_json::json!(["/app"]));
        // CMD after ENTRYPOINT in the same stage is kept; shell form uses SHELL.
        assert_eq!(cfg["Cmd"], serde_json::json!(["/bin/bash", "-c", "run it"]));
        assert_eq!(
            cfg["Healthcheck"]["Test"],
            serde_json::json!(["CMD", "/app", "check"])
        );
        assert_eq!(cfg["Healthcheck"]["Interval"], 90_000_000_000i64);
        assert_eq!(cfg["Healthcheck"]["Retries"], 3);
        assert!(cfg["ExposedPorts"].get("53/udp").is_some());
        assert!(cfg["ExposedPorts"].get("80/tcp").is_some());
        assert_eq!(cfg["StopSignal"], "SIGQUIT");
        assert_eq!(cfg["Labels"]["from"], "onbuild", "the base's trigger ran");
        assert!(cfg.get("OnBuild").is_none(), "triggers are not inherited");
        assert_eq!(c["author"], "someone");
        let history = c["history"].as_array().expect("history");
        assert!(history.iter().all(|h| h["empty_layer"] == true));
        // ENTRYPOINT drops a CMD inherited from the base stage.
        let built = build_over(
            "FROM scratch AS b\nCMD [\"x\"]\nFROM b\nENTRYPOINT [\"/e\"]\n",
            &[],
        )
        .expect("build");
        assert!(config(&built)["config"].get("Cmd").is_none());
    }
}
