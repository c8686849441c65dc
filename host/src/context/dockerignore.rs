//! Docker's `.dockerignore` rules, as the Docker CLI applies them to a
//! build context (moby's `patternmatcher` and `ignorefile`, the CLI's
//! context code). Not gitignore: every pattern is anchored at the context
//! root, `foo` matches only the root `foo`, and a directory's match carries
//! to everything below it.
//!
//! Docker's quirks are kept on purpose, because users must get exactly what
//! `docker build` would send:
//! - a pattern is turned into a Go regular expression with only `.+()|{}$`
//!   escaped, so `^` and `\d` keep their regex meaning;
//! - a pattern that begins with `**` and has no other wildcard is a plain
//!   suffix test; one that ends in `**` with no other wildcard is a plain
//!   prefix test (`foo**` matches `foobar/x`);
//! - exceptions only rescue files inside an excluded directory when the
//!   exception's text starts with that directory (see [`Matcher::may_rescue`]);
//! - results inside a directory reuse the directory's per-pattern results,
//!   the way `MatchesUsingParentResults` does.

use std::fmt;

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
    /// The Go regex would not compile: Docker reports a bad pattern the
    /// first time the pattern is evaluated, kiln when it is read.
    Broken,
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
            Kind::Broken => false,
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
            let kind = compile(&p);
            if matches!(kind, Kind::Broken) {
                return Err(err(BAD_PATTERN));
            }
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
        (matched, MatchInfo(info))
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

/// Turn a cleaned pattern into Docker's match kind (`Pattern.compile`).
fn compile(pattern: &str) -> Kind {
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
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
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
    match detected {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix(pattern[..pattern.len() - 2].to_string()),
        Detected::Suffix => Kind::Suffix(pattern[2..].to_string()),
        Detected::Regex => {
            re.push('$');
            match go_regex_to_rust(&re).and_then(|r| Regex::new(&r).ok()) {
                Some(compiled) => Kind::Regex(compiled),
                None => Kind::Broken,
            }
        }
    }
}

/// Rewrite a Go (RE2) regular expression of the shapes `compile` produces so
/// that the `regex` crate reads it the same way. The differences that matter:
/// inside a class Go takes `[` `&` `~` `-` literally where the crate nests or
/// combines classes, and Go's `\d` `\w` `\s` `\b` are ASCII-only.
fn go_regex_to_rust(go: &str) -> Option<String> {
    let chars: Vec<char> = go.chars().collect();
    let mut out = String::with_capacity(go.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
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
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
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

/// Whether Go's `filepath.Match(pattern, ".")` accepts the pattern's syntax
/// (Unix rules: `\` escapes, classes need a closing `]`, no empty class and
/// no range starting with `-` or `]`).
fn go_match_syntax_ok(pattern: &str) -> bool {
    let mut rest = pattern.as_bytes();
    while !rest.is_empty() {
        while rest.first() == Some(&b'*') {
            rest = &rest[1..];
        }
        let (chunk, tail) = scan_chunk(rest);
        rest = tail;
        if !chunk_syntax_ok(chunk) {
            return false;
        }
    }
    true
}

fn scan_chunk(pattern: &[u8]) -> (&[u8], &[u8]) {
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
    pattern.split_at(i)
}

fn chunk_syntax_ok(mut chunk: &[u8]) -> bool {
    while let Some(&c) = chunk.first() {
        match c {
            b'[' => {
                chunk = &chunk[1..];
                if chunk.first() == Some(&b'^') {
                    chunk = &chunk[1..];
                }
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let Some(after_lo) = class_char(chunk) else {
                        return false;
                    };
                    chunk = after_lo;
                    if chunk.first() == Some(&b'-') {
                        let Some(after_hi) = class_char(&chunk[1..]) else {
                            return false;
                        };
                        chunk = after_hi;
                    }
                    ranges += 1;
                }
            }
            b'\\' => {
                if chunk.len() < 2 {
                    return false;
                }
                chunk = &chunk[2..];
            }
            _ => chunk = &chunk[1..],
        }
    }
    true
}

/// Go's `getEsc`: one (possibly escaped) character of a class; the rest of
/// the class must not be empty.
fn class_char(chunk: &[u8]) -> Option<&[u8]> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return None,
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return None;
            }
        }
        _ => {}
    }
    let width = utf8_width(chunk)?;
    let rest = &chunk[width..];
    if rest.is_empty() {
        return None;
    }
    Some(rest)
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
        for bad in ["[", "[]", "[]a]", "a[", "[a-", "[-a]", "x\\", "[z-a]", "!"] {
            let err = Matcher::new([(3, bad)]).expect_err(bad);
            assert_eq!(err.line, 3);
            if bad == "!" {
                assert_eq!(err.message, "illegal exclusion pattern: \"!\"");
            } else {
                assert_eq!(err.message, BAD_PATTERN, "{bad}");
            }
        }
        for good in ["a]", "[a-b]", "\\[", "[\\]]", "**/[*]"] {
            assert!(Matcher::new([(1, good)]).is_ok(), "{good}");
        }
    }
}
