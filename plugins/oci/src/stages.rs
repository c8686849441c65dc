//! The stage graph, from typed `FROM` instructions: each `FROM` is parsed
//! once ([`FromSpec`]: image, `AS` name, `--platform`), and the stages a
//! target needs are found from the `FROM` images and `COPY --from` names
//! (BuildKit's `buildStageDependencyGraph`): stages nobody needs are
//! skipped.

use std::collections::BTreeSet;

use crate::{
    dockerfile::{Dockerfile, Instruction},
    error::{at, BuildError},
};

/// `FROM [--platform=P] IMAGE [AS NAME]`, as written (the image and the
/// platform are expanded with the global `ARG`s when the stage starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromSpec {
    /// The image, a stage name or `scratch`; unexpanded.
    pub image: String,
    /// The stage's name, lowercased.
    pub name: Option<String>,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
}

impl FromSpec {
    /// Parse a `FROM` instruction; names follow BuildKit's rule
    /// (`[a-z][a-z0-9-_.]*`, case-insensitive).
    pub fn parse(ins: &Instruction) -> Result<Self, BuildError> {
        let line = ins.line;
        let text = ins.original.trim();
        let words: Vec<&str> = text.split_whitespace().collect();
        let (image, name) = match words.as_slice() {
            [image] => (*image, None),
            [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                (*image, Some(name.to_lowercase()))
            }
            _ => return Err(at(line, format!("FROM {text}: expected IMAGE [AS NAME]"))),
        };
        if let Some(name) = &name {
            let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
            if !valid {
                return Err(at(
                    line,
                    format!(
                        "FROM {text}: invalid stage name {name:?}: it must start with a letter \
                         and hold only letters, digits, '-', '_' and '.'"
                    ),
                ));
            }
        }
        let mut platform = None;
        for (flag, value) in &ins.flags {
            match flag.as_str() {
                "platform" => platform = Some(value.clone()),
                other => return Err(at(line, format!("FROM --{other} is not a FROM option"))),
            }
        }
        Ok(Self {
            image: image.to_string(),
            name,
            platform,
        })
    }
}

/// The stages the target needs (by index): itself and, transitively, the
/// earlier stages its `FROM`, `COPY --from` and `RUN --mount=from=` name. The target is
/// `target` by name or index, else the last stage.
pub fn needed(file: &Dockerfile, target: Option<&str>) -> Result<BTreeSet<usize>, BuildError> {
    let mut names: Vec<Option<String>> = Vec::new();
    let mut deps: Vec<BTreeSet<String>> = Vec::new();
    for ins in &file.instructions {
        if ins.keyword == "FROM" {
            let from = FromSpec::parse(ins)?;
            names.push(from.name);
            deps.push(std::iter::once(from.image.to_lowercase()).collect());
        } else if let Some(d) = deps.last_mut() {
            for (flag, value) in &ins.flags {
                if flag == "from" {
                    d.insert(value.to_lowercase());
                }
                // `RUN --mount=...,from=STAGE` (bind and cache mounts).
                if flag == "mount" {
                    let from = value.split(',').find_map(|kv| {
                        kv.split_once('=')
                            .filter(|(k, _)| k.eq_ignore_ascii_case("from"))
                    });
                    if let Some((_, stage)) = from {
                        d.insert(stage.to_lowercase());
                    }
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
    use crate::dockerfile::parse;

    fn from(text: &str) -> Result<FromSpec, BuildError> {
        let file = parse(&format!("{text}\n")).expect("parses");
        FromSpec::parse(&file.instructions[0])
    }

    #[test]
    fn from_is_parsed_once_with_its_name_and_platform() {
        assert_eq!(
            from("FROM --platform=$BUILDPLATFORM alpine:3 AS Build").expect("valid"),
            FromSpec {
                image: "alpine:3".into(),
                name: Some("build".into()),
                platform: Some("$BUILDPLATFORM".into()),
            }
        );
        assert_eq!(from("FROM scratch").expect("valid").name, None);
        for bad in [
            "FROM a b",
            "FROM a AS",
            "FROM a AS b c",
            "FROM a AS 1st",
            "FROM a AS b/c",
            "FROM --pull=always a",
        ] {
            let e = from(bad).expect_err(bad);
            assert_eq!(e.line, 1, "{bad}");
        }
    }
}
