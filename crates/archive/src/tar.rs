//! Deterministic tar headers, one copy for the host's context archives and
//! the `oci` builder's layers: GNU format, names and link targets longer
//! than the 100-byte fields carried by GNU long-name / long-link entries
//! (as the Docker CLI writes them), nothing taken from the machine (owners,
//! times and modes are what the caller passes).

pub use ::tar::EntryType;

/// One entry's header fields.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// The path inside the archive (a folder's ends in `/`).
    pub path: &'a [u8],
    /// Regular, directory, symlink, ...
    pub kind: EntryType,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, epoch seconds.
    pub mtime: u64,
    /// Bytes of content that follow.
    pub size: u64,
    /// A link's target (empty otherwise).
    pub link: &'a [u8],
}

/// Append the header blocks of `h` to `out`: GNU long-name and long-link
/// entries when needed, then the header itself. The content and its
/// [`padding`] are the caller's.
pub fn append_header(h: &Header<'_>, out: &mut Vec<u8>) {
    if h.path.len() > 100 {
        long_entry(EntryType::GNULongName, h.path, out);
    }
    if h.link.len() > 100 {
        long_entry(EntryType::GNULongLink, h.link, out);
    }
    let block = block(&Header {
        path: &h.path[..h.path.len().min(100)],
        link: &h.link[..h.link.len().min(100)],
        ..*h
    });
    out.extend_from_slice(block.as_bytes());
}

/// Zero bytes that round `size` up to the 512-byte block.
pub fn padding(size: u64) -> &'static [u8] {
    let rem = (size % 512) as usize;
    if rem == 0 {
        &[]
    } else {
        &[0u8; 512][..512 - rem]
    }
}

/// The end of an archive: two zero blocks.
pub const END: [u8; 1024] = [0u8; 1024];

fn long_entry(kind: EntryType, value: &[u8], out: &mut Vec<u8>) {
    let len = value.len() as u64 + 1;
    let header = block(&Header {
        path: b"././@LongLink",
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: len,
        link: b"",
    });
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(value);
    out.push(0);
    out.extend_from_slice(padding(len));
}

fn block(h: &Header<'_>) -> ::tar::Header {
    let mut header = ::tar::Header::new_gnu();
    if let Some(gnu) = header.as_gnu_mut() {
        gnu.name[..h.path.len()].copy_from_slice(h.path);
        gnu.linkname[..h.link.len()].copy_from_slice(h.link);
    }
    header.set_entry_type(h.kind);
    header.set_mode(h.mode);
    header.set_uid(h.uid);
    header.set_gid(h.gid);
    header.set_mtime(h.mtime);
    header.set_size(h.size);
    header.set_cksum();
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_and_links_read_back_with_the_tar_crate() {
        let long = "d/".repeat(80) + "file.txt";
        let target = "t/".repeat(70) + "x";
        let mut out = Vec::new();
        for (path, kind, size, link) in [
            (long.as_str(), EntryType::Regular, 3u64, ""),
            ("link", EntryType::Symlink, 0, target.as_str()),
        ] {
            append_header(
                &Header {
                    path: path.as_bytes(),
                    kind,
                    mode: 0o644,
                    uid: 1,
                    gid: 2,
                    mtime: 7,
                    size,
                    link: link.as_bytes(),
                },
                &mut out,
            );
            if size > 0 {
                out.extend_from_slice(b"abc");
                out.extend_from_slice(padding(size));
            }
        }
        out.extend_from_slice(&END);
        let mut archive = ::tar::Archive::new(out.as_slice());
        let entries: Vec<(String, String, u64)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let link = e
                    .link_name()
                    .expect("link")
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (
                    e.path().expect("path").to_string_lossy().into_owned(),
                    link,
                    e.header().mtime().expect("mtime"),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [(long.clone(), String::new(), 7), ("link".into(), target, 7)]
        );
        assert_eq!(out.len() % 512, 0);
    }
}
