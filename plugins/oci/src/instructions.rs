//! One typed value per instruction (BuildKit's `instructions` package): the
//! keyword is matched once and the flags are parsed and validated once, for
//! the whole Dockerfile, before any stage runs. Text that Docker expands
//! (`ENV`, `COPY` sources, `--chown`, ...) stays as written here and is
//! expanded by dispatch with the stage's variables.

use serde_json::{json, Value};

use crate::{
    dockerfile::{Dockerfile, Instruction},
    error::{at, BuildError},
    stages::FromSpec,
};

/// `COPY`/`ADD` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyFlags {
    /// `--chown=USER[:GROUP]`, unexpanded.
    pub chown: Option<String>,
    /// `--chmod=OCTAL`, parsed.
    pub chmod: Option<u32>,
    /// `--from=STAGE|IMAGE` (`COPY` only), unexpanded.
    pub from: Option<String>,
}

/// `RUN`'s flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFlags {
    /// `--network=default|none|host`.
    pub network: crate::runtime::spec::Network,
    /// `--mount=...`, in order.
    pub mounts: Vec<RunMount>,
}

/// One `RUN --mount` (BuildKit's syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMount {
    /// `type=cache`: a folder kept in kiln's cache across builds.
    Cache {
        /// Where it appears (absolute).
        target: String,
        /// Which cache (default: the target).
        id: String,
        /// `shared` (default), `private` (a new one each time) or `locked`.
        sharing: Sharing,
        /// Mode of the folder when first made (default 0755).
        mode: u32,
        /// Owner of the folder when first made.
        uid: u32,
        /// Group of the folder when first made.
        gid: u32,
    },
    /// `type=secret`: a `--secret` as a file, or an environment variable.
    Secret {
        /// The `--secret` id.
        id: String,
        /// The file (default `/run/secrets/ID`), unless only `env` is given.
        target: Option<String>,
        /// An environment variable to hold it.
        env: Option<String>,
        /// Fail when the build has no such secret (default: skip it).
        required: bool,
        /// File mode (default 0400).
        mode: u32,
        /// File owner.
        uid: u32,
        /// File group.
        gid: u32,
    },
    /// `type=bind` (the default type): files of the build context, an
    /// earlier stage or an image, read-only unless `rw`; what the command
    /// writes there is never kept.
    Bind {
        /// Where they appear.
        target: String,
        /// The file or folder in the source (default: its root), cleaned.
        source: String,
        /// A stage, image or named context (default: the build context).
        from: Option<String>,
        /// `rw`/`readwrite`: writable (the writes are thrown away).
        readwrite: bool,
    },
    /// `type=tmpfs`: an empty in-memory folder.
    Tmpfs {
        /// Where it appears.
        target: String,
        /// Bytes (0: the kernel's default).
        size: u64,
    },
}

/// How a cache mount is shared between builds running at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Everyone writes the same folder.
    Shared,
    /// Each build gets a fresh one.
    Private,
    /// One build at a time.
    Locked,
}

/// A mount's target: absolute and cleaned, or relative to the working
/// folder as written (BuildKit's rule; [`RunMount::in_dir`] joins and
/// cleans it when the step runs).
fn mount_target(value: &str) -> String {
    if value.starts_with('/') {
        format!("/{}", crate::fs::tree::clean(value))
    } else {
        value.to_string()
    }
}

impl RunMount {
    /// The mount with a relative target joined to the working folder `cwd`.
    pub fn in_dir(mut self, cwd: &str) -> Self {
        let target = match &mut self {
            RunMount::Cache { target, .. }
            | RunMount::Bind { target, .. }
            | RunMount::Tmpfs { target, .. } => Some(target),
            RunMount::Secret { target, .. } => target.as_mut(),
        };
        if let Some(t) = target.filter(|t| !t.starts_with('/')) {
            *t = mount_target(&format!("/{}/{t}", cwd.trim_matches('/')));
        }
        self
    }
}

fn octal(key: &str, value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{key}={value}: expected an octal mode"))
}

fn number(key: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("{key}={value}: expected a number"))
}

/// One `--mount=` value.
pub fn run_mount(spec: &str) -> Result<RunMount, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for part in spec.split(',') {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), v.to_string()),
            // A bare flag (`readonly`, `required`) means true.
            None => (part.to_lowercase(), "true".to_string()),
        };
        fields.push((k, v));
    }
    let get = |key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == key || (key == "target" && (k == "dst" || k == "destination")))
            .map(|(_, v)| v.clone())
    };
    let kind = get("type").unwrap_or_else(|| "bind".to_string());
    let allowed: &[&str] = match kind.as_str() {
        "cache" => &[
            "type",
            "target",
            "dst",
            "destination",
            "id",
            "sharing",
            "mode",
            "uid",
            "gid",
            "readonly",
            "ro",
        ],
        "secret" => &[
            "type",
            "id",
            "target",
            "dst",
            "destination",
            "env",
            "required",
            "mode",
            "uid",
            "gid",
        ],
        "tmpfs" => &["type", "target", "dst", "destination", "size"],
        "bind" => &[
            "type",
            "target",
            "dst",
            "destination",
            "source",
            "src",
            "from",
            "ro",
            "readonly",
            "rw",
            "readwrite",
        ],
        "ssh" => return Err("--mount=type=ssh is not supported by the oci builder".into()),
        other => {
            return Err(format!(
                "--mount: unknown type {other:?} (bind, cache, secret, tmpfs)"
            ))
        }
    };
    if let Some((k, _)) = fields.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(format!("--mount=type={kind}: unknown option {k:?}"));
    }
    let flag = |key: &str| get(key).is_some_and(|v| v == "true" || v == "1");
    match kind.as_str() {
        "cache" => {
            let target = get("target").ok_or("--mount=type=cache needs target=PATH")?;
            let target = mount_target(&target);
            if flag("readonly") || flag("ro") {
                return Err(
                    "--mount=type=cache,readonly is not supported by the oci builder".into(),
                );
            }
            Ok(RunMount::Cache {
                id: get("id")
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| target.clone()),
                sharing: match get("sharing").as_deref() {
                    None | Some("shared") => Sharing::Shared,
                    Some("private") => Sharing::Private,
                    Some("locked") => Sharing::Locked,
                    Some(other) => {
                        return Err(format!(
                            "sharing={other}: must be shared, private or locked"
                        ))
                    }
                },
                mode: get("mode")
                    .map(|m| octal("mode", &m))
                    .transpose()?
                    .unwrap_or(0o755),
                uid: get("uid")
                    .map(|v| number("uid", &v))
                    .transpose()?
                    .unwrap_or(0),
                gid: get("gid")
                    .map(|v| number("gid", &v))
                    .transpose()?
                    .unwrap_or(0),
                target,
            })
        }
        "secret" => {
            let id = get("id").filter(|i| !i.is_empty());
            let target = get("target").map(|t| mount_target(&t));
            let env = get("env").filter(|e| !e.is_empty());
            let id = match (id, &target) {
                (Some(id), _) => id,
                // BuildKit: without an id, the target's file name.
                (None, Some(t)) => t.rsplit('/').next().unwrap_or("").to_string(),
                (None, None) => return Err("--mount=type=secret needs id=ID".into()),
            };
            Ok(RunMount::Secret {
                target: if env.is_some() && target.is_none() {
                    None
                } else {
                    Some(target.unwrap_or_else(|| format!("/run/secrets/{id}")))
                },
                id,
                env,
                required: flag("required"),
                mode: get("mode")
                    .map(|m| octal("mode", &m))
                    .transpose()?
                    .unwrap_or(0o400),
                uid: get("uid")
                    .map(|v| number("uid", &v))
                    .transpose()?
                    .unwrap_or(0),
                gid: get("gid")
                    .map(|v| number("gid", &v))
                    .transpose()?
                    .unwrap_or(0),
            })
        }
        "bind" => {
            let target = get("target").ok_or("--mount=type=bind needs target=PATH")?;
            let source = get("source").or_else(|| get("src")).unwrap_or_default();
            if crate::fs::tree::escapes(&source) && get("from").is_none() {
                return Err(format!(
                    "--mount=type=bind,source={source}: forbidden path outside the build context"
                ));
            }
            Ok(RunMount::Bind {
                target: mount_target(&target),
                source: crate::fs::tree::clean(&source),
                from: get("from").filter(|f| !f.is_empty()),
                readwrite: flag("rw") || flag("readwrite"),
            })
        }
        _ => Ok(RunMount::Tmpfs {
            target: mount_target(&get("target").ok_or("--mount=type=tmpfs needs target=PATH")?),
            size: get("size")
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("size={v}: expected bytes"))
                })
                .transpose()?
                .unwrap_or(0),
        }),
    }
}

/// An instruction, typed. Those without data of their own are carried out
/// from their [`Instruction`]'s text.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `FROM`.
    From(FromSpec),
    /// `ARG`.
    Arg,
    /// `ENV`.
    Env,
    /// `LABEL`.
    Label,
    /// `WORKDIR`.
    Workdir,
    /// `USER`.
    User,
    /// `STOPSIGNAL`.
    StopSignal,
    /// `EXPOSE`.
    Expose,
    /// `VOLUME`.
    Volume,
    /// `SHELL` (exec form only).
    Shell(Vec<String>),
    /// `CMD`.
    Cmd,
    /// `ENTRYPOINT`.
    Entrypoint,
    /// `HEALTHCHECK`, as the config's `Healthcheck` object.
    Healthcheck(Value),
    /// `ONBUILD`, with its trigger.
    Onbuild(String),
    /// `MAINTAINER`.
    Maintainer(String),
    /// `COPY`.
    Copy(CopyFlags),
    /// `ADD`.
    Add(CopyFlags),
    /// `RUN`.
    Run(RunFlags),
}

impl Command {
    /// Type `ins`: an unknown keyword, a flag an instruction does not take
    /// or a malformed flag value is an error naming the line.
    pub fn parse(ins: &Instruction) -> Result<Self, BuildError> {
        let line = ins.line;
        let no_flags = |c: Command| match ins.flags.first() {
            Some((name, _)) => Err(at(
                line,
                format!("{} --{name} is not a {} option", ins.keyword, ins.keyword),
            )),
            None => Ok(c),
        };
        match ins.keyword.as_str() {
            "FROM" => Ok(Command::From(FromSpec::parse(ins)?)),
            "ARG" => no_flags(Command::Arg),
            "ENV" => no_flags(Command::Env),
            "LABEL" => no_flags(Command::Label),
            "WORKDIR" => no_flags(Command::Workdir),
            "USER" => no_flags(Command::User),
            "STOPSIGNAL" => no_flags(Command::StopSignal),
            "EXPOSE" => no_flags(Command::Expose),
            "VOLUME" => no_flags(Command::Volume),
            "SHELL" => match &ins.args {
                crate::dockerfile::Args::Exec(l) if !l.is_empty() => {
                    no_flags(Command::Shell(l.clone()))
                }
                _ => Err(at(line, "SHELL requires the arguments to be in JSON form")),
            },
            "CMD" => no_flags(Command::Cmd),
            "ENTRYPOINT" => no_flags(Command::Entrypoint),
            "HEALTHCHECK" => Ok(Command::Healthcheck(healthcheck(ins)?)),
            "ONBUILD" => {
                let trigger = ins.original.trim();
                let word = trigger
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_uppercase();
                if matches!(word.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(at(
                        line,
                        format!("{word} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                if word.is_empty() {
                    return Err(at(line, "ONBUILD requires an instruction"));
                }
                no_flags(Command::Onbuild(trigger.to_string()))
            }
            "MAINTAINER" => no_flags(Command::Maintainer(ins.original.trim().to_string())),
            "COPY" => Ok(Command::Copy(copy_flags(ins)?)),
            "ADD" => Ok(Command::Add(copy_flags(ins)?)),
            "RUN" => Ok(Command::Run(run_flags(ins)?)),
            other => Err(at(
                line,
                format!("{other} is not supported by the oci builder"),
            )),
        }
    }
}

fn run_flags(ins: &Instruction) -> Result<RunFlags, BuildError> {
    let line = ins.line;
    let mut flags = RunFlags::default();
    for (name, value) in &ins.flags {
        match name.as_str() {
            "network" => {
                flags.network =
                    crate::runtime::spec::Network::parse(value).map_err(|e| at(line, e))?
            }
            "mount" => flags
                .mounts
                .push(run_mount(value).map_err(|e| at(line, e))?),
            "security" => {
                return Err(at(
                    line,
                    "RUN --security is not supported by the oci builder",
                ))
            }
            other => return Err(at(line, format!("RUN --{other} is not a RUN option"))),
        }
    }
    Ok(flags)
}

fn copy_flags(ins: &Instruction) -> Result<CopyFlags, BuildError> {
    let line = ins.line;
    let mut flags = CopyFlags::default();
    for (name, value) in &ins.flags {
        match name.as_str() {
            "chown" => flags.chown = Some(value.clone()),
            "chmod" => {
                flags.chmod = Some(
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
            "from" if ins.keyword == "COPY" => flags.from = Some(value.clone()),
            "link" => {}
            other => {
                return Err(at(
                    line,
                    format!("{} --{other} is not supported", ins.keyword),
                ))
            }
        }
    }
    Ok(flags)
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

/// The config's `Healthcheck` for a `HEALTHCHECK` instruction.
fn healthcheck(ins: &Instruction) -> Result<Value, BuildError> {
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
        Err(_) => vec!["CMD-SHELL".to_string(), rest.to_string()],
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

/// Every instruction of `file`, typed, in order.
pub fn typed(file: &Dockerfile) -> Result<Vec<(&Instruction, Command)>, BuildError> {
    file.instructions
        .iter()
        .map(|ins| Ok((ins, Command::parse(ins)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;

    fn command(text: &str) -> Result<Command, BuildError> {
        let file = parse(&format!("FROM scratch\n{text}\n")).expect("parses");
        Command::parse(&file.instructions[1])
    }

    #[test]
    fn flags_are_parsed_and_validated_once() {
        assert_eq!(
            command("COPY --chmod=640 --chown=app:app --from=build /a /b").expect("valid"),
            Command::Copy(CopyFlags {
                chown: Some("app:app".into()),
                chmod: Some(0o640),
                from: Some("build".into()),
            })
        );
        assert_eq!(
            command("SHELL [\"/bin/bash\", \"-c\"]").expect("valid"),
            Command::Shell(vec!["/bin/bash".into(), "-c".into()])
        );
        for (bad, needle) in [
            ("COPY --chmod=999 a b", "--chmod=999"),
            ("COPY --chmod=u+x a b", "--chmod=u+x"),
            ("ADD --from=x a b", "ADD --from"),
            ("COPY --mount=x a b", "COPY --mount"),
            ("SHELL /bin/sh -c", "JSON form"),
            ("ONBUILD FROM x", "ONBUILD trigger"),
            ("HEALTHCHECK --interval=soon CMD true", "--interval=soon"),
        ] {
            let e = command(bad).expect_err(bad);
            assert_eq!(e.line, 2, "{bad}");
            assert!(e.message.contains(needle), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("10"), None);
        assert_eq!(duration_ns("x"), None);
    }
}

#[cfg(test)]
mod mount_tests {
    use super::*;

    #[test]
    fn mounts_parse_with_buildkit_defaults_and_refuse_what_is_unknown() {
        assert_eq!(
            run_mount("type=cache,target=/root/.cache/uv"),
            Ok(RunMount::Cache {
                target: "/root/.cache/uv".into(),
                id: "/root/.cache/uv".into(),
                sharing: Sharing::Shared,
                mode: 0o755,
                uid: 0,
                gid: 0,
            })
        );
        assert_eq!(
            run_mount("type=secret,id=tok,env=TOK"),
            Ok(RunMount::Secret {
                id: "tok".into(),
                target: None,
                env: Some("TOK".into()),
                required: false,
                mode: 0o400,
                uid: 0,
                gid: 0,
            })
        );
        match run_mount("type=secret,target=/etc/app/key,required").expect("secret") {
            RunMount::Secret {
                id,
                target,
                required,
                ..
            } => {
                assert_eq!(
                    (id.as_str(), target.as_deref(), required),
                    ("key", Some("/etc/app/key"), true)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            run_mount("type=tmpfs,dst=/t,size=1048576"),
            Ok(RunMount::Tmpfs {
                target: "/t".into(),
                size: 1048576
            })
        );
        assert!(run_mount("type=cache").is_err());
        assert!(run_mount("type=cache,target=/x,sharing=sometimes").is_err());
        assert!(run_mount("type=cache,target=/x,colour=red").is_err());
        assert!(run_mount("type=ssh").is_err());
        assert!(run_mount("type=secret").is_err());
    }

    #[test]
    fn bind_is_the_default_type_and_relative_targets_join_the_working_folder() {
        assert_eq!(
            run_mount("target=requirements_uv.txt,src=requirements_uv.txt")
                .expect("bind")
                .in_dir("/root"),
            RunMount::Bind {
                target: "/root/requirements_uv.txt".into(),
                source: "requirements_uv.txt".into(),
                from: None,
                readwrite: false,
            }
        );
        assert_eq!(
            run_mount("from=uv,source=/uv,target=/usr/bin/uv,rw").expect("bind"),
            RunMount::Bind {
                target: "/usr/bin/uv".into(),
                source: "uv".into(),
                from: Some("uv".into()),
                readwrite: true,
            }
        );
        assert_eq!(
            run_mount("type=cache,target=../cache")
                .expect("cache")
                .in_dir("/a/b"),
            run_mount("type=cache,target=/a/cache,id=../cache").expect("cache")
        );
        assert!(run_mount("type=bind,source=x").is_err());
        assert!(run_mount("type=bind,target=/x,source=../../etc").is_err());
        assert!(run_mount("type=bind,target=/x,bind-propagation=shared").is_err());
    }
}
