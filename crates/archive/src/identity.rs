//! A file's identity as git's index keeps it: device, inode, size, and
//! modification and change times. Whatever kiln trusts "unchanged since"
//! by (the context's fingerprint, the plugin descriptor cache, digests
//! checked before, output archives written before, a `RUN` root's files)
//! compares these, and treats one changed too recently to tell from a
//! later change with the same times ("racily clean") as unknown.

use std::{fs::Metadata, os::unix::fs::MetadataExt, time::SystemTime};

/// What identifies a file's contents without reading them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Last change of contents or metadata, nanoseconds since the epoch.
    pub ctime_ns: i128,
}

const NS: i128 = 1_000_000_000;

impl Identity {
    /// The identity `meta` describes.
    pub fn of(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * NS + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * NS + i128::from(meta.ctime_nsec()),
        }
    }

    /// Its latest time, nanoseconds since the epoch.
    pub fn changed_ns(&self) -> i128 {
        self.mtime_ns.max(self.ctime_ns)
    }

    /// Whether it changed within `margin_ns` before `now_ns` (or after
    /// it): a change made now could leave the same identity, so it
    /// vouches for nothing yet.
    pub fn racy(&self, now_ns: i128, margin_ns: i128) -> bool {
        self.changed_ns() >= now_ns.saturating_sub(margin_ns)
    }

    /// Its bytes, for hashing into a key.
    pub fn to_bytes(&self) -> [u8; 56] {
        let mut out = [0; 56];
        out[..8].copy_from_slice(&self.dev.to_le_bytes());
        out[8..16].copy_from_slice(&self.ino.to_le_bytes());
        out[16..24].copy_from_slice(&self.size.to_le_bytes());
        out[24..40].copy_from_slice(&self.mtime_ns.to_le_bytes());
        out[40..].copy_from_slice(&self.ctime_ns.to_le_bytes());
        out
    }
}

impl std::fmt::Display for Identity {
    /// `dev:ino:size:mtime_ns:ctime_ns`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}:{}",
            self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns
        )
    }
}

/// Now, nanoseconds since the epoch.
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_in_place_changes_the_identity_and_a_fresh_one_is_racy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").expect("write");
        let first = Identity::of(&std::fs::metadata(&path).expect("stat"));
        assert_eq!(first.size, 3);
        assert!(first.racy(now_ns(), NS));
        assert!(!first.racy(now_ns() + 10 * NS, NS));
        assert_eq!(
            first,
            Identity::of(&std::fs::metadata(&path).expect("stat"))
        );
        // The same size, written again: the change time moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, b"two").expect("write");
        let second = Identity::of(&std::fs::metadata(&path).expect("stat"));
        assert_ne!(first, second);
        assert_ne!(first.to_bytes(), second.to_bytes());
        assert_ne!(first.to_string(), second.to_string());
    }
}
