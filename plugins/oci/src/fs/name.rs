//! File names that are not UTF-8, kept exactly. The builder keys its trees
//! by `String`; a name's bytes are turned into one losslessly and back at
//! every edge (tar members read and written, files written to and read
//! from disk): valid UTF-8 stands for itself, and every other byte, as well
//! as each byte of a character in the range used for this, becomes the
//! character `U+10FF00 + byte`. Two different names never become the same
//! key, and a layer holds the very bytes the context or the `RUN` had.

use std::{borrow::Cow, ffi::OsStr, os::unix::ffi::OsStrExt, path::Path, path::PathBuf};

/// The first character of the range that stands for single bytes.
const BASE: u32 = 0x10_FF00;

fn escaped(byte: u8) -> char {
    char::from_u32(BASE + u32::from(byte)).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The key for the name `bytes`.
pub fn from_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.chars().any(|c| u32::from(c) >= BASE) {
            return Cow::Borrowed(text);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if u32::from(c) >= BASE {
                let mut buf = [0; 4];
                c.encode_utf8(&mut buf)
                    .bytes()
                    .for_each(|b| out.push(escaped(b)));
            } else {
                out.push(c);
            }
        }
        chunk.invalid().iter().for_each(|&b| out.push(escaped(b)));
    }
    Cow::Owned(out)
}

/// The name's bytes back from its key.
pub fn to_bytes(key: &str) -> Cow<'_, [u8]> {
    if !key.chars().any(|c| u32::from(c) >= BASE) {
        return Cow::Borrowed(key.as_bytes());
    }
    let mut out = Vec::with_capacity(key.len());
    for c in key.chars() {
        match u32::from(c).checked_sub(BASE) {
            Some(byte) => out.push(byte as u8),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Cow::Owned(out)
}

/// The key as an OS string (a name or a path of names).
pub fn to_os(key: &str) -> Cow<'_, OsStr> {
    match to_bytes(key) {
        Cow::Borrowed(b) => Cow::Borrowed(OsStr::from_bytes(b)),
        Cow::Owned(b) => Cow::Owned(std::os::unix::ffi::OsStringExt::from_vec(b)),
    }
}

/// Where the tree path `key` is below `root` on disk.
pub fn on_disk(root: &Path, key: &str) -> PathBuf {
    root.join(to_os(key))
}

/// The key of a name read from disk.
pub fn of_os(name: &OsStr) -> Cow<'_, str> {
    from_bytes(name.as_bytes())
}

/// The key for messages: as it is, or with the bytes that are not UTF-8
/// escaped (`\xff`).
pub fn shown(key: &str) -> Cow<'_, str> {
    match to_bytes(key) {
        Cow::Borrowed(_) => Cow::Borrowed(key),
        Cow::Owned(b) => Cow::Owned(b.escape_ascii().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_different_names_stay_different() {
        let names: Vec<Vec<u8>> = vec![
            b"plain.txt".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
            b"caf\xe9".to_vec(),
            b"caf\xef\xbf\xbd".to_vec(),
            b"a\xff".to_vec(),
            b"a\xfe".to_vec(),
            b"\xc3".to_vec(),
            "\u{10ff41}".as_bytes().to_vec(),
            b"A".to_vec(),
            "x\u{10ffff}y\u{10fffe}".as_bytes().to_vec(),
            b"\xf4\x8f\xbd".to_vec(),
            b"\xf4\x8f".to_vec(),
            Vec::new(),
        ];
        let mut keys = std::collections::BTreeSet::new();
        for n in &names {
            let key = from_bytes(n);
            assert_eq!(to_bytes(&key).as_ref(), n.as_slice(), "{n:?}");
            assert_eq!(to_os(&key).as_bytes(), n.as_slice());
            keys.insert(key.into_owned());
        }
        assert_eq!(keys.len(), names.len(), "two names became one key");
        // UTF-8 is its own key; other bytes show escaped.
        assert!(matches!(
            from_bytes(b"plain.txt"),
            Cow::Borrowed("plain.txt")
        ));
        assert_eq!(shown(&from_bytes(b"caf\xe9")), "caf\\xe9");
        assert_eq!(shown("plain"), "plain");
        // Random bytes, many times.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..5000 {
            let len = (x % 9) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    [0x41, 0x80, 0xbf, 0xc3, 0xe9, 0xef, 0xf4, 0x8f, 0xbd, 0xff][(x % 10) as usize]
                })
                .collect();
            assert_eq!(to_bytes(&from_bytes(&bytes)).as_ref(), bytes.as_slice());
        }
    }
}
