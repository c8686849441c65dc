//! Sources in an image filesystem or context, by Go's `filepath.Match`
//! (what Docker's `COPY` uses): one path, or every match of a glob, and
//! the entries under each. Knows nothing of Dockerfiles.

use std::collections::{BTreeMap, BTreeSet};

use super::tree::clean;
use crate::image::{Entry, Kind};

pub use kiln_archive::glob::filepath_match as glob_match;

/// The paths a source names in `fs`: itself, or each glob match.
pub fn matches(fs: &BTreeMap<String, Entry>, source: &str) -> Vec<String> {
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
pub fn gather(fs: &BTreeMap<String, Entry>, path: &str) -> (bool, Vec<(String, Entry)>) {
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

#[cfg(test)]
mod tests {

    use super::*;

    fn ctx(paths: &[&str]) -> BTreeMap<String, Entry> {
        paths
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    Entry {
                        kind: Kind::File(crate::data::Data::from(p.to_string())),
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
}
