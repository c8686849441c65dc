//! kiln's cache folder kept in bounds (`kiln cache du`, `kiln cache prune`,
//! and the `KILN_CACHE_MAX` cap applied after each build).
//!
//! Every file in the cache is an optimisation that any reader treats as
//! possibly missing: a kept context archive, a layer blob, a recipe, a
//! record. So pruning works on files, oldest use first (a file's mtime:
//! kiln touches what a build reuses), and never on what a running build is
//! writing or holds: temporary files (`.kiln-tmp-<pid>-*`) and a build's
//! own context link (`build-<pid>-*`) of a process that is alive are left
//! alone, and a build that already opened a file keeps reading it when it
//! is removed (Unix keeps an open file's data until it is closed).

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

/// One file of the cache.
#[derive(Debug, Clone)]
pub struct Item {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// When a build last made or used it.
    pub used: SystemTime,
    /// The top folder it is in (`contexts`, `oci`, ...), for the summary.
    pub group: String,
}

/// Whether `name` belongs to a live process (a temporary file being
/// written, a build's context link, the oci builder's folders for a
/// running `RUN`: `root-<pid>-*`, `kiln-<pid>-*`): such entries are never
/// pruned, nor anything below them.
fn in_use(name: &str) -> bool {
    kiln_archive::atomic::owner_alive(
        name,
        &[
            kiln_archive::atomic::TEMP_PREFIX,
            "build-",
            "root-",
            "kiln-",
        ],
    ) == Some(true)
}

/// A folder that is one item ([`kiln_archive::atomic::UNIT_MARK`]): its
/// size and last use, or `None` when a live build holds it.
fn unit(dir: &Path, mark: &Path) -> Option<(u64, SystemTime)> {
    let held = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .any(|e| in_use(&e.file_name().to_string_lossy()));
    if held {
        return None;
    }
    let meta = mark.metadata().ok()?;
    let size = std::fs::read_to_string(mark)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    Some((size, meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}

/// Every file under `root` that may be pruned (in use ones left out).
pub fn items(root: &Path) -> Vec<Item> {
    let mut out = Vec::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, group)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let group = if group.is_empty() {
                name.clone()
            } else {
                group.clone()
            };
            if in_use(&name) {
                continue;
            }
            if meta.is_dir() {
                let mark = entry.path().join(kiln_archive::atomic::UNIT_MARK);
                if mark.is_file() {
                    if let Some((size, used)) = unit(&entry.path(), &mark) {
                        out.push(Item {
                            path: entry.path(),
                            size,
                            used,
                            group,
                        });
                    }
                } else {
                    pending.push((entry.path(), group));
                }
            } else {
                out.push(Item {
                    path: entry.path(),
                    size: meta.len(),
                    used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    group,
                });
            }
        }
    }
    out
}

/// What to remove.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Keep at most this many bytes, the most recently used first
    /// (`--keep-storage`).
    pub keep_storage: Option<u64>,
    /// Remove only what was not used for this long (`--filter until=`).
    pub until: Option<Duration>,
}

/// What a prune did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pruned {
    /// Files removed.
    pub files: u64,
    /// Bytes freed.
    pub bytes: u64,
    /// Bytes left in the cache.
    pub kept: u64,
}

/// Remove from `root` what `policy` says, oldest use first. Without a
/// limit or an age, everything not in use goes. Files that vanish meanwhile
/// (another kiln pruning) are skipped.
pub fn prune(root: &Path, policy: Policy, now: SystemTime) -> Pruned {
    let mut items = items(root);
    // Oldest first.
    items.sort_by_key(|i| i.used);
    let mut total: u64 = items.iter().map(|i| i.size).sum();
    let mut done = Pruned::default();
    for item in &items {
        let old_enough = policy.until.is_none_or(|age| {
            now.duration_since(item.used)
                .is_ok_and(|unused| unused >= age)
        });
        let over = policy.keep_storage.is_none_or(|cap| total > cap);
        let wanted = match (policy.keep_storage, policy.until) {
            (None, None) => true,
            (Some(_), None) => over,
            (None, Some(_)) => old_enough,
            // Both: what is old goes, and then what the cap still needs.
            (Some(_), Some(_)) => old_enough || over,
        };
        if !wanted {
            continue;
        }
        if remove(&item.path) {
            total -= item.size;
            done.files += 1;
            done.bytes += item.size;
        }
    }
    done.kept = total;
    done
}

/// Remove one item: a file, or a folder that is one (renamed aside first,
/// so that no build finds it half-removed; a prune killed half-way leaves
/// a temporary name the next build's sweep removes).
fn remove(path: &Path) -> bool {
    if !path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return std::fs::remove_file(path).is_ok();
    }
    let Some(parent) = path.parent() else {
        return false;
    };
    let aside = parent.join(format!(
        "{}{}-pruned-{}",
        kiln_archive::atomic::TEMP_PREFIX,
        std::process::id(),
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    if std::fs::rename(path, &aside).is_err() {
        return false;
    }
    let _ = std::fs::remove_dir_all(&aside);
    true
}

/// The cap applied to the cache folder after each build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// At most this many bytes are kept.
    pub bytes: u64,
    /// Whether `KILN_CACHE_MAX` set it (else it is the default).
    pub from_env: bool,
}

/// The smallest default cap: a small disk still keeps a useful cache.
const DEFAULT_CAP_FLOOR: u64 = 2 << 30;

/// The default cap, as BuildKit's default keep-storage rule: a tenth of
/// the file system that holds `dir` (or would: its nearest existing
/// parent), at least 2 GiB; `None` when the file system cannot be asked.
pub fn default_cap(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let existing = dir.ancestors().find(|d| d.exists())?;
    let path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) fills the zeroed struct for a valid C path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    #[allow(clippy::useless_conversion)] // the field widths differ by target
    let total = u64::from(stat.f_blocks).saturating_mul(u64::from(stat.f_frsize));
    Some((total / 10).max(DEFAULT_CAP_FLOOR))
}

/// A size as people write it: `512`, `10k`, `1.5GB`, `2GiB`, `100mb`
/// (k/m/g/t, with or without `b` or `ib`: powers of 1024, as Docker reads
/// `--keep-storage`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (such as 512, 100MB or 10GB)"))?;
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use B, KB, MB, GB or TB)"
            ))
        }
    };
    Ok((n * (1u64 << shift) as f64) as u64)
}

/// A duration as Docker's filters write it: `24h`, `30m`, `90s`, `7d`,
/// `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (such as 24h, 30m or 7d)");
    let mut total = 0f64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let n: f64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total += n * match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => return Err(bad()),
        };
    }
    if !number.is_empty() || total <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// `bytes` for people: `812.4 MiB`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_is_a_tenth_of_the_disk_and_at_least_2_gib() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cap = default_cap(dir.path()).expect("statvfs answers");
        assert!(cap >= DEFAULT_CAP_FLOOR);
        // A folder not made yet is judged by the disk it would be on.
        assert_eq!(default_cap(&dir.path().join("not/yet")), Some(cap));
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=size"])
            .arg(dir.path())
            .output()
            .expect("df");
        let size: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df's size");
        assert_eq!(cap, (size / 10).max(DEFAULT_CAP_FLOOR));
    }

    #[test]
    fn sizes_and_durations_read_as_docker_writes_them() {
        assert_eq!(parse_size("512").expect("n"), 512);
        assert_eq!(parse_size("10k").expect("k"), 10 << 10);
        assert_eq!(parse_size("1.5GB").expect("g"), 3 << 29);
        assert_eq!(parse_size("2GiB").expect("gib"), 2 << 30);
        assert!(parse_size("ten").is_err() && parse_size("5 parsecs").is_err());
        assert_eq!(
            parse_duration("24h").expect("h"),
            Duration::from_secs(86400)
        );
        assert_eq!(
            parse_duration("1h30m").expect("hm"),
            Duration::from_secs(5400)
        );
        assert!(parse_duration("24").is_err() && parse_duration("h").is_err());
        assert_eq!(human(1536), "1.5 KiB");
    }

    #[test]
    fn a_unit_folder_is_one_item_pruned_whole_and_kept_while_a_build_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let unit = root.join("oci/snapshots/abc");
        std::fs::create_dir_all(unit.join("root/usr/bin")).expect("mkdir");
        std::fs::write(unit.join("root/usr/bin/tool"), b"12345").expect("file");
        std::fs::write(unit.join(kiln_archive::atomic::UNIT_MARK), b"4096").expect("mark");
        // A build of this (live) process holds it.
        let mark = unit.join(format!("build-{}-0", std::process::id()));
        std::fs::write(&mark, b"").expect("hold");
        assert!(
            items(root).is_empty(),
            "a held unit (or a file in it) is listed: {:?}",
            items(root)
        );
        assert_eq!(prune(root, Policy::default(), SystemTime::now()).files, 0);
        assert!(unit.join("root/usr/bin/tool").exists());
        // Let go (a dead build's mark does not hold it): one item of the
        // size its mark says, removed whole.
        std::fs::rename(&mark, unit.join("build-999999999-0")).expect("rename");
        let listed = items(root);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            (listed[0].path.clone(), listed[0].size),
            (unit.clone(), 4096)
        );
        let done = prune(root, Policy::default(), SystemTime::now());
        assert_eq!((done.files, done.bytes), (1, 4096));
        assert!(!unit.exists());
        let left: Vec<_> = std::fs::read_dir(root.join("oci/snapshots"))
            .expect("read")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn prune_removes_the_oldest_first_and_never_what_a_live_build_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("oci/blobs")).expect("mkdir");
        let now = SystemTime::now();
        let put = |rel: &str, size: usize, age_s: u64| {
            let p = root.join(rel);
            std::fs::write(&p, vec![0u8; size]).expect("write");
            let f = std::fs::File::options()
                .append(true)
                .open(&p)
                .expect("open");
            f.set_modified(now - Duration::from_secs(age_s))
                .expect("mtime");
        };
        put("oci/blobs/old", 1000, 3 * 86400);
        put("oci/blobs/mid", 1000, 2 * 3600);
        put("oci/blobs/new", 1000, 10);
        // A temporary file of this (live) process and a dead one's.
        let live = format!(
            "{}{}-x",
            kiln_archive::atomic::TEMP_PREFIX,
            std::process::id()
        );
        put(&format!("oci/{live}"), 5000, 5 * 86400);
        put("oci/.kiln-tmp-999999999-x", 10, 5 * 86400);

        let by_age = prune(
            root,
            Policy {
                until: Some(Duration::from_secs(86400)),
                ..Policy::default()
            },
            now,
        );
        assert_eq!((by_age.files, by_age.bytes), (2, 1010));
        assert!(!root.join("oci/blobs/old").exists() && root.join("oci/blobs/mid").exists());
        assert!(
            root.join(format!("oci/{live}")).exists(),
            "a live file was pruned"
        );

        let capped = prune(
            root,
            Policy {
                keep_storage: Some(1500),
                ..Policy::default()
            },
            now,
        );
        assert_eq!((capped.files, capped.kept), (1, 1000));
        assert!(!root.join("oci/blobs/mid").exists() && root.join("oci/blobs/new").exists());

        let all = prune(root, Policy::default(), now);
        assert_eq!((all.files, all.kept), (1, 0));
        assert!(root.join(format!("oci/{live}")).exists());
    }
}
