//! Go's `filepath.Match`, which Docker's `COPY` sources use.

/// Go's `filepath.Match` on one path component: `*`, `?`, `[...]`
/// (ranges, `^` negation) and `\` escapes.
pub fn filepath_match(pattern: &str, name: &str) -> bool {
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
    /// One pattern element.
    enum Token {
        Star,
        Any,
        Class(Vec<char>),
        Literal(char),
    }
    // Tokenize once; a class that never closes is a bad pattern, which
    // matches nothing (Go returns ErrBadPattern).
    let p: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' => {
                if !matches!(tokens.last(), Some(Token::Star)) {
                    tokens.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                tokens.push(Token::Any);
                i += 1;
            }
            '[' => {
                let Some((_, len)) = class(&p[i + 1..], '\0') else {
                    return false;
                };
                tokens.push(Token::Class(p[i + 1..i + 1 + len].to_vec()));
                i += 1 + len;
            }
            '\\' if i + 1 < p.len() => {
                tokens.push(Token::Literal(p[i + 1]));
                i += 2;
            }
            c => {
                tokens.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    let one = |t: &Token, c: char| match t {
        Token::Star => false,
        Token::Any => true,
        Token::Class(body) => class(body, c).is_some_and(|(m, _)| m),
        Token::Literal(l) => *l == c,
    };
    // Greedy matching with one backtracking point, the last `*`: a later
    // star makes earlier choices final, so the cost is at most
    // O(pattern x name), never exponential.
    let n: Vec<char> = name.chars().collect();
    let (mut t, mut k) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while k < n.len() {
        if let Some(Token::Star) = tokens.get(t) {
            last_star = Some((t, k));
            t += 1;
        } else if tokens.get(t).is_some_and(|tok| one(tok, n[k])) {
            t += 1;
            k += 1;
        } else if let Some((star, from)) = last_star {
            t = star + 1;
            k = from + 1;
            last_star = Some((star, from + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|tok| matches!(tok, Token::Star))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_go_filepath_match() {
        assert!(filepath_match("*.txt", "a.txt"));
        assert!(filepath_match("a?c", "abc"));
        assert!(filepath_match("[ab]*", "bcd"));
        assert!(!filepath_match("[^ab]*", "bcd"));
        assert!(filepath_match("file[0-9].md", "file7.md"));
        assert!(!filepath_match("file[0-9].md", "fileX.md"));
        assert!(filepath_match("\\*", "*"));
        assert!(!filepath_match("\\*", "a"));
        assert!(filepath_match("a*b*c", "axxbyyc"));
        assert!(!filepath_match("a*b*c", "axxbyy"));
        assert!(filepath_match("*", ""));
        assert!(filepath_match("a**", "a"));
        assert!(!filepath_match("[a", "a"), "a bad pattern matches nothing");
        assert!(filepath_match("[]a]", "]"));
        assert!(filepath_match("*[0-9]", "abc7"));
    }

    #[test]
    fn many_stars_take_linear_time() {
        let name = "a".repeat(40);
        let started = std::time::Instant::now();
        assert!(!filepath_match("a*a*a*a*a*a*a*a*a*a*a*b", &name));
        let long = "a".repeat(10_000);
        assert!(!filepath_match(
            &"*a".repeat(200).replace("a*a", "a*b"),
            &long
        ));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
