//! Carrying out a Dockerfile without a daemon: stages from `scratch`,
//! `COPY`/`ADD` of local files from the context archive (and `--from` other
//! stages), and the metadata instructions. One layer per `COPY`/`ADD`.
//!
//! Not yet: base images from a registry or an OCI layout, `ADD` of URLs and
//! local archives, `HEALTHCHECK`, `ONBUILD`; each is a clear error naming
//! the line.

use std::{collections::BTreeMap, io::Read, path::Path};

use crate::{
    dockerfile::{self, Args, Instruction},
    image::{self, Image, LayerFile, RuntimeConfig},
};

/// A build failure, naming the Dockerfile line when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// 1-based line (0: not tied to a line).
    pub line: usize,
    /// What went wrong.
    pub message: String,
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
    }
}

/// What to build.
pub struct BuildInput<'a> {
    /// The Dockerfile's text.
    pub dockerfile: &'a str,
    /// The context archive (tar, or tar.gz) the host made.
    pub context: &'a Path,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<&'a str>,
    /// `--label`s, set on the result after the Dockerfile's own.
    pub labels: BTreeMap<String, String>,
    /// The epoch second recorded in the image (0, or `SOURCE_DATE_EPOCH`).
    pub created: u64,
    /// `amd64`, `arm64`, ...
    pub architecture: &'a str,
}

#[derive(Debug, Clone)]
struct Node {
    data: Vec<u8>,
    mode: u32,
}

/// A stage: its files (the union of its layers) and what it has set.
#[derive(Default)]
struct Stage {
    name: Option<String>,
    files: BTreeMap<String, Node>,
    layers: Vec<image::Layer>,
    history: Vec<String>,
    runtime: RuntimeConfig,
    vars: BTreeMap<String, String>,
    shell: Vec<String>,
}

/// Read the context archive into memory: regular files only, by path.
fn read_context(path: &Path) -> Result<BTreeMap<String, Node>, BuildError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| {
            at(
                0,
                format!("reading the build context {}: {e}", path.display()),
            )
        })?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(at(
            0,
            format!(
                "build context {}: pass the uncompressed tar",
                path.display()
            ),
        ));
    }
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes.as_slice());
    let entries = archive
        .entries()
        .map_err(|e| at(0, format!("build context: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| at(0, format!("build context: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| at(0, format!("build context: {e}")))?
            .to_string_lossy()
            .into_owned();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| at(0, format!("build context {name}: {e}")))?;
        files.insert(name, Node { data, mode });
    }
    Ok(files)
}

/// A shell-style glob on one path component: `*` and `?`.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && n[0] != '/' && go(p, &n[1..])),
            (Some('?'), Some(c)) if *c != '/' => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// The files a `COPY` source names in `files`: a file, a directory's
/// contents, or a glob; each with the path relative to what is copied.
fn select(files: &BTreeMap<String, Node>, source: &str) -> Vec<(String, String)> {
    let source = source
        .trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/');
    let has_glob = source.contains(['*', '?', '[']);
    let mut out = Vec::new();
    for path in files.keys() {
        if source.is_empty() || source == "." {
            out.push((path.clone(), path.clone()));
        } else if has_glob {
            let depth = source.matches('/').count();
            let head: String = path
                .split('/')
                .take(depth + 1)
                .collect::<Vec<_>>()
                .join("/");
            if glob_match(source, &head) {
                let base = head.rsplit('/').next().unwrap_or(&head).to_string();
                let rest = path[head.len()..].trim_start_matches('/');
                let rel = if rest.is_empty() {
                    base
                } else {
                    format!("{base}/{rest}")
                };
                out.push((path.clone(), rel));
            }
        } else if path == source {
            let base = path.rsplit('/').next().unwrap_or(path).to_string();
            out.push((path.clone(), base));
        } else if let Some(rest) = path.strip_prefix(source).and_then(|r| r.strip_prefix('/')) {
            out.push((path.clone(), rest.to_string()));
        }
    }
    out
}

fn parse_chown(value: &str, line: usize) -> Result<(u64, u64), BuildError> {
    let (u, g) = value.split_once(':').unwrap_or((value, value));
    let num = |s: &str| {
        s.parse::<u64>().map_err(|_| {
            at(line, format!("--chown={value}: only numeric uid:gid are supported (there is no /etc/passwd to read)"))
        })
    };
    Ok((num(u)?, num(g)?))
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

/// Build the target stage of `input` into an image.
pub fn build(input: &BuildInput<'_>) -> Result<Image, BuildError> {
    let file = dockerfile::parse(input.dockerfile).map_err(|e| at(e.line, e.message))?;
    if let Some(e) = dockerfile::needs_runtime(&file) {
        return Err(at(e.line, e.message));
    }
    let context = read_context(input.context)?;
    let escape = file.escape;
    let mut global_args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in &file.instructions {
        let line = ins.line;
        let expand = |text: &str, vars: &BTreeMap<String, String>| {
            dockerfile::expand(text, vars, escape).map_err(|e| at(line, e))
        };
        if ins.keyword == "ARG" && stages.is_empty() {
            for (name, default) in arg_pairs(ins)? {
                let value = input
                    .build_args
                    .get(&name)
                    .cloned()
                    .or(default)
                    .unwrap_or_default();
                global_args.insert(name, value);
            }
            continue;
        }
        if ins.keyword == "FROM" {
            let text = expand(&ins.original, &global_args)?;
            let words: Vec<&str> = text.split_whitespace().collect();
            let name = match words.as_slice() {
                [_] => None,
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => return Err(at(line, format!("FROM {text}: expected IMAGE [AS NAME]"))),
            };
            if words[0] != "scratch" {
                return Err(at(
                    line,
                    format!(
                        "FROM {}: only `scratch` is supported by the oci builder so far",
                        words[0]
                    ),
                ));
            }
            stages.push(Stage {
                name,
                shell: vec!["/bin/sh".into(), "-c".into()],
                runtime: RuntimeConfig {
                    env: vec![
                        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                    ],
                    ..Default::default()
                },
                ..Default::default()
            });
            continue;
        }
        let Some(current) = stages.len().checked_sub(1) else {
            return Err(at(line, format!("{} before the first FROM", ins.keyword)));
        };
        let vars = stages[current].vars.clone();
        match ins.keyword.as_str() {
            "ARG" => {
                for (name, default) in arg_pairs(ins)? {
                    let value = input
                        .build_args
                        .get(&name)
                        .cloned()
                        .or(default)
                        .or_else(|| global_args.get(&name).cloned())
                        .unwrap_or_default();
                    stages[current].vars.insert(name, value);
                }
            }
            "ENV" => {
                let text = expand(&ins.original, &vars)?;
                for (k, v) in dockerfile::pairs(&text, escape, true).map_err(|e| at(line, e))? {
                    let stage = &mut stages[current];
                    stage.vars.insert(k.clone(), v.clone());
                    stage
                        .runtime
                        .env
                        .retain(|e| !e.starts_with(&format!("{k}=")));
                    stage.runtime.env.push(format!("{k}={v}"));
                }
            }
            "LABEL" => {
                let text = expand(&ins.original, &vars)?;
                for (k, v) in dockerfile::pairs(&text, escape, false).map_err(|e| at(line, e))? {
                    stages[current].runtime.labels.insert(k, v);
                }
            }
            "WORKDIR" => {
                let dir = expand(&ins.original, &vars)?;
                let stage = &mut stages[current];
                let base = stage
                    .runtime
                    .working_dir
                    .clone()
                    .unwrap_or_else(|| "/".into());
                let joined = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", base.trim_end_matches('/'))
                };
                stage.runtime.working_dir = Some(joined);
            }
            "USER" => stages[current].runtime.user = Some(expand(&ins.original, &vars)?),
            "STOPSIGNAL" => {
                stages[current].runtime.stop_signal = Some(expand(&ins.original, &vars)?)
            }
            "EXPOSE" => {
                for port in expand(&ins.original, &vars)?.split_whitespace() {
                    let port = if port.contains('/') {
                        port.to_string()
                    } else {
                        format!("{port}/tcp")
                    };
                    stages[current].runtime.exposed_ports.push(port);
                }
            }
            "VOLUME" => {
                let list = match &ins.args {
                    Args::Exec(l) => l.clone(),
                    Args::Shell(t) => expand(t, &vars)?
                        .split_whitespace()
                        .map(str::to_string)
                        .collect(),
                };
                stages[current].runtime.volumes.extend(list);
            }
            "SHELL" => match &ins.args {
                Args::Exec(l) => stages[current].shell = l.clone(),
                Args::Shell(_) => return Err(at(line, "SHELL requires the JSON form")),
            },
            "CMD" => {
                let shell = stages[current].shell.clone();
                stages[current].runtime.cmd = Some(shell_or_exec(&ins.args, &shell));
            }
            "ENTRYPOINT" => {
                let shell = stages[current].shell.clone();
                stages[current].runtime.entrypoint = Some(shell_or_exec(&ins.args, &shell));
                // Docker resets an inherited CMD when ENTRYPOINT is set.
                stages[current].runtime.cmd = None;
            }
            "MAINTAINER" => {
                stages[current]
                    .runtime
                    .labels
                    .insert("maintainer".into(), ins.original.clone());
            }
            "COPY" | "ADD" => copy(ins, input, &context, &mut stages, current, escape)?,
            other => {
                return Err(at(
                    line,
                    format!("{other} is not supported by the oci builder yet"),
                ))
            }
        }
    }
    let target = match input.target {
        Some(t) => stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t))
            .ok_or_else(|| at(0, format!("target stage {t:?} not found")))?,
        None => stages
            .len()
            .checked_sub(1)
            .ok_or_else(|| at(0, "the Dockerfile has no FROM"))?,
    };
    let mut stage = stages.swap_remove(target);
    stage.runtime.labels.extend(input.labels.clone());
    Ok(image::assemble(
        &stage.runtime,
        stage.layers,
        &stage.history,
        input.created,
        input.architecture,
    ))
}

fn arg_pairs(ins: &Instruction) -> Result<Vec<(String, Option<String>)>, BuildError> {
    Ok(ins
        .original
        .split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.trim_matches('"').to_string())),
            None => (w.to_string(), None),
        })
        .collect())
}

fn copy(
    ins: &Instruction,
    input: &BuildInput<'_>,
    context: &BTreeMap<String, Node>,
    stages: &mut [Stage],
    current: usize,
    escape: char,
) -> Result<(), BuildError> {
    let line = ins.line;
    let vars = stages[current].vars.clone();
    let mut words = match &ins.args {
        Args::Exec(list) => list.clone(),
        Args::Shell(text) => dockerfile::expand(text, &vars, escape)
            .map_err(|e| at(line, e))?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    };
    if words.len() < 2 {
        return Err(at(
            line,
            format!("{} requires at least two arguments", ins.keyword),
        ));
    }
    let dest = words.pop().unwrap_or_default();
    let mut chown = (0, 0);
    let mut chmod = None;
    let mut from = None;
    for (name, value) in &ins.flags {
        match name.as_str() {
            "chown" => chown = parse_chown(value, line)?,
            "chmod" => {
                chmod = Some(u32::from_str_radix(value, 8).map_err(|_| {
                    at(
                        line,
                        format!("--chmod={value}: expected octal permission bits"),
                    )
                })?)
            }
            "from" => from = Some(value.clone()),
            "link" => {}
            other => {
                return Err(at(
                    line,
                    format!("{} --{other} is not supported", ins.keyword),
                ))
            }
        }
    }
    if ins.keyword == "ADD"
        && words.iter().any(|w| {
            w.contains("://")
                || [".tar", ".tgz", ".tar.gz", ".tar.xz", ".tar.bz2"]
                    .iter()
                    .any(|s| w.ends_with(s))
        })
    {
        return Err(at(
            line,
            "ADD of URLs and archives is not supported by the oci builder yet; use COPY",
        ));
    }
    let source_files: BTreeMap<String, Node> = match &from {
        None => context.clone(),
        Some(stage_ref) => {
            let stage = stages[..current]
                .iter()
                .find(|s| s.name.as_deref() == Some(stage_ref.as_str()))
                .or_else(|| {
                    stage_ref
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| stages.get(i).filter(|_| i < current))
                })
                .ok_or_else(|| {
                    at(
                        line,
                        format!("--from={stage_ref}: no earlier stage of that name"),
                    )
                })?;
            stage.files.clone()
        }
    };
    let workdir = stages[current]
        .runtime
        .working_dir
        .clone()
        .unwrap_or_else(|| "/".into());
    let dest_abs = if dest.starts_with('/') {
        dest.clone()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    let mut layer_files = Vec::new();
    for source in &words {
        let selected = select(&source_files, source);
        if selected.is_empty() {
            return Err(at(
                line,
                format!(
                    "{} {source}: no such file in the build context",
                    ins.keyword
                ),
            ));
        }
        let is_single_file = selected.len() == 1
            && selected[0].1 == selected[0].0.rsplit('/').next().unwrap_or("")
            && !source.contains(['*', '?'])
            && source_files.contains_key(source.trim_start_matches("./").trim_start_matches('/'));
        for (path, rel) in selected {
            let target = if is_single_file && words.len() == 1 && !dest.ends_with('/') {
                dest_abs.clone()
            } else {
                format!("{}/{rel}", dest_abs.trim_end_matches('/'))
            };
            let node = &source_files[&path];
            layer_files.push(LayerFile {
                path: target.trim_start_matches('/').to_string(),
                data: node.data.clone(),
                mode: chmod.unwrap_or(node.mode),
                uid: chown.0,
                gid: chown.1,
            });
        }
    }
    let layer = image::layer(&layer_files, input.created).map_err(|e| at(line, e))?;
    let stage = &mut stages[current];
    for f in &layer_files {
        stage.files.insert(
            f.path.clone(),
            Node {
                data: f.data.clone(),
                mode: f.mode,
            },
        );
    }
    stage.layers.push(layer);
    stage
        .history
        .push(format!("{} {}", ins.keyword, ins.original));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_one_component() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "d/a.txt"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
    }

    fn ctx(paths: &[&str]) -> BTreeMap<String, Node> {
        paths
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    Node {
                        data: p.as_bytes().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn sources_select_files_dirs_and_globs() {
        let c = ctx(&["a.txt", "b.txt", "src/x.rs", "src/sub/y.rs"]);
        assert_eq!(select(&c, "a.txt"), vec![("a.txt".into(), "a.txt".into())]);
        assert_eq!(
            select(&c, "src"),
            vec![
                ("src/sub/y.rs".into(), "sub/y.rs".into()),
                ("src/x.rs".into(), "x.rs".into())
            ]
        );
        assert_eq!(select(&c, "*.txt").len(), 2);
        assert_eq!(select(&c, ".").len(), 4);
    }

    #[test]
    fn run_is_refused_before_any_work() {
        let input = BuildInput {
            dockerfile: "FROM scratch\nRUN echo hi\n",
            context: Path::new("/nonexistent/context.tar"),
            build_args: BTreeMap::new(),
            target: None,
            labels: BTreeMap::new(),
            created: 0,
            architecture: "amd64",
        };
        let e = build(&input).expect_err("RUN refused");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("local"));
    }
}
