//! Docker's `.dockerignore` rules, as the Docker CLI applies them to a
//! build context (moby's `patternmatcher` and `ignorefile`, the CLI's
//! context code). Not gitignore: every pattern is anchored at the context
//! root, `foo` matches only the root `foo`, and a directory's match carries
//! to everything below it.
//!
//! Docker's quirks are kept on purpose, because users must get exactly what
//! `docker build` would send:
//! - a pattern is turned into a Go regular expression with only `.+()$`
//!   escaped, so `^`, `|`, `{2}` and `\d` keep their regex meaning (as the
//!   Docker CLI 28 has it: `a|b*` excludes everything that starts with `a`);
//! - a pattern that begins with `**` and has no other wildcard is a plain
//!   suffix test; one that ends in `**` with no other wildcard is a plain
//!   prefix test (`foo**` matches `foobar/x`);
//! - exceptions only rescue files inside an excluded directory when the
//!   exception's text starts with that directory (see [`Matcher::may_rescue`]);
//! - results inside a directory reuse the directory's per-pattern results,
//!   the way `MatchesUsingParentResults` does.

use std::{fmt, path::Path};

use kiln_archive::path::clean;
use regex::Regex;

/// One problem in an ignore file: Docker's message plus the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// 1-based line in the ignore file (0 for patterns not read from a file).
    pub line: usize,
    /// The pattern as written.
    pub pattern: String,
    /// Docker's message (`syntax error in pattern`, ...).
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "line {}: {}: {:?}",
                self.line, self.message, self.pattern
            )
        } else {
            write!(f, "{}: {:?}", self.message, self.pattern)
        }
    }
}

const BAD_PATTERN: &str = "syntax error in pattern";

/// The patterns of an ignore file, each with its line number, as Docker's
/// `ignorefile.ReadAll` returns them: comments and blank lines dropped,
/// whitespace trimmed, each path cleaned, a leading `/` removed.
pub fn read_patterns(contents: &[u8]) -> Result<Vec<(usize, String)>, PatternError> {
    let mut out = Vec::new();
    let mut rest = contents;
    let mut number = 0usize;
    while !rest.is_empty() {
        // bufio.ScanLines: split at '\n', drop one trailing '\r'.
        let (mut line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if number == 0 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        number += 1;
        if line.len() > 64 * 1024 {
            return Err(PatternError {
                line: number,
                pattern: String::from_utf8_lossy(&line[..40]).into_owned() + "...",
                message: "error reading .dockerignore: bufio.Scanner: token too long".into(),
            });
        }
        // A comment only where '#' is the very first byte of the line.
        if line.first() == Some(&b'#') {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let mut pattern = text.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        if invert {
            cleaned.insert(0, '!');
        }
        out.push((number, cleaned));
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `foo**`: the text before the trailing `**`.
    Prefix(String),
    /// `**foo`: the text after the leading `**`.
    Suffix(String),
    Regex(Regex),
    /// The Go regex would not compile: Docker fails the build with this
    /// error the first time it evaluates the pattern (its check of the
    /// context, [`Matcher::check_broken`]); until then it matches nothing.
    Broken(PatternError),
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: Kind,
}

impl Pattern {
    /// The cleaned pattern, without its `!`.
    pub fn text(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is an exception (`!pattern`).
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.cleaned,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|bare| path == bare)
            }
            Kind::Regex(re) => re.is_match(path),
            Kind::Broken(_) => false,
        }
    }
}

/// Per-pattern results for a directory, handed down to its entries
/// (`patternmatcher.MatchInfo`). Empty means "no information".
#[derive(Debug, Clone, Default)]
pub struct MatchInfo(Vec<bool>);

/// A compiled ignore file (`patternmatcher.PatternMatcher`).
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl Matcher {
    /// Compile patterns as `patternmatcher.New` does, with the errors it gives.
    /// `line` numbers travel into errors.
    pub fn new<'a>(
        patterns: impl IntoIterator<Item = (usize, &'a str)>,
    ) -> Result<Self, PatternError> {
        let mut matcher = Matcher::default();
        for (line, raw) in patterns {
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let mut p = clean(trimmed);
            let err = |message: &str| PatternError {
                line,
                pattern: raw.to_string(),
                message: message.to_string(),
            };
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(err("illegal exclusion pattern: \"!\""));
                }
                p.remove(0);
                matcher.exclusions = true;
            }
            if !go_match_syntax_ok(&p) {
                return Err(err(BAD_PATTERN));
            }
            let kind = compile(&p).unwrap_or_else(|| Kind::Broken(err(BAD_PATTERN)));
            matcher.patterns.push(Pattern {
                cleaned: p,
                exclusion,
                kind,
            });
        }
        Ok(matcher)
    }

    /// The patterns, in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether any pattern is an exception.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// The Docker CLI's check of a context before it sends it
    /// (`ValidateContextDirectory`): every path below `root` that is not
    /// inside a directory the rules exclude is matched against them, and a
    /// pattern whose regular expression does not compile fails the build
    /// the first time it is evaluated. Such a pattern that is never
    /// evaluated (an exception no path reaches) is harmless, to Docker and
    /// so to kiln. Directories that cannot be read are left to the walk.
    pub fn check_broken(&self, root: &Path) -> Result<(), PatternError> {
        if !self
            .patterns
            .iter()
            .any(|p| matches!(p.kind, Kind::Broken(_)))
        {
            return Ok(());
        }
        let mut dirs = vec![String::new()];
        while let Some(dir) = dirs.pop() {
            let Ok(listing) = std::fs::read_dir(root.join(&dir)) else {
                continue;
            };
            for entry in listing.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let path = if dir.is_empty() {
                    name.into_owned()
                } else {
                    format!("{dir}/{name}")
                };
                if let Some(error) = self.broken_evaluated(&path) {
                    return Err(error.clone());
                }
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && !self.matches_or_parent_matches(&path) {
                    dirs.push(path);
                }
            }
        }
        Ok(())
    }

    /// The error of the first broken pattern `MatchesOrParentMatches(path)`
    /// evaluates (the patterns it skips not counted).
    fn broken_evaluated(&self, path: &str) -> Option<&PatternError> {
        self.evaluate(path, &MatchInfo::default(), true).err()
    }

    /// `MatchesOrParentMatches`: whether `path` is excluded, looking at the
    /// path and each of its parent directories. Used for single questions
    /// (is the Dockerfile excluded?), not during the walk.
    pub fn matches_or_parent_matches(&self, path: &str) -> bool {
        self.matches_using_parent_results(path, &MatchInfo::default())
            .0
    }

    /// `MatchesUsingParentResults`: whether `path` is excluded, given its
    /// directory's results (empty at the root). Returns the results to hand
    /// to the path's own entries when it is a directory.
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> (bool, MatchInfo) {
        // A broken pattern matches nothing here (`check_broken` fails first).
        self.evaluate(path, parent, false).unwrap_or_default()
    }

    /// [`Self::matches_using_parent_results`]; with `broken_fails`, the
    /// error of the first broken pattern it evaluates instead (Docker's
    /// failure), the patterns it skips not counted.
    fn evaluate(
        &self,
        path: &str,
        parent: &MatchInfo,
        broken_fails: bool,
    ) -> Result<(bool, MatchInfo), &PatternError> {
        let have_parent = !parent.0.is_empty();
        let mut matched = false;
        let mut info = vec![false; self.patterns.len()];
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut hit = have_parent && parent.0[i];
            if !hit {
                // Skip a pattern that cannot change the answer. Docker records
                // such a pattern as "not matched" for the children too.
                if pattern.exclusion != matched {
                    continue;
                }
                if let (true, Kind::Broken(error)) = (broken_fails, &pattern.kind) {
                    return Err(error);
                }
                hit = pattern.matches(path);
                if !hit && !have_parent {
                    if let Some((dir, _)) = path.rsplit_once('/') {
                        hit = ancestors(dir).any(|a| pattern.matches(a));
                    }
                }
            }
            info[i] = hit;
            if hit {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, MatchInfo(info)))
    }

    /// For an excluded directory: whether Docker still walks into it because
    /// an exception's text starts with `dir/` (a plain prefix test on the
    /// pattern text, so `!dir/*.txt` rescues files in `dir` but `!*/keep`
    /// and `!**/keep` rescue nothing inside an excluded directory).
    pub fn may_rescue(&self, dir: &str) -> bool {
        if !self.exclusions {
            return false;
        }
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| format!("{}/", p.cleaned).starts_with(&dir_slash))
    }
}

/// `a`, `a/b`, `a/b/c` for `a/b/c`.
fn ancestors(dir: &str) -> impl Iterator<Item = &str> {
    dir.match_indices('/')
        .map(move |(i, _)| &dir[..i])
        .chain(std::iter::once(dir))
}

/// Turn a cleaned pattern into Docker's match kind (`Pattern.compile`);
/// `None` when Go would not compile its regular expression.
fn compile(pattern: &str) -> Option<Kind> {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut re = String::from("^");
    let mut detected = Detected::Exact;
    let chars: Vec<char> = pattern.chars().collect();
    let mut pos = 0;
    let mut first = true;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        match ch {
            '*' if chars.get(pos) == Some(&'*') => {
                pos += 1;
                if chars.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos == chars.len() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        re.push_str(".*");
                        detected = Detected::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    detected = Detected::Regex;
                }
                if first {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                detected = Detected::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                detected = Detected::Regex;
            }
            '.' | '+' | '(' | ')' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => {
                if let Some(&next) = chars.get(pos) {
                    pos += 1;
                    re.push('\\');
                    re.push(next);
                    detected = Detected::Regex;
                } else {
                    re.push('\\');
                }
            }
            '[' | ']' => {
                re.push(ch);
                detected = Detected::Regex;
            }
            other => re.push(other),
        }
        first = false;
    }
    Some(match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix(pattern[..pattern.len() - 2].to_string()),
        Detected::Suffix => Kind::Suffix(pattern[2..].to_string()),
        Detected::Regex => {
            re.push('$');
            Kind::Regex(go_regex_to_rust(&re).and_then(|r| Regex::new(&r).ok())?)
        }
    })
}

/// Rewrite a Go (RE2) regular expression of the shapes `compile` produces so
/// that the `regex` crate reads it the same way. The differences that matter:
/// inside a class Go takes `[` `&` `~` `-` literally where the crate nests or
/// combines classes; Go's `\d` `\w` `\s` `\b` are ASCII-only; a `{` that
/// does not start a count (`{2}`, `{2,}`, `{2,5}`) is a literal to Go, and a
/// count over 1000, backwards, or on another repetition is an error (`None`).
fn go_regex_to_rust(go: &str) -> Option<String> {
    let chars: Vec<char> = go.chars().collect();
    let mut out = String::with_capacity(go.len() + 8);
    let mut i = 0;
    // Whether the last thing written repeats what came before it.
    let mut repeated = false;
    while i < chars.len() {
        let c = chars[i];
        let mut repeats = false;
        match c {
            '\\' => {
                let next = *chars.get(i + 1)?;
                out.push_str(&perl_class(next).unwrap_or_else(|| format!("\\{next}")));
                i += 2;
            }
            '[' => {
                i = class_to_rust(&chars, i, &mut out)?;
            }
            ']' => {
                out.push_str("\\]");
                i += 1;
            }
            '{' => match go_count(&chars[i..]) {
                Some((len, min, max)) => {
                    if repeated || min > 1000 || max.is_some_and(|m| m > 1000 || m < min) {
                        return None;
                    }
                    out.extend(&chars[i..i + len]);
                    i += len;
                    repeats = true;
                }
                None => {
                    out.push_str("\\{");
                    i += 1;
                }
            },
            '*' | '?' => {
                if repeated {
                    return None;
                }
                out.push(c);
                i += 1;
                repeats = true;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
        repeated = repeats;
    }
    Some(out)
}

/// Go's `parseRepeat`: at `{`, a count `{n}`, `{n,}` or `{n,m}`: its
/// length in chars, `n`, and `m` (`None` for no upper bound). Counts are
/// read saturating, so a huge one is still "over 1000".
fn go_count(chars: &[char]) -> Option<(usize, u64, Option<u64>)> {
    fn number(chars: &[char], mut i: usize) -> Option<(u64, usize)> {
        let start = i;
        let mut n: u64 = 0;
        while let Some(d) = chars.get(i).and_then(|c| c.to_digit(10)) {
            n = n.saturating_mul(10).saturating_add(u64::from(d));
            i += 1;
        }
        (i > start).then_some((n, i))
    }
    let (min, mut i) = number(chars, 1)?;
    let max = if chars.get(i) == Some(&',') {
        match number(chars, i + 1) {
            Some((m, next)) => {
                i = next;
                Some(m)
            }
            None => {
                i += 1;
                None
            }
        }
    } else {
        Some(min)
    };
    (chars.get(i) == Some(&'}')).then_some((i + 1, min, max))
}

/// Go's ASCII Perl classes spelled out (inside a class: as a nested class).
fn perl_class(c: char) -> Option<String> {
    let body = match c {
        'd' => "[0-9]",
        'D' => "[^0-9]",
        's' => "[\\t\\n\\f\\r ]",
        'S' => "[^\\t\\n\\f\\r ]",
        'w' => "[0-9A-Za-z_]",
        'W' => "[^0-9A-Za-z_]",
        'b' => "(?-u:\\b)",
        'B' => "(?-u:\\B)",
        _ => return None,
    };
    Some(body.to_string())
}

/// Copy the class starting at `chars[start] == '['`; return the index after it.
fn class_to_rust(chars: &[char], start: usize, out: &mut String) -> Option<usize> {
    let mut i = start + 1;
    out.push('[');
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // A ']' first in a class is a literal in Go.
    if chars.get(i) == Some(&']') {
        out.push_str("\\]");
        i += 1;
    }
    loop {
        let c = *chars.get(i)?;
        match c {
            ']' => {
                out.push(']');
                return Some(i + 1);
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                // POSIX class [:alpha:], same in both.
                let rest: String = chars[i..].iter().collect();
                let end = rest.find(":]")?;
                out.push_str(&rest[..end + 2]);
                i += rest[..end + 2].chars().count();
            }
            '\\' => {
                let next = *chars.get(i + 1)?;
                match perl_class(next) {
                    Some(_) if matches!(next, 'b' | 'B') => return None,
                    Some(nested) => out.push_str(&nested),
                    None => {
                        out.push('\\');
                        out.push(next);
                    }
                }
                i += 2;
            }
            '[' | '&' | '~' => {
                out.push('\\');
                out.push(c);
                i += 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                out.push_str("\\-");
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
}

/// Whether Go's `filepath.Match(pattern, ".")` (Unix rules), which Docker
/// calls only for its error, accepts the pattern. Go checks the syntax only
/// of the chunks (the text between stars) it reaches while matching `.`:
/// the chunk where the match fails is checked to its end, later ones not at
/// all (`b*[]a]` passes, `b[]a]` does not).
fn go_match_syntax_ok(pattern: &str) -> bool {
    let mut pattern = pattern.as_bytes();
    let mut name: &[u8] = b".";
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return true;
        }
        let Ok(at_once) = match_chunk(chunk, name) else {
            return false;
        };
        if let Some(t) = at_once {
            if t.is_empty() || !pattern.is_empty() {
                name = t;
                continue;
            }
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let Ok(skipped) = match_chunk(chunk, &name[i + 1..]) else {
                    return false;
                };
                if let Some(t) = skipped {
                    if !pattern.is_empty() || t.is_empty() {
                        name = t;
                        continue 'pattern;
                    }
                }
                i += 1;
            }
        }
        return true;
    }
    true
}

/// Go's `scanChunk`: the stars before a chunk, the chunk, the rest.
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while pattern.first() == Some(&b'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    let (chunk, rest) = pattern.split_at(i);
    (star, chunk, rest)
}

/// Go's `matchChunk`: `Ok(Some(rest of s))` when `chunk` matches the start
/// of `s`, `Ok(None)` when not, `Err` for a malformed chunk (checked to its
/// end even after the match has failed).
fn match_chunk<'s>(mut chunk: &[u8], mut s: &'s [u8]) -> Result<Option<&'s [u8]>, ()> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                let mut r = None;
                if !failed {
                    let n = utf8_width(s).unwrap_or(1);
                    r = std::str::from_utf8(&s[..n])
                        .ok()
                        .and_then(|t| t.chars().next());
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if r.is_some_and(|r| lo <= r && r <= hi) {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    s = &s[utf8_width(s).unwrap_or(1)..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(());
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok((!failed).then_some(s))
}

/// Go's `getEsc`: one (possibly escaped) character of a class, and the
/// rest of the class, which must not be empty.
fn get_esc(chunk: &[u8]) -> Result<(char, &[u8]), ()> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(()),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(());
            }
        }
        _ => {}
    }
    let width = utf8_width(chunk).ok_or(())?;
    let c = std::str::from_utf8(&chunk[..width])
        .ok()
        .and_then(|t| t.chars().next())
        .ok_or(())?;
    let rest = &chunk[width..];
    if rest.is_empty() {
        return Err(());
    }
    Ok((c, rest))
}

fn utf8_width(bytes: &[u8]) -> Option<usize> {
    let width = match bytes.first()? {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    let slice = bytes.get(..width)?;
    std::str::from_utf8(slice).ok().map(|_| width)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(lines: &[&str]) -> Matcher {
        Matcher::new(lines.iter().map(|l| (0, *l))).expect("patterns compile")
    }

    fn excluded(lines: &[&str], path: &str) -> bool {
        matcher(lines).matches_or_parent_matches(path)
    }

    #[test]
    fn read_patterns_follows_ignorefile() {
        let file = b"\xEF\xBB\xBF# comment\n  # not a comment\r\n\n  /foo/../bar/  \n! ./baz\n!\n/\n./\n\t\n";
        let got = read_patterns(file).expect("reads");
        assert_eq!(
            got,
            vec![
                (2, "# not a comment".to_string()),
                (4, "bar".into()),
                (5, "!baz".into()),
                (6, "!".into()),
                (7, "/".into()),
                (8, ".".into()),
            ]
        );
    }

    #[test]
    fn anchored_at_the_root() {
        assert!(excluded(&["foo"], "foo"));
        assert!(excluded(&["foo"], "foo/bar"));
        assert!(!excluded(&["foo"], "a/foo"));
        assert!(excluded(&["*/foo"], "a/foo"));
        assert!(!excluded(&["*/foo"], "a/b/foo"));
        assert!(excluded(&["**/foo"], "a/b/foo"));
        assert!(excluded(&["**/foo"], "foo"));
        assert!(excluded(&["**/foo"], "foo/x"));
    }

    #[test]
    fn double_star_shapes() {
        assert!(excluded(&["**"], "anything/at/all"));
        assert!(excluded(&["a/**/b"], "a/b"));
        assert!(excluded(&["a/**/b"], "a/x/y/b"));
        assert!(excluded(&["**/*.pyc"], "x/y/z.pyc"));
        assert!(excluded(&["**/*.pyc"], "z.pyc"));
        // A trailing `**` with no other wildcard is a plain prefix test.
        assert!(excluded(&["foo**"], "foobar/x"));
        assert!(!excluded(&["foo/**"], "foo"));
        assert!(excluded(&["foo/**"], "foo/x"));
        // A leading `**` with no other wildcard is a plain suffix test.
        assert!(excluded(&["**.log"], "a/b.log"));
        assert!(excluded(&["**foo"], "barfoo"));
    }

    #[test]
    fn single_char_and_classes() {
        assert!(excluded(&["?.txt"], "a.txt"));
        assert!(!excluded(&["?.txt"], "ab.txt"));
        assert!(excluded(&["[abc].txt"], "b.txt"));
        assert!(excluded(&["[^abc].txt"], "d.txt"));
        assert!(!excluded(&["[^abc].txt"], "a.txt"));
        assert!(excluded(&["[a-c]x"], "bx"));
        // Go's filepath classes negate with `^` only; `!` is a literal.
        assert!(excluded(&["[!a]x"], "!x"));
        assert!(excluded(&["[!a]x"], "ax"));
        // Escaped wildcard.
        assert!(excluded(&["\\*x"], "*x"));
        assert!(!excluded(&["\\*x"], "ax"));
    }

    #[test]
    fn docker_regex_quirks() {
        // `^` is not escaped: in a regex pattern it is an anchor and never matches.
        assert!(excluded(&["a^b"], "a^b"));
        assert!(!excluded(&["a^b*"], "a^bc"));
        // `\d` keeps its (ASCII) regex meaning.
        assert!(excluded(&["v\\d"], "v7"));
        assert!(!excluded(&["v\\d"], "vd"));
        assert!(!excluded(&["v\\d"], "v\u{0663}"));
        // `[*]` becomes the Go regex `[[^/]*]`: a class of `[`, `^`, `/`, starred, then `]`.
        assert!(excluded(&["[*]"], "]"));
        assert!(excluded(&["[*]"], "[^]"));
        assert!(!excluded(&["[*]"], "*"));
        // Regex metacharacters that filepath.Match treats literally stay literal.
        assert!(excluded(&["a+b(c).{d}$*"], "a+b(c).{d}$e"));
    }

    #[test]
    fn last_match_wins_with_exceptions() {
        let m = &["*.md", "!README.md", "README*.md"];
        assert!(excluded(m, "x.md"));
        assert!(excluded(m, "README.md"));
        assert!(!excluded(&["*.md", "!README.md"], "README.md"));
        assert!(excluded(&["!a", "a"], "a"));
        assert!(!excluded(&["a", "!a"], "a/x"));
    }

    #[test]
    fn parent_results_keep_dockers_skipped_patterns() {
        // Docker's walk records a pattern skipped at the directory as "not
        // matched", so the later `a` does not re-exclude the rescued `a/x`.
        let m = matcher(&["a", "!a/x", "a"]);
        let (dir, info) = m.matches_using_parent_results("a", &MatchInfo::default());
        assert!(dir);
        let (child, _) = m.matches_using_parent_results("a/x", &info);
        assert!(!child, "walk rescues a/x");
        assert!(
            m.matches_or_parent_matches("a/x"),
            "single-path check does not"
        );
    }

    #[test]
    fn rescue_is_a_prefix_test_on_the_pattern_text() {
        let m = matcher(&["data", "!data/raw/README.md", "!*/keep", "!**/x"]);
        assert!(m.may_rescue("data"));
        assert!(m.may_rescue("data/raw"));
        assert!(!m.may_rescue("data/models"));
        assert!(!m.may_rescue("other"));
        assert!(!matcher(&["data"]).may_rescue("data"));
    }

    #[test]
    fn errors_name_the_problem() {
        for bad in [
            "[", "[]", "[]a]", "a[", "[a-", "[-a]", "x\\", "b[]a]", "*/[", "!",
        ] {
            let err = Matcher::new([(3, bad)]).expect_err(bad);
            assert_eq!(err.line, 3);
            if bad == "!" {
                assert_eq!(err.message, "illegal exclusion pattern: \"!\"");
            } else {
                assert_eq!(err.message, BAD_PATTERN, "{bad}");
            }
        }
        // Go checks only the part of a pattern it reaches matching `.`.
        for good in ["a]", "[a-b]", "\\[", "[\\]]", "**/[*]", "b*[]a]"] {
            assert!(Matcher::new([(1, good)]).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_pattern_whose_regex_breaks_fails_only_where_docker_evaluates_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a1"), "1").expect("write");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        std::fs::write(dir.path().join("d/x"), "1").expect("write");
        let check = |lines: &[&str]| {
            Matcher::new(lines.iter().enumerate().map(|(i, l)| (i + 1, *l)))
                .expect("Go's Match accepts these")
                .check_broken(dir.path())
        };
        // `[z-a]` and `a*[` pass Go's Match but not its regex compiler.
        let e = check(&["[z-a]"]).expect_err("an inclusion is evaluated at once");
        assert_eq!((e.line, e.message.as_str()), (1, BAD_PATTERN));
        // An exception is evaluated only for a path already excluded.
        check(&["!a*["]).expect("no path is excluded");
        let e = check(&["a1", "!a*["]).expect_err("a1 is excluded, so the exception runs");
        assert_eq!(e.line, 2);
        // An inclusion after a path is excluded is skipped for it; here
        // every path is, so `[z-a]` is never evaluated.
        check(&["*", "[z-a]"]).expect("skipped for every path");
        // Inside an excluded folder nothing is evaluated; `a1` still is.
        let e = check(&["d", "d/q*["]).expect_err("a1 reaches the pattern");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn braces_and_bars_keep_their_regex_meaning() {
        let m = matcher(&["a|b*"]);
        assert!(m.matches_or_parent_matches("anything"));
        assert!(m.matches_or_parent_matches("xb"));
        assert!(!m.matches_or_parent_matches("x"));
        let m = matcher(&["a{2}b*"]);
        assert!(m.matches_or_parent_matches("aab"));
        assert!(!m.matches_or_parent_matches("a{2}b"));
        // Not a count: literal braces.
        assert!(matcher(&["a{,2}*"]).matches_or_parent_matches("a{,2}"));
        assert!(matcher(&["a{ 2}*"]).matches_or_parent_matches("a{ 2}"));
        // Counts Go refuses: over 1000, backwards, or on a repetition.
        for bad in ["a{1001}*", "a{2,1}*", "a*{2}", "a{2}{3}*"] {
            let m = Matcher::new([(1, bad)]).expect("Go's Match accepts it");
            assert!(
                m.patterns()
                    .iter()
                    .all(|p| matches!(p.kind, Kind::Broken(_))),
                "{bad}"
            );
        }
    }
}
