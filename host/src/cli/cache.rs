//! `kiln cache du` and `kiln cache prune`.

use std::collections::BTreeMap;

use serde_json::json;

use super::args::CacheCommand;
use crate::{
    cache,
    error::{exit, Error, Result},
    output,
    session::Session,
};

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long ago `t` was, for people: `12s ago`, `5m ago`, `3h ago`, `2d ago`.
fn ago(t: std::time::SystemTime) -> String {
    let s = std::time::SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs());
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub(crate) fn run(session: &Session<'_>, cmd: CacheCommand) -> Result<i32> {
    let root = &session.env.cache_dir;
    match cmd {
        CacheCommand::Du { json } => {
            // Per part: (bytes, files, last used).
            let mut parts: BTreeMap<String, (u64, u64, std::time::SystemTime)> = BTreeMap::new();
            for item in cache::items(root) {
                let p = parts
                    .entry(item.group)
                    .or_insert((0, 0, std::time::UNIX_EPOCH));
                p.0 += item.size;
                p.1 += 1;
                p.2 = p.2.max(item.used);
            }
            let bytes: u64 = parts.values().map(|p| p.0).sum();
            let files: u64 = parts.values().map(|p| p.1).sum();
            if json {
                let list: Vec<_> = parts
                    .iter()
                    .map(|(name, (b, f, used))| {
                        json!({"name": name, "bytes": b, "files": f, "last_used_unix": unix(*used)})
                    })
                    .collect();
                output::json(&json!({
                    "path": root.display().to_string(),
                    "bytes": bytes,
                    "files": files,
                    "parts": list,
                }));
            } else {
                let mut lines = vec![format!(
                    "{:<12} {:>12} {:>8}  LAST USED",
                    "PART", "SIZE", "FILES"
                )];
                for (name, (b, f, used)) in &parts {
                    lines.push(format!(
                        "{name:<12} {:>12} {f:>8}  {}",
                        cache::human(*b),
                        ago(*used)
                    ));
                }
                lines.push(format!(
                    "{:<12} {:>12} {files:>8}  ({})",
                    "total",
                    cache::human(bytes),
                    root.display()
                ));
                output::result(&lines.join("\n"));
            }
            Ok(exit::OK)
        }
        CacheCommand::Prune {
            keep_storage,
            filter,
            json,
        } => {
            let mut policy = cache::Policy::default();
            if let Some(size) = keep_storage {
                policy.keep_storage = Some(
                    cache::parse_size(&size)
                        .map_err(|e| Error::BadArgument(format!("--keep-storage: {e}")))?,
                );
            }
            for f in filter {
                match f.split_once('=') {
                    Some(("until", d)) => {
                        policy.until = Some(
                            cache::parse_duration(d)
                                .map_err(|e| Error::BadArgument(format!("--filter {f}: {e}")))?,
                        )
                    }
                    _ => {
                        return Err(Error::BadArgument(format!(
                        "--filter {f}: the filter kiln knows is until=DURATION (such as until=24h)"
                    )))
                    }
                }
            }
            let done = cache::prune(root, policy, std::time::SystemTime::now());
            if json {
                output::json(&serde_json::to_value(&done).unwrap_or_default());
            } else {
                output::result(&format!(
                    "removed {} files, {} freed; {} left in {}",
                    done.files,
                    cache::human(done.bytes),
                    cache::human(done.kept),
                    root.display()
                ));
            }
            Ok(exit::OK)
        }
    }
}
