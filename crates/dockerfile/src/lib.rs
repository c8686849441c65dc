//! kiln's one Dockerfile parser, with Docker's rules. The host reads it to
//! choose a builder (does the file `RUN` anything?); the `oci` builder
//! builds from it.
//!
//! - Parser directives (`# escape=`, `# syntax=`) only before the first
//!   instruction, comment or blank line; the escape character is `\` or `` ` ``.
//! - A line ending in the escape character (trailing whitespace allowed)
//!   continues on the next; comment lines and blank lines inside a
//!   continuation are dropped.
//! - Keywords are case-insensitive; `--flag=value` options come first.
//! - `RUN`, `CMD`, `ENTRYPOINT`, `SHELL`, `COPY`, `ADD` and `VOLUME` take a
//!   JSON array (exec form) when their arguments parse as one, else the shell
//!   form.
//! - `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR:+word}` are expanded in the
//!   instructions Docker expands them in, with the escape character
//!   protecting `$`.

use std::{collections::BTreeMap, fmt};

/// One instruction as written, after joining continuation lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where it starts.
    pub line: usize,
    /// Upper-cased keyword.
    pub keyword: String,
    /// `--name=value` flags, in order.
    pub flags: Vec<(String, String)>,
    /// The arguments.
    pub args: Args,
    /// The text after the keyword and flags, as written (continuations joined).
    pub original: String,
    /// Here-documents (`<<EOF` ... `EOF`) of `RUN`, `COPY` and `ADD`, in order.
    pub heredocs: Vec<Heredoc>,
}

/// One here-document (BuildKit's `<<NAME` syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (for `COPY`, the file's name).
    pub name: String,
    /// The lines between the marker and the delimiter, each ending in `\n`.
    pub body: String,
    /// Whether variables are expanded (the delimiter was not quoted).
    pub expand: bool,
}

/// The here-document markers in `text`: `<<NAME`, `<<-NAME` (strip leading
/// tabs), `<<"NAME"` / `<<'NAME'` (no expansion).
fn heredoc_markers(text: &str) -> Vec<(String, bool, bool)> {
    text.split_whitespace()
        .filter_map(|w| {
            let rest = w.strip_prefix("<<")?;
            let (strip_tabs, rest) = match rest.strip_prefix('-') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let (name, quoted) = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => (rest.strip_prefix(q)?.strip_suffix(q)?, true),
                _ => (rest, false),
            };
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            valid.then(|| (name.to_string(), strip_tabs, !quoted))
        })
        .collect()
}

/// The arguments of an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// Exec form: a JSON array of strings.
    Exec(Vec<String>),
    /// Shell form: the rest of the line.
    Shell(String),
}

/// A parse error, naming the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dockerfile line {}: {}", self.line, self.message)
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character in effect.
    pub escape: char,
    /// `# syntax=` when given.
    pub syntax: Option<String>,
    /// The instructions, in order.
    pub instructions: Vec<Instruction>,
}

const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

const JSON_FORMS: &[&str] = &["RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"];

/// Instructions whose arguments get variable substitution (Docker's list).
pub const EXPANDED: &[&str] = &[
    "ADD",
    "COPY",
    "ENV",
    "EXPOSE",
    "FROM",
    "LABEL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
    "ONBUILD",
];

/// Parse `text`.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut escape = '\\';
    let mut syntax = None;
    let mut index = 0;
    // Parser directives: `# key=value` lines at the very top.
    while index < lines.len() {
        let Some(rest) = lines[index].trim_start().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        if key.contains(char::is_whitespace) {
            break;
        }
        match key.as_str() {
            "escape" => {
                escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(ParseError {
                            line: index + 1,
                            message: format!("invalid escape token '{other}' does not validate"),
                        })
                    }
                }
            }
            "syntax" => syntax = Some(value.to_string()),
            _ => break,
        }
        index += 1;
    }

    let mut instructions = Vec::new();
    while index < lines.len() {
        let start = index;
        let first = lines[index].trim();
        index += 1;
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        // Join continuation lines.
        let mut joined = String::new();
        let mut current = first.to_string();
        loop {
            let trimmed = current.trim_end();
            match trimmed.strip_suffix(escape) {
                Some(body) if index < lines.len() || !body.is_empty() => {
                    joined.push_str(body);
                    // Skip comment and blank lines inside the continuation.
                    while index < lines.len() {
                        let next = lines[index].trim_start();
                        if next.starts_with('#') || next.trim().is_empty() {
                            index += 1;
                            continue;
                        }
                        break;
                    }
                    if index >= lines.len() {
                        break;
                    }
                    current = lines[index].to_string();
                    index += 1;
                }
                _ => {
                    joined.push_str(&current);
                    break;
                }
            }
        }
        let mut ins = instruction(start + 1, joined.trim())?;
        if matches!(ins.keyword.as_str(), "RUN" | "COPY" | "ADD") {
            for (name, strip_tabs, expand) in heredoc_markers(&ins.original) {
                let mut body = String::new();
                loop {
                    let Some(raw) = lines.get(index) else {
                        return Err(ParseError {
                            line: start + 1,
                            message: format!(
                                "the here-document <<{name} is not closed by a line {name}"
                            ),
                        });
                    };
                    index += 1;
                    let text = if strip_tabs {
                        raw.trim_start_matches('\t')
                    } else {
                        raw
                    };
                    if text == name {
                        break;
                    }
                    body.push_str(text);
                    body.push('\n');
                }
                ins.heredocs.push(Heredoc { name, body, expand });
            }
        }
        instructions.push(ins);
    }
    Ok(Dockerfile {
        escape,
        syntax,
        instructions,
    })
}

fn instruction(line: usize, text: &str) -> Result<Instruction, ParseError> {
    let (word, rest) = text
        .split_once(char::is_whitespace)
        .map_or((text, ""), |(w, r)| (w, r.trim_start()));
    let keyword = word.to_ascii_uppercase();
    if !KEYWORDS.contains(&keyword.as_str()) {
        return Err(ParseError {
            line,
            message: format!("unknown instruction: {word}"),
        });
    }
    // Flags: leading `--name=value` words.
    let mut flags = Vec::new();
    let mut remainder = rest;
    if !matches!(
        keyword.as_str(),
        "ENV" | "LABEL" | "ARG" | "MAINTAINER" | "USER" | "WORKDIR"
    ) {
        while let Some(after) = remainder.strip_prefix("--") {
            let (word, next) = after
                .split_once(char::is_whitespace)
                .map_or((after, ""), |(w, r)| (w, r.trim_start()));
            let (name, value) = word.split_once('=').unwrap_or((word, "true"));
            flags.push((name.to_ascii_lowercase(), value.to_string()));
            remainder = next;
        }
    }
    let args = if JSON_FORMS.contains(&keyword.as_str()) {
        match serde_json::from_str::<Vec<String>>(remainder) {
            Ok(list) if remainder.trim_start().starts_with('[') => Args::Exec(list),
            _ => Args::Shell(remainder.to_string()),
        }
    } else {
        Args::Shell(remainder.to_string())
    };
    if remainder.is_empty() && !matches!(keyword.as_str(), "HEALTHCHECK") {
        return Err(ParseError {
            line,
            message: format!("{keyword} requires at least one argument"),
        });
    }
    Ok(Instruction {
        line,
        keyword,
        flags,
        args,
        original: remainder.to_string(),
        heredocs: Vec::new(),
    })
}

/// Expand `$VAR`, `${VAR}`, `${VAR:-word}` and `${VAR:+word}` in `word` with
/// `vars`, as Docker's shell lexer does for the instructions in [`EXPANDED`]:
/// the escape character protects the next character, single quotes stop
/// expansion, unset variables expand to nothing.
pub fn expand(word: &str, vars: &BTreeMap<String, String>, escape: char) -> Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut in_single = false;
    let mut in_double = false;
    while i < chars.len() {
        let c = chars[i];
        if in_single {
            if c == '\'' {
                in_single = false;
            }
            out.push(c);
            i += 1;
            continue;
        }
        if c == escape && i + 1 < chars.len() {
            let next = chars[i + 1];
            if next == '$' {
                out.push('$');
            } else {
                out.push(c);
                out.push(next);
            }
            i += 2;
            continue;
        }
        match c {
            '\'' if !in_double => {
                in_single = true;
                out.push(c);
                i += 1;
            }
            '"' => {
                in_double = !in_double;
                out.push(c);
                i += 1;
            }
            '$' => {
                let (value, used) = variable(&chars[i + 1..], vars, escape)?;
                out.push_str(&value);
                i += 1 + used;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Expand one variable reference after `$`; returns the value and how many
/// characters it used.
fn variable(
    chars: &[char],
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<(String, usize), String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if chars.first() == Some(&'{') {
        let close = chars
            .iter()
            .position(|&c| c == '}')
            .ok_or_else(|| "missing '}' in a ${...} substitution".to_string())?;
        let inner: String = chars[1..close].iter().collect();
        let value = if let Some((name, word)) = inner.split_once(":-") {
            match vars.get(name) {
                Some(v) if !v.is_empty() => v.clone(),
                _ => expand(word, vars, escape)?,
            }
        } else if let Some((name, word)) = inner.split_once(":+") {
            match vars.get(name) {
                Some(v) if !v.is_empty() => expand(word, vars, escape)?,
                _ => String::new(),
            }
        } else if inner.chars().all(is_name) && !inner.is_empty() {
            vars.get(&inner).cloned().unwrap_or_default()
        } else {
            return Err(format!("unsupported modifier in ${{{inner}}}"));
        };
        return Ok((value, close + 1));
    }
    let len = chars.iter().take_while(|&&c| is_name(c)).count();
    if len == 0 {
        return Ok(("$".into(), 0));
    }
    let name: String = chars[..len].iter().collect();
    Ok((vars.get(&name).cloned().unwrap_or_default(), len))
}

/// One word as Docker's shell lexer reads it (its `ProcessWord`): quotes
/// removed, the escape character taking the next character literally
/// (inside double quotes only before `"`, `$` and itself), `$VAR` and
/// `${VAR...}` expanded except inside single quotes. What a variable
/// expands to is never split or read again: `LABEL who=$WHO` keeps the
/// spaces of `WHO`.
pub fn process_word(
    word: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '$' && quote != Some('\'') {
            let (value, used) = variable(&chars[i + 1..], vars, escape)?;
            out.push_str(&value);
            i += 1 + used;
            continue;
        }
        match quote {
            Some('\'') => {
                if c == '\'' {
                    quote = None;
                } else {
                    out.push(c);
                }
                i += 1;
            }
            Some(_) => match (c, next) {
                ('"', _) => {
                    quote = None;
                    i += 1;
                }
                (e, Some(n)) if e == escape && (n == '"' || n == '$' || n == escape) => {
                    out.push(n);
                    i += 2;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            },
            None => match (c, next) {
                (e, Some(n)) if e == escape => {
                    out.push(n);
                    i += 2;
                }
                ('\'' | '"', _) => {
                    quote = Some(c);
                    i += 1;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            },
        }
    }
    if quote.is_some() {
        return Err("unmatched quote".into());
    }
    Ok(out)
}

/// `key=value` pairs (ENV, LABEL) from the instruction's text as written:
/// split into words first (quotes group), then each key and value read by
/// [`process_word`] with `vars`. The legacy `ENV key value` form gives one
/// pair, the value being the rest of the line.
pub fn pairs(
    text: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
    legacy_allowed: bool,
) -> Result<Vec<(String, String)>, String> {
    let words = split_words(text, escape)?;
    if words.is_empty() {
        return Err("expected KEY=VALUE".into());
    }
    if legacy_allowed && !words[0].contains('=') {
        let (key, value) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{} needs a value", words[0]))?;
        return Ok(vec![(
            key.to_string(),
            process_word(value.trim(), vars, escape)?,
        )]);
    }
    words
        .iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("{w:?} is not KEY=VALUE"))?;
            Ok((
                process_word(k, vars, escape)?,
                process_word(v, vars, escape)?,
            ))
        })
        .collect()
}

/// `ARG` declarations, `NAME[=default]` (several per line), from the text
/// as written, each default read by [`process_word`] with `vars`: `ARG
/// MSG="hello world"` declares one.
pub fn arg_decls(
    text: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<Vec<(String, Option<String>)>, String> {
    let words = split_words(text, escape)?;
    if words.is_empty() {
        return Err("ARG requires at least one argument".into());
    }
    words
        .iter()
        .map(|w| {
            let (name, value) = match w.split_once('=') {
                Some((k, v)) => (k, Some(process_word(v, vars, escape)?)),
                None => (w.as_str(), None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("ARG {w:?}: invalid name"));
            }
            Ok((name.to_string(), value))
        })
        .collect()
}

/// Split on unquoted whitespace, keeping quotes (removed later by [`process_word`]).
fn split_words(text: &str, escape: char) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, c) if c == escape => {
                current.push(c);
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                current.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            (_, c) => current.push(c),
        }
    }
    if quote.is_some() {
        return Err("unmatched quote".into());
    }
    if !current.is_empty() {
        words.push(current);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn continuations_comments_and_case() {
        let f = parse(
            "from scratch\nCOPY a \\\n  # a comment inside\n\n  b /dst/\nenv A=1 \\\n    B=2\n",
        )
        .expect("parses");
        let kinds: Vec<&str> = f.instructions.iter().map(|i| i.keyword.as_str()).collect();
        assert_eq!(kinds, vec!["FROM", "COPY", "ENV"]);
        assert_eq!(f.instructions[1].line, 2);
        assert_eq!(f.instructions[1].args, Args::Shell("a   b /dst/".into()));
        assert_eq!(f.instructions[2].original, "A=1     B=2");
    }

    #[test]
    fn escape_directive_switches_to_backtick() {
        let f = parse("# escape=`\nFROM scratch\nCOPY a `\n  b c:\\dir\\\n").expect("parses");
        assert_eq!(f.escape, '`');
        assert_eq!(
            f.instructions[1].args,
            Args::Shell("a   b c:\\dir\\".into())
        );
        // A directive after an instruction is only a comment.
        let f = parse("FROM scratch\n# escape=`\nCOPY a \\\n b /\n").expect("parses");
        assert_eq!(f.escape, '\\');
        assert_eq!(f.instructions.len(), 2);
        assert!(parse("# escape=x\nFROM scratch\n").is_err());
    }

    #[test]
    fn exec_and_shell_forms() {
        let f = parse(
            "FROM scratch\nCMD [\"sh\", \"-c\", \"echo hi\"]\nENTRYPOINT echo \"[not json\"\nCOPY [\"a b\", \"/c/\"]\n",
        )
        .expect("parses");
        assert_eq!(
            f.instructions[1].args,
            Args::Exec(vec!["sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(
            f.instructions[2].args,
            Args::Shell("echo \"[not json\"".into())
        );
        assert_eq!(
            f.instructions[3].args,
            Args::Exec(vec!["a b".into(), "/c/".into()])
        );
    }

    #[test]
    fn flags_come_first() {
        let f = parse("FROM --platform=linux/arm64 scratch AS base\nCOPY --from=base --chown=1:2 --chmod=755 /a /b\n")
            .expect("parses");
        assert_eq!(
            f.instructions[0].flags,
            vec![("platform".into(), "linux/arm64".into())]
        );
        assert_eq!(f.instructions[0].original, "scratch AS base");
        assert_eq!(
            f.instructions[1].flags,
            vec![
                ("from".into(), "base".into()),
                ("chown".into(), "1:2".into()),
                ("chmod".into(), "755".into())
            ]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("FROM scratch\n\nFROMM x\n").expect_err("unknown");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unknown instruction: FROMM"));
        let e = parse("FROM scratch\nWORKDIR\n").expect_err("empty");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn heredocs_are_read_to_their_delimiter() {
        let f = parse(
            "FROM scratch\nCOPY <<EOF <<-'RAW' /etc/\nhello $NAME\nEOF\n\tkept $X\n\tRAW\nRUN <<EOT\napt-get x\nEOT\nLABEL a=b\n",
        )
        .expect("parses");
        let copy = &f.instructions[1];
        assert_eq!(copy.heredocs.len(), 2);
        assert_eq!(copy.heredocs[0].name, "EOF");
        assert_eq!(copy.heredocs[0].body, "hello $NAME\n");
        assert!(copy.heredocs[0].expand);
        assert_eq!(copy.heredocs[1].body, "kept $X\n");
        assert!(!copy.heredocs[1].expand);
        assert_eq!(f.instructions[2].keyword, "RUN");
        assert_eq!(f.instructions[3].keyword, "LABEL");
        assert_eq!(f.instructions[3].line, 10);
        let e = parse("FROM scratch\nCOPY <<EOF /x\nno end\n").expect_err("unclosed");
        assert_eq!(e.line, 2);
        // RUN with a here-document is RUN, at its line.
        assert_eq!(first_run("FROM scratch\nRUN <<EOF\nmake\nEOF\n"), Some(2));
    }

    #[test]
    fn quoted_keys_lose_their_quotes() {
        assert_eq!(
            pairs(
                r#""com.example.vendor"="ACME Inc" v=1"#,
                &BTreeMap::new(),
                '\\',
                false
            )
            .expect("ok"),
            vec![
                ("com.example.vendor".to_string(), "ACME Inc".to_string()),
                ("v".to_string(), "1".to_string()),
            ]
        );
    }

    #[test]
    fn arg_declarations_keep_quoted_spaces() {
        assert_eq!(
            arg_decls(r#"MSG="hello world" EMPTY= NAME"#, &BTreeMap::new(), '\\').expect("ok"),
            vec![
                ("MSG".to_string(), Some("hello world".to_string())),
                ("EMPTY".to_string(), Some(String::new())),
                ("NAME".to_string(), None),
            ]
        );
        assert!(arg_decls("=x", &BTreeMap::new(), '\\').is_err());
        assert!(arg_decls("A-B=1", &BTreeMap::new(), '\\').is_err());
    }

    /// The line of the first `RUN` instruction.
    fn first_run(text: &str) -> Option<usize> {
        let file = parse(text).ok()?;
        file.instructions
            .iter()
            .find(|i| i.keyword == "RUN")
            .map(|i| i.line)
    }

    #[test]
    fn instructions_are_found_past_continuations_comments_and_heredocs() {
        assert_eq!(first_run("FROM scratch\nCOPY a /\n"), None);
        assert_eq!(first_run("FROM scratch\n  run make\n"), Some(2));
        // ONBUILD RUN records a trigger; it is ONBUILD.
        assert_eq!(first_run("FROM scratch\nONBUILD run make\n"), None);
        // A RUN inside another instruction's continuation is an argument.
        assert_eq!(first_run("FROM x\nLABEL a=1 \\\n  # c\n\nRUN=2\n"), None);
        assert_eq!(
            first_run("FROM x\nENV A=1 \\\n    B=2\nRUN true\n"),
            Some(4)
        );
        assert_eq!(first_run("FROM x\n# RUN nothing\nCOPY a b\n"), None);
        // With the backtick escape, a backslash does not continue a line.
        assert_eq!(
            first_run("# escape=`\nFROM x\nCOPY a c:\\\nRUN dir\n"),
            Some(4)
        );
        assert_eq!(first_run("# escape=`\nFROM x\nLABEL a=1 `\nRUN=x\n"), None);
        // A here-document's body is not an instruction.
        assert_eq!(
            first_run("FROM x\nCOPY <<EOF /notes\nRUN is just text here\nEOF\nRUN real\n"),
            Some(5)
        );
    }

    #[test]
    fn substitution_follows_dockers_rules() {
        let v = vars(&[("NAME", "app"), ("EMPTY", ""), ("DIR", "/srv")]);
        assert_eq!(
            expand("$DIR/${NAME}.conf", &v, '\\').expect("ok"),
            "/srv/app.conf"
        );
        assert_eq!(
            expand("${MISSING:-fallback}", &v, '\\').expect("ok"),
            "fallback"
        );
        assert_eq!(
            expand("${EMPTY:-fallback}", &v, '\\').expect("ok"),
            "fallback"
        );
        assert_eq!(expand("${NAME:+set}", &v, '\\').expect("ok"), "set");
        assert_eq!(expand("${MISSING:+set}", &v, '\\').expect("ok"), "");
        assert_eq!(expand("\\$NAME", &v, '\\').expect("ok"), "$NAME");
        assert_eq!(expand("'$NAME'", &v, '\\').expect("ok"), "'$NAME'");
        assert_eq!(expand("\"$NAME\"", &v, '\\').expect("ok"), "\"app\"");
        assert_eq!(expand("`$NAME", &v, '`').expect("ok"), "$NAME");
        assert_eq!(expand("$MISSING-x", &v, '\\').expect("ok"), "-x");
        assert!(expand("${NAME", &v, '\\').is_err());
    }

    #[test]
    fn key_value_pairs() {
        assert_eq!(
            pairs(
                "A=1 B=\"two words\" C=three\\ words",
                &BTreeMap::new(),
                '\\',
                true
            )
            .expect("ok"),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "three words".into())
            ]
        );
        assert_eq!(
            pairs("LEGACY some value", &BTreeMap::new(), '\\', true).expect("ok"),
            vec![("LEGACY".into(), "some value".into())]
        );
        assert!(pairs("A=\"open", &BTreeMap::new(), '\\', true).is_err());
        assert!(pairs("NOEQUALS", &BTreeMap::new(), '\\', false).is_err());
        // As Docker: a value's expansion is never split or read again, and
        // single quotes keep `$` literal.
        let vars: BTreeMap<String, String> =
            [("WHO".to_string(), "from the \"env\"".to_string())].into();
        assert_eq!(
            pairs(
                r#"who=$WHO raw='$WHO' q="<$WHO>" e=\$WHO"#,
                &vars,
                '\\',
                false
            )
            .expect("ok"),
            [
                ("who".to_string(), "from the \"env\"".to_string()),
                ("raw".to_string(), "$WHO".to_string()),
                ("q".to_string(), "<from the \"env\">".to_string()),
                ("e".to_string(), "$WHO".to_string()),
            ]
        );
        assert_eq!(
            pairs("PATH /opt/bin:$WHO", &vars, '\\', true).expect("ok"),
            [("PATH".to_string(), "/opt/bin:from the \"env\"".to_string())]
        );
    }
}
