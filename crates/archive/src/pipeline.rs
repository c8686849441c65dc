//! A byte stream cut into fixed-size pieces as it is produced, each piece
//! optionally gzip'd on a worker thread (one member each, by
//! [`PieceCompressor`]'s rule), then written to a sink in order on a writer
//! thread. Memory stays bounded by the pieces in flight (a few per core),
//! whatever the stream's length: the host's context archive and the `oci`
//! builder's layers both go through it.

use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    thread,
};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::gzip::PieceCompressor;

struct Piece<N> {
    seq: u64,
    data: Vec<u8>,
    /// What the [`Reuse`] lookup said, and whether it found the piece.
    note: Option<(N, bool)>,
}

/// Where the stream is cut into pieces.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// Every `n` bytes.
    Fixed(usize),
    /// At content-defined boundaries (a gear hash over the last 64 bytes
    /// matching a mask), never before `min` bytes and at most `max`: an
    /// edit moves only the boundaries around it, so the pieces before and
    /// after it are the same bytes as before (and their gzip'd form can be
    /// reused).
    Content {
        /// The smallest piece.
        min: usize,
        /// A boundary where `hash & mask == 0` (about `mask + 1` bytes apart).
        mask: u64,
        /// The largest piece.
        max: usize,
    },
}

impl Cut {
    /// The `oci` builder's layers: 256 KiB to 4 MiB, about 1 MiB past the
    /// minimum.
    pub const LAYERS: Cut = Cut::Content {
        min: 256 << 10,
        mask: (1 << 20) - 1,
        max: 4 << 20,
    };

    fn max(self) -> usize {
        match self {
            Cut::Fixed(n) => n.max(1),
            Cut::Content { max, .. } => max.max(1),
        }
    }
}

/// The gear table: 256 fixed pseudo-random words (splitmix64 from a fixed
/// seed). Part of the blob format: changing it changes every digest.
const GEAR: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut x: u64 = 0x6b69_6c6e_2d63_6463; // "kiln-cdc"
    let mut i = 0;
    while i < 256 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
};

/// What a [`Reuse`] lookup found for one piece.
pub struct Looked<N> {
    /// The gzip member made from the piece before, when known.
    pub gzip: Option<Vec<u8>>,
    /// Handed to the [`Sink`] with the piece (where the member is kept, or
    /// what to keep a new one by).
    pub note: N,
}

/// Gzip'd pieces made before, by their plain bytes: a piece found here is
/// not compressed again (the bytes are the same as compressing it would
/// give, so the result is the same). Called from the compressing threads;
/// keeping new pieces is the [`Sink`]'s part.
pub trait Reuse: Sync {
    /// What the sink hears of each piece.
    type Note: Send;
    /// Look the piece `plain` up.
    fn get(&self, plain: &[u8]) -> Looked<Self::Note>;
}

/// Where the pipeline's pieces go, in order.
pub trait Sink: Send {
    /// What the [`Reuse`] lookup said of each piece.
    type Note: Send;
    /// One piece (gzip'd, or plain without gzip) with, when there was a
    /// lookup, its note and whether the piece was found.
    fn piece(&mut self, bytes: &[u8], note: Option<(Self::Note, bool)>) -> io::Result<()>;
    /// The end of the stream.
    fn flush(&mut self) -> io::Result<()>;
}

/// A writer as a [`Sink`]: every piece written to it.
pub struct Plain<W>(pub W);

impl<W: Write + Send> Sink for Plain<W> {
    type Note = ();

    fn piece(&mut self, bytes: &[u8], _: Option<((), bool)>) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Why a pipeline failed: its producer's error, or the sink's (a failed
/// write closes the pipeline, so the producer's "closed" is not the cause).
#[derive(Debug)]
pub enum Failed<E> {
    /// The producer returned an error.
    Produce(E),
    /// Writing to the sink failed.
    Write(io::Error),
}

/// The producer's end: write the stream into it (it is a [`Write`]), or
/// read straight into its current piece with [`Pieces::read_from`].
pub struct Pieces<N = ()> {
    buf: Vec<u8>,
    cut: Cut,
    /// The gear hash so far ([`Cut::Content`]).
    hash: u64,
    /// How much of `buf` the hash has seen.
    scanned: usize,
    seq: u64,
    tx: Sender<Piece<N>>,
    pool: Receiver<Vec<u8>>,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the pipeline was closed")
}

impl<N> Pieces<N> {
    fn send(&mut self) -> io::Result<()> {
        let fresh = self
            .pool
            .try_recv()
            .map(|mut v| {
                v.clear();
                v
            })
            .unwrap_or_else(|_| Vec::with_capacity(self.cut.max()));
        let data = std::mem::replace(&mut self.buf, fresh);
        self.scanned = 0;
        self.tx
            .send(Piece {
                seq: self.seq,
                data,
                note: None,
            })
            .map_err(|_| closed())?;
        self.seq += 1;
        Ok(())
    }

    /// Read at most `max` bytes from `from` straight into the current piece
    /// (one `read` call, retried when interrupted); returns how many (0 at
    /// the end of `from`).
    pub fn read_from(&mut self, from: &mut dyn Read, max: u64) -> io::Result<usize> {
        let start = self.buf.len();
        let want = ((self.cut.max() - start) as u64).min(max) as usize;
        self.buf.resize(start + want, 0);
        let n = loop {
            match from.read(&mut self.buf[start..start + want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(start + n);
        self.cut_pieces()?;
        Ok(n)
    }

    /// Send every whole piece `buf` holds, keeping the rest.
    fn cut_pieces(&mut self) -> io::Result<()> {
        loop {
            let end = match self.cut {
                Cut::Fixed(n) => (self.buf.len() >= n.max(1)).then_some(n.max(1)),
                Cut::Content { min, mask, max } => {
                    let buf = &self.buf[..];
                    let end = buf.len().min(max);
                    let mut at = self.scanned;
                    let mut hash = self.hash;
                    // The gear hash holds the last 64 bytes only (each step
                    // shifts older ones out) and no cut comes before `min`:
                    // bytes before `min - 64` need no hashing at all.
                    let warm = min.saturating_sub(64);
                    if at < warm {
                        at = warm.min(end);
                        hash = 0;
                    }
                    // Bytes whose cut would come before `min`: hashed only.
                    let quiet = end.min(min.saturating_sub(1));
                    if at < quiet {
                        for &b in &buf[at..quiet] {
                            hash = (hash << 1).wrapping_add(GEAR[b as usize]);
                        }
                        at = quiet;
                    }
                    let mut found = None;
                    for &b in &buf[at..end] {
                        hash = (hash << 1).wrapping_add(GEAR[b as usize]);
                        at += 1;
                        if hash & mask == 0 {
                            found = Some(at);
                            break;
                        }
                    }
                    if found.is_none() && at == max {
                        found = Some(max);
                    }
                    self.hash = hash;
                    self.scanned = at;
                    found
                }
            };
            let Some(end) = end else {
                return Ok(());
            };
            if end == self.buf.len() {
                self.send()?;
            } else {
                let mut rest = self
                    .pool
                    .try_recv()
                    .map(|mut v| {
                        v.clear();
                        v
                    })
                    .unwrap_or_else(|_| Vec::with_capacity(self.cut.max()));
                rest.extend_from_slice(&self.buf[end..]);
                self.buf.truncate(end);
                let whole = std::mem::replace(&mut self.buf, rest);
                self.tx
                    .send(Piece {
                        seq: self.seq,
                        data: whole,
                        note: None,
                    })
                    .map_err(|_| closed())?;
                self.seq += 1;
                self.scanned = 0;
            }
        }
    }
}

impl<N> Write for Pieces<N> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (self.cut.max() - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.cut_pieces()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Run `produce` with the pipeline's input end; pieces of `piece` bytes
/// go (gzip'd on every core when `gzip`) to `sink`, in order. Returns what
/// `produce` returned and the sink, flushed. With `gzip`, an empty stream
/// is one empty gzip member (a valid gzip file).
pub fn run<W, T, E>(
    gzip: bool,
    piece: usize,
    sink: W,
    produce: impl FnOnce(&mut Pieces) -> Result<T, E>,
) -> Result<(T, W), Failed<E>>
where
    W: Write + Send,
{
    run_with(gzip, Cut::Fixed(piece), None, Plain(sink), produce).map(|(t, Plain(w))| (t, w))
}

/// [`run`] with pieces cut by `cut`, gzip'd pieces taken from `reuse` when
/// it has them, and every piece handed to `sink` with what `reuse` said.
pub fn run_with<S, T, E>(
    gzip: bool,
    cut: Cut,
    reuse: Option<&dyn Reuse<Note = S::Note>>,
    sink: S,
    produce: impl FnOnce(&mut Pieces<S::Note>) -> Result<T, E>,
) -> Result<(T, S), Failed<E>>
where
    S: Sink,
{
    let piece = cut.max();
    let workers = if gzip {
        thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        0
    };
    // Pieces in flight: at most `cap` queued per stage, plus one per worker.
    let cap = workers.max(1);
    let (raw_tx, raw_rx) = bounded::<Piece<S::Note>>(cap);
    let (done_tx, done_rx) = bounded::<Piece<S::Note>>(cap);
    let (pool_tx, pool_rx) = bounded::<Vec<u8>>(cap + workers);

    thread::scope(|scope| {
        let writer = {
            let pool = pool_tx.clone();
            scope.spawn(move || write_in_order(done_rx, sink, pool, piece))
        };
        let mut compressors = Vec::new();
        for _ in 0..workers {
            let rx = raw_rx.clone();
            let tx = done_tx.clone();
            let pool = pool_tx.clone();
            compressors.push(scope.spawn(move || compress(rx, tx, pool, piece, reuse)));
        }
        drop(raw_rx);
        let next_stage = if gzip { raw_tx } else { done_tx.clone() };
        drop(done_tx);
        let mut pieces = Pieces {
            buf: Vec::with_capacity(piece),
            cut,
            hash: 0,
            scanned: 0,
            seq: 0,
            tx: next_stage,
            pool: pool_rx,
        };
        let produced = produce(&mut pieces).map_err(Failed::Produce);
        let finished = produced.and_then(|t| {
            if !pieces.buf.is_empty() || (gzip && pieces.seq == 0) {
                pieces.send().map_err(Failed::Write)?;
            }
            Ok(t)
        });
        // Closing the first stage lets the workers and the writer drain and stop.
        drop(pieces);
        drop(pool_tx);
        for c in compressors {
            let _ = c.join();
        }
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the pipeline's writer panicked")));
        match (finished, written) {
            (Ok(t), Ok(sink)) => Ok((t, sink)),
            (_, Err(e)) => Err(Failed::Write(e)),
            (Err(e), Ok(_)) => Err(e),
        }
    })
}

fn compress<N: Send>(
    rx: Receiver<Piece<N>>,
    tx: Sender<Piece<N>>,
    pool: Sender<Vec<u8>>,
    piece: usize,
    reuse: Option<&dyn Reuse<Note = N>>,
) {
    let mut compressor = PieceCompressor::default();
    for p in rx {
        let (made, note) = match reuse.map(|r| r.get(&p.data)) {
            Some(Looked { gzip, note }) => {
                let found = gzip.is_some();
                (gzip, Some((note, found)))
            }
            None => (None, None),
        };
        let out = match made {
            Some(made) => made,
            None => {
                let mut out = Vec::with_capacity(piece + piece / 16);
                if compressor.compress(&p.data, &mut out).is_err() {
                    // Cannot happen with buffers of the bound's size; stop the pipeline.
                    return;
                }
                out
            }
        };
        let _ = pool.try_send(p.data);
        if tx
            .send(Piece {
                seq: p.seq,
                data: out,
                note,
            })
            .is_err()
        {
            return;
        }
    }
}

fn write_in_order<S: Sink>(
    rx: Receiver<Piece<S::Note>>,
    mut sink: S,
    pool: Sender<Vec<u8>>,
    piece: usize,
) -> io::Result<S> {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Piece<S::Note>> = BTreeMap::new();
    for p in rx {
        waiting.insert(p.seq, p);
        while let Some(Piece { data, note, .. }) = waiting.remove(&next) {
            sink.piece(&data, note)?;
            next += 1;
            if data.capacity() >= piece {
                let _ = pool.try_send(data);
            }
            // Buffers the pool has no room for are freed here.
        }
    }
    if !waiting.is_empty() {
        // A compressor stopped early: pieces are missing.
        return Err(io::Error::other("a compression thread stopped early"));
    }
    sink.flush()?;
    Ok(sink)
}

/// A writer that counts what passes through it and hands it to `update`
/// (a hasher's) before writing it on.
pub struct Tee<W, F> {
    inner: W,
    update: F,
    /// Bytes written so far.
    pub bytes: u64,
}

impl<W: Write, F: FnMut(&[u8])> Tee<W, F> {
    /// Wrap `inner`.
    pub fn new(inner: W, update: F) -> Self {
        Self {
            inner,
            update,
            bytes: 0,
        }
    }

    /// The wrapped writer and the hashing closure.
    pub fn into_parts(self) -> (W, F, u64) {
        (self.inner, self.update, self.bytes)
    }
}

impl<W: Write, F: FnMut(&[u8])> Write for Tee<W, F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        (self.update)(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn pieces_arrive_in_order_compressed_or_not() {
        let data: Vec<u8> = (0..(5 * 1000 + 17)).map(|i| (i % 251) as u8).collect();
        let (n, plain) = run::<_, _, io::Error>(false, 1000, Vec::new(), |p| {
            for part in data.chunks(333) {
                p.write_all(part)?;
            }
            Ok(7)
        })
        .expect("plain");
        assert_eq!((n, &plain), (7, &data));
        let ((), gz) = run::<_, _, io::Error>(true, 1000, Vec::new(), |p| {
            let mut from = data.as_slice();
            while p.read_from(&mut from, 100)? > 0 {}
            Ok(())
        })
        .expect("gzip");
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(gz.as_slice())
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, data);
        let ((), empty) =
            run::<_, _, io::Error>(true, 1000, Vec::new(), |_| Ok(())).expect("empty");
        assert!(!empty.is_empty(), "an empty stream is one empty member");
    }

    /// Pieces as the pipeline cuts `data` with `cut`, uncompressed.
    fn pieces_of(data: &[u8], cut: Cut, write_size: usize) -> Vec<Vec<u8>> {
        struct Collect(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);
        impl Reuse for Collect {
            type Note = ();
            fn get(&self, plain: &[u8]) -> Looked<()> {
                if let Ok(mut v) = self.0.lock() {
                    v.push(plain.to_vec());
                }
                Looked {
                    gzip: None,
                    note: (),
                }
            }
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collect = Collect(seen.clone());
        run_with::<_, _, io::Error>(true, cut, Some(&collect), Plain(Vec::new()), |p| {
            for part in data.chunks(write_size) {
                p.write_all(part)?;
            }
            Ok(())
        })
        .expect("run");
        let mut all = seen.lock().expect("lock").clone();
        // Compressors run in parallel: order the pieces as the stream has them.
        let mut ordered = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let i = all
                .iter()
                .position(|p| !p.is_empty() && rest.starts_with(p))
                .expect("a piece of the stream");
            let p = all.remove(i);
            rest = &rest[p.len()..];
            ordered.push(p);
        }
        ordered
    }

    /// The cuts of a gear hash over every byte, the plain rule: a cut
    /// where the hash has `mask`'s bits clear, at least `min` and at most
    /// `max` bytes into a piece.
    fn reference_cuts(data: &[u8], min: usize, mask: u64, max: usize) -> Vec<usize> {
        let (mut hash, mut len, mut cuts) = (0u64, 0usize, Vec::new());
        for &b in data {
            hash = (hash << 1).wrapping_add(GEAR[b as usize]);
            len += 1;
            if (len >= min && hash & mask == 0) || len >= max {
                cuts.push(len);
                len = 0;
            }
        }
        cuts
    }

    #[test]
    fn skipping_the_first_bytes_of_a_piece_cuts_where_hashing_every_byte_does() {
        let data = crate::noise(200_000, 0x9e37_79b9_7f4a_7c15);
        for (min, mask, max) in [
            (300, 255, 4000),
            (64, 63, 500),
            (10, 15, 100),
            (1000, 1023, 1001),
            (2000, 8191, 100_000),
            (100, (1 << 16) - 1, 150_000),
        ] {
            let want = reference_cuts(&data, min, mask, max);
            for write_size in [1, 77, 4096] {
                let got: Vec<usize> = pieces_of(&data, Cut::Content { min, mask, max }, write_size)
                    .iter()
                    .map(Vec::len)
                    .collect();
                assert_eq!(
                    got[..got.len() - 1],
                    want[..got.len() - 1],
                    "min {min} mask {mask} max {max} writes of {write_size}"
                );
            }
        }
    }

    #[test]
    fn content_defined_pieces_survive_an_edit_before_them() {
        let cut = Cut::Content {
            min: 1 << 10,
            mask: (1 << 12) - 1,
            max: 16 << 10,
        };
        let data = crate::noise(200 << 10, 0x1234_5678_9abc_def1);
        let before = pieces_of(&data, cut, 777);
        assert!(before.len() > 10, "{} pieces", before.len());
        assert!(before.iter().all(|p| p.len() <= 16 << 10));
        // The same whatever the writes' sizes.
        assert_eq!(pieces_of(&data, cut, 65_536), before);
        // Three bytes inserted near the start: all but the first pieces are
        // the very same bytes.
        let mut edited = data.clone();
        edited.splice(100..100, *b"new");
        let after = pieces_of(&edited, cut, 4096);
        let shared = after.iter().filter(|p| before.contains(p)).count();
        assert!(
            shared + 3 >= before.len(),
            "{shared} of {} kept",
            before.len()
        );
    }

    #[test]
    fn reused_pieces_give_the_same_stream() {
        type Memo = std::sync::Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>;
        struct Lookup<'m>(&'m Memo);
        impl Reuse for Lookup<'_> {
            type Note = Vec<u8>;
            fn get(&self, plain: &[u8]) -> Looked<Vec<u8>> {
                Looked {
                    gzip: self.0.lock().ok().and_then(|m| m.get(plain).cloned()),
                    note: plain.to_vec(),
                }
            }
        }
        /// Writes every piece and keeps the new ones; counts the reused.
        struct Keep<'m>(&'m Memo, Vec<u8>, usize);
        impl Sink for Keep<'_> {
            type Note = Vec<u8>;
            fn piece(&mut self, gzip: &[u8], note: Option<(Vec<u8>, bool)>) -> io::Result<()> {
                self.1.extend_from_slice(gzip);
                match note {
                    Some((_, true)) => self.2 += 1,
                    Some((plain, false)) => {
                        self.0.lock().expect("lock").insert(plain, gzip.to_vec());
                    }
                    None => {}
                }
                Ok(())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let memo = Memo::default();
        let data = crate::noise(3 << 20, 0x0bad_cafe_f00d_d00d);
        let go = |reuse: bool| {
            let lookup = Lookup(&memo);
            let reuse = reuse.then_some(&lookup as &dyn Reuse<Note = Vec<u8>>);
            let sink = Keep(&memo, Vec::new(), 0);
            let ((), Keep(_, out, reused)) =
                run_with::<_, _, io::Error>(true, Cut::LAYERS, reuse, sink, |p| p.write_all(&data))
                    .expect("run");
            (out, reused)
        };
        let (cold, _) = go(false);
        assert!(memo.lock().expect("lock").is_empty());
        assert_eq!(go(true), (cold.clone(), 0));
        let kept = memo.lock().expect("lock").len();
        assert!(kept > 1, "{kept} pieces kept");
        assert_eq!(go(true), (cold, kept), "from reused pieces");
    }

    #[test]
    fn a_failing_sink_is_the_error_reported() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let r = run::<_, _, io::Error>(true, 10, Full, |p| {
            for _ in 0..10_000 {
                p.write_all(b"0123456789")?;
            }
            Ok(())
        });
        match r {
            Err(Failed::Write(e)) => assert!(e.to_string().contains("disk full"), "{e}"),
            Err(Failed::Produce(e)) => panic!("the producer's error {e} was reported"),
            Ok(_) => panic!("a failing sink was not reported"),
        }
    }
}
