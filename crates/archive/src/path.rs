//! Paths inside archives and image filesystems, `/`-separated, cleaned by
//! Go's rules (what Docker's ignore rules and `COPY` use).

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// A path inside a root (no leading `/`; `""` is the root itself), cleaned
/// as if rooted: `..` never climbs above the root.
pub fn clean_in_root(path: &str) -> String {
    clean(&format!("/{path}"))[1..].to_string()
}

/// Whether `path` climbs above its root with `..` (Docker's "forbidden
/// path outside the build context"); a leading `/` is the root itself.
pub fn escapes(path: &str) -> bool {
    let mut depth = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if depth == 0 => return true,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("a//b/./c/", "a/b/c"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("./", "."),
            ("!./a", "!./a"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn paths_in_a_root_never_climb_out() {
        for (input, want) in [
            ("", ""),
            ("a//b/./c/", "a/b/c"),
            ("../a", "a"),
            ("a/../../b", "b"),
            ("/x/..", ""),
        ] {
            assert_eq!(clean_in_root(input), want, "clean_in_root({input:?})");
        }
        assert!(escapes("../a"));
        assert!(escapes("a/../../b"));
        assert!(!escapes("/a/../b"));
        assert!(!escapes("a/b/../c"));
    }
}
