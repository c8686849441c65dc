//! Bytes the builder handles without holding them: a file's contents or a
//! blob is either in memory (small things kiln makes: here-documents,
//! configs) or a range of a file on disk that kiln never changes in place
//! (the host's context archive, a cache blob, an unpacked layer), read in
//! bounded chunks when it is written out. So memory stays flat whatever
//! the size of the context or the layers. A layer kept as pieces of
//! several cache files is the concatenation of their ranges.

use std::{
    fmt,
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    os::unix::fs::FileExt,
    sync::Arc,
};

use bytes::Bytes;

/// How much is read at a time.
pub const CHUNK: usize = 256 << 10;

/// Some bytes: in memory, or `len` bytes of a file from `offset`.
#[derive(Clone)]
pub enum Data {
    /// In memory.
    Memory(Bytes),
    /// A range of an open file kiln never changes in place.
    File {
        /// The file.
        file: Arc<File>,
        /// Where the range starts.
        offset: u64,
        /// How long it is.
        len: u64,
    },
    /// Several of the above, one after the other ([`Data::concat`]).
    Parts {
        /// The parts, none empty and none itself made of parts.
        parts: Arc<[Data]>,
        /// Their total length.
        len: u64,
    },
}

impl Default for Data {
    fn default() -> Self {
        Data::Memory(Bytes::new())
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Data::Memory(b) if b.len() <= 64 => write!(f, "{b:?}"),
            Data::Memory(b) => write!(f, "<{} bytes in memory>", b.len()),
            Data::File { offset, len, .. } => write!(f, "<{len} bytes of a file at {offset}>"),
            Data::Parts { parts, len } => write!(f, "<{len} bytes in {} parts>", parts.len()),
        }
    }
}

impl From<Bytes> for Data {
    fn from(b: Bytes) -> Self {
        Data::Memory(b)
    }
}

impl From<Vec<u8>> for Data {
    fn from(b: Vec<u8>) -> Self {
        Data::Memory(Bytes::from(b))
    }
}

impl From<String> for Data {
    fn from(b: String) -> Self {
        Data::Memory(Bytes::from(b))
    }
}

impl From<&'static str> for Data {
    fn from(b: &'static str) -> Self {
        Data::Memory(Bytes::from(b))
    }
}

impl PartialEq for Data {
    /// Equal contents (the same range of the same file is equal unread).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Data::Memory(a), Data::Memory(b)) => a == b,
            (
                Data::File {
                    file: fa,
                    offset: oa,
                    len: la,
                },
                Data::File {
                    file: fb,
                    offset: ob,
                    len: lb,
                },
            ) if Arc::ptr_eq(fa, fb) && oa == ob && la == lb => true,
            _ if self.len() != other.len() => false,
            _ => {
                let (mut a, mut b) = (self.reader(), other.reader());
                let n = CHUNK.min(self.len() as usize).max(1);
                let (mut x, mut y) = (vec![0; n], vec![0; n]);
                loop {
                    let n = match read_full(&mut a, &mut x) {
                        Ok(n) => n,
                        Err(_) => return false,
                    };
                    if read_full(&mut b, &mut y[..n]).map_or(true, |m| m != n) || x[..n] != y[..n] {
                        return false;
                    }
                    if n == 0 {
                        return true;
                    }
                }
            }
        }
    }
}

impl Eq for Data {}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl Data {
    /// All of `file` (its length now).
    pub fn whole(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(Data::File {
            file: Arc::new(file),
            offset: 0,
            len,
        })
    }

    /// `parts` one after the other: nested parts flattened, empty ones
    /// dropped, neighbouring ranges of one file joined.
    pub fn concat(parts: impl IntoIterator<Item = Data>) -> Data {
        let mut out: Vec<Data> = Vec::new();
        let mut push = |d: Data| {
            if d.is_empty() {
                return;
            }
            if let (
                Some(Data::File {
                    file: last,
                    offset: at,
                    len: n,
                }),
                Data::File { file, offset, len },
            ) = (out.last_mut(), &d)
            {
                if Arc::ptr_eq(last, file) && *at + *n == *offset {
                    *n += len;
                    return;
                }
            }
            out.push(d);
        };
        for d in parts {
            match d {
                Data::Parts { parts, .. } => parts.iter().cloned().for_each(&mut push),
                d => push(d),
            }
        }
        match out.len() {
            0 => Data::default(),
            1 => out.pop().unwrap_or_default(),
            _ => Data::Parts {
                len: out.iter().map(Data::len).sum(),
                parts: out.into(),
            },
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Data::Memory(b) => b.len() as u64,
            Data::File { len, .. } | Data::Parts { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes from `offset` (cut to what there is).
    pub fn slice(&self, offset: u64, len: u64) -> Data {
        let offset = offset.min(self.len());
        let len = len.min(self.len() - offset);
        match self {
            Data::Memory(b) => Data::Memory(b.slice(offset as usize..(offset + len) as usize)),
            Data::File {
                file, offset: at, ..
            } => Data::File {
                file: file.clone(),
                offset: at + offset,
                len,
            },
            Data::Parts { parts, .. } => {
                let (end, mut start) = (offset + len, 0);
                let mut out = Vec::new();
                for part in parts.iter() {
                    let n = part.len();
                    if start < end && start + n > offset {
                        let from = offset.saturating_sub(start);
                        out.push(part.slice(from, end.min(start + n) - start - from));
                    }
                    start += n;
                }
                Data::concat(out)
            }
        }
    }

    /// Read into `buf` from `pos` (at most the rest of it; 0 at its end).
    /// A file shorter than recorded is an error.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.len().saturating_sub(pos)) as usize;
        if want == 0 {
            return Ok(0);
        }
        match self {
            Data::Memory(b) => {
                let at = pos as usize;
                buf[..want].copy_from_slice(&b[at..at + want]);
                Ok(want)
            }
            Data::File { file, offset, .. } => {
                match file.read_at(&mut buf[..want], offset + pos)? {
                    0 => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file is shorter than kiln recorded: it was changed or cut",
                    )),
                    n => Ok(n),
                }
            }
            Data::Parts { parts, .. } => {
                let mut start = 0;
                for part in parts.iter() {
                    let n = part.len();
                    if pos < start + n {
                        return part.read_at(&mut buf[..want], pos - start);
                    }
                    start += n;
                }
                Ok(0)
            }
        }
    }

    /// A reader over it (seekable).
    pub fn reader(&self) -> DataReader {
        DataReader {
            data: self.clone(),
            at: 0,
        }
    }

    /// All of it in memory: for small things (a passwd file, a config);
    /// a file range is read now.
    pub fn bytes(&self) -> io::Result<Bytes> {
        match self {
            Data::Memory(b) => Ok(b.clone()),
            Data::File { .. } | Data::Parts { .. } => {
                let mut out = Vec::with_capacity(self.len() as usize);
                self.reader().read_to_end(&mut out)?;
                Ok(Bytes::from(out))
            }
        }
    }

    /// Whether it starts with `prefix`.
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        if self.len() < prefix.len() as u64 {
            return false;
        }
        let mut head = vec![0; prefix.len()];
        read_full(&mut self.reader(), &mut head).is_ok_and(|n| n == prefix.len()) && head == prefix
    }

    /// Hand every byte to `each`, in chunks of at most [`CHUNK`]. A file
    /// that is shorter than the range is an error.
    pub fn chunks(&self, mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        self.each_chunk(&mut each)
    }

    fn each_chunk(&self, each: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        match self {
            Data::Memory(b) => b.chunks(CHUNK).try_for_each(each),
            Data::Parts { parts, .. } => parts.iter().try_for_each(|p| p.each_chunk(each)),
            Data::File { .. } => {
                let mut r = self.reader();
                let mut buf = vec![0; CHUNK.min(self.len() as usize)];
                loop {
                    let n = read_full(&mut r, &mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    each(&buf[..n])?;
                }
            }
        }
    }

    /// Write it all to `out`.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        self.chunks(|c| out.write_all(c))
    }

    /// Write it all to the file `out` (at its position): a range of a
    /// file is copied by the kernel (`copy_file_range`, no pass through
    /// this process), else in chunks. A file that is shorter than the range
    /// is an error.
    pub fn write_to_file(&self, out: &mut File) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (file, offset, len) = match self {
            Data::File { file, offset, len } => (file, offset, len),
            Data::Parts { parts, .. } => {
                return parts.iter().try_for_each(|p| p.write_to_file(out))
            }
            Data::Memory(_) => return self.write_to(out),
        };
        let mut from = i64::try_from(*offset).map_err(io::Error::other)?;
        let mut left = *len;
        while left > 0 {
            let want = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
            // SAFETY: copy_file_range(2) between two open descriptors, the
            // source offset a local the call advances, the target's own
            // position used.
            let n = unsafe {
                libc::copy_file_range(
                    file.as_raw_fd(),
                    &mut from,
                    out.as_raw_fd(),
                    std::ptr::null_mut(),
                    want,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // Not between these two (other filesystems, old
                    // kernels): the rest in chunks.
                    Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
                        if left == *len =>
                    {
                        return self.write_to(out)
                    }
                    _ => return Err(e),
                }
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file is shorter than the range",
                ));
            }
            left -= n as u64;
        }
        Ok(())
    }

    /// Where it sits in `file`, when it is a range of that very file.
    pub fn offset_in(&self, file: &Arc<File>) -> Option<u64> {
        match self {
            Data::File {
                file: f, offset, ..
            } if Arc::ptr_eq(f, file) => Some(*offset),
            _ => None,
        }
    }
}

/// Reads a [`Data`].
pub struct DataReader {
    data: Data,
    at: u64,
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Seek for DataReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.data.len() as i128;
        let at = match to {
            SeekFrom::Start(n) => i128::from(n),
            SeekFrom::End(d) => len + i128::from(d),
            SeekFrom::Current(d) => i128::from(self.at) + i128::from(d),
        };
        if at < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.at = at as u64;
        Ok(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_range_reads_slices_and_compares_by_content() {
        let mut f = tempfile::tempfile().expect("tempfile");
        let body: Vec<u8> = (0..(3 * CHUNK + 5)).map(|i| (i % 253) as u8).collect();
        f.write_all(&body).expect("write");
        let d = Data::whole(f).expect("whole");
        assert_eq!(d.len(), body.len() as u64);
        let s = d.slice(10, 20);
        assert_eq!(s.bytes().expect("bytes").as_ref(), &body[10..30]);
        assert_eq!(s, Data::from(body[10..30].to_vec()));
        assert_ne!(s, Data::from(body[11..31].to_vec()));
        let mut out = Vec::new();
        d.write_to(&mut out).expect("write_to");
        assert_eq!(out, body);
        assert!(d.starts_with(&body[..4]) && !d.starts_with(b"zz"));
        let mut r = d.reader();
        r.seek(SeekFrom::Start(CHUNK as u64)).expect("seek");
        let mut b = [0u8; 3];
        r.read_exact(&mut b).expect("read");
        assert_eq!(b, body[CHUNK..CHUNK + 3]);
        // A range past the file's end (the file was cut) is an error, not zeros.
        let past = Data::File {
            file: match &d {
                Data::File { file, .. } => file.clone(),
                _ => unreachable!(),
            },
            offset: body.len() as u64 - 2,
            len: 10,
        };
        assert!(past.bytes().is_err());
        // Into a file: a range by the kernel, a cut one an error.
        let mut into = tempfile::tempfile().expect("tempfile");
        into.write_all(b"head:").expect("write");
        d.slice(7, (2 * CHUNK) as u64)
            .write_to_file(&mut into)
            .expect("copy");
        Data::from(b":tail".to_vec())
            .write_to_file(&mut into)
            .expect("memory");
        let mut got = Vec::new();
        into.seek(SeekFrom::Start(0)).expect("seek");
        into.read_to_end(&mut got).expect("read");
        let mut want = b"head:".to_vec();
        want.extend_from_slice(&body[7..7 + 2 * CHUNK]);
        want.extend_from_slice(b":tail");
        assert_eq!(got, want);
        let mut cut = tempfile::tempfile().expect("tempfile");
        assert!(past.write_to_file(&mut cut).is_err());
    }

    #[test]
    fn parts_read_slice_and_copy_as_one() {
        let mut f = tempfile::tempfile().expect("tempfile");
        let body: Vec<u8> = (0..(2 * CHUNK + 11)).map(|i| (i % 239) as u8).collect();
        f.write_all(&body).expect("write");
        let file = Data::whole(f).expect("whole");
        let head = Data::from(b"head".to_vec());
        // Neighbouring ranges of one file join; empty parts go.
        assert!(matches!(
            Data::concat([file.slice(0, 5), Data::default(), file.slice(5, 10)]),
            Data::File {
                offset: 0,
                len: 15,
                ..
            }
        ));
        let all = Data::concat([
            file.slice(CHUNK as u64, CHUNK as u64 + 11),
            head.clone(),
            Data::concat([file.slice(0, 100), head]),
        ]);
        let mut want = body[CHUNK..].to_vec();
        want.extend_from_slice(b"head");
        want.extend_from_slice(&body[..100]);
        want.extend_from_slice(b"head");
        assert!(matches!(&all, Data::Parts { parts, .. } if parts.len() == 4));
        assert_eq!(all.len(), want.len() as u64);
        assert_eq!(all.bytes().expect("bytes").as_ref(), want.as_slice());
        assert_eq!(all, Data::from(want.clone()));
        let at = CHUNK as u64 + 5;
        assert_eq!(
            all.slice(at, 110).bytes().expect("slice").as_ref(),
            &want[at as usize..at as usize + 110]
        );
        let mut seen = Vec::new();
        all.chunks(|c| {
            assert!(c.len() <= CHUNK);
            seen.extend_from_slice(c);
            Ok(())
        })
        .expect("chunks");
        assert_eq!(seen, want);
        let mut into = tempfile::tempfile().expect("tempfile");
        all.write_to_file(&mut into).expect("copy");
        let mut got = Vec::new();
        into.seek(SeekFrom::Start(0)).expect("seek");
        into.read_to_end(&mut got).expect("read");
        assert_eq!(got, want);
    }
}
