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

struct Piece {
    seq: u64,
    data: Vec<u8>,
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
pub struct Pieces {
    buf: Vec<u8>,
    size: usize,
    seq: u64,
    tx: Sender<Piece>,
    pool: Receiver<Vec<u8>>,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the pipeline was closed")
}

impl Pieces {
    fn send(&mut self) -> io::Result<()> {
        let fresh = self
            .pool
            .try_recv()
            .map(|mut v| {
                v.clear();
                v
            })
            .unwrap_or_else(|_| Vec::with_capacity(self.size));
        let data = std::mem::replace(&mut self.buf, fresh);
        self.tx
            .send(Piece {
                seq: self.seq,
                data,
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
        let want = ((self.size - start) as u64).min(max) as usize;
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
        if self.buf.len() == self.size {
            self.send()?;
        }
        Ok(n)
    }
}

impl Write for Pieces {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (self.size - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.size {
            self.send()?;
        }
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
    let piece = piece.max(1);
    let workers = if gzip {
        thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        0
    };
    // Pieces in flight: at most `cap` queued per stage, plus one per worker.
    let cap = workers.max(1);
    let (raw_tx, raw_rx) = bounded::<Piece>(cap);
    let (done_tx, done_rx) = bounded::<Piece>(cap);
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
            compressors.push(scope.spawn(move || compress(rx, tx, pool, piece)));
        }
        drop(raw_rx);
        let next_stage = if gzip { raw_tx } else { done_tx.clone() };
        drop(done_tx);
        let mut pieces = Pieces {
            buf: Vec::with_capacity(piece),
            size: piece,
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

fn compress(rx: Receiver<Piece>, tx: Sender<Piece>, pool: Sender<Vec<u8>>, piece: usize) {
    let mut compressor = PieceCompressor::default();
    for p in rx {
        let mut out = Vec::with_capacity(piece + piece / 16);
        if compressor.compress(&p.data, &mut out).is_err() {
            // Cannot happen with buffers of the bound's size; stop the pipeline.
            return;
        }
        let _ = pool.try_send(p.data);
        if tx
            .send(Piece {
                seq: p.seq,
                data: out,
            })
            .is_err()
        {
            return;
        }
    }
}

fn write_in_order<W: Write>(
    rx: Receiver<Piece>,
    mut sink: W,
    pool: Sender<Vec<u8>>,
    piece: usize,
) -> io::Result<W> {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for p in rx {
        waiting.insert(p.seq, p.data);
        while let Some(data) = waiting.remove(&next) {
            sink.write_all(&data)?;
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
