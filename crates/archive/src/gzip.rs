//! Gzip as kiln writes it: data cut into pieces, each one gzip member
//! (members concatenate into one valid stream, which every gzip reader
//! reads), each either deflated at level 6 or, when it looks
//! incompressible, stored. One rule for the host's context archives and the
//! `oci` builder's layers.

/// Size of the pieces compressed independently.
pub const PIECE: usize = 1 << 20;

/// Order-0 entropy (bits per byte) above which a piece is stored, not
/// compressed: random or already-compressed data, which deflate cannot
/// shrink but spends most of its time on.
const STORE_ABOVE_BITS: f64 = 7.9;

/// How blobs are made from tars, for cache keys: a cache never hands out a
/// blob made another way, which would change the digest.
pub const BLOB_FORMAT: &str = "gzip-l6-gear256k-1m-4m-store7.9-probe32k";

/// Whether `piece` looks incompressible: order-0 entropy above the bound,
/// and a 32 KiB sample of it does not shrink by 3% at level 1 (repeated
/// random blocks have high entropy yet compress well).
pub fn incompressible(piece: &[u8]) -> bool {
    if piece.len() < 4096 || !high_entropy(piece) {
        return false;
    }
    let sample = &piece[..piece.len().min(32 << 10)];
    let mut probe =
        libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).unwrap_or_default());
    let mut out = vec![0u8; probe.deflate_compress_bound(sample.len())];
    probe
        .deflate_compress(sample, &mut out)
        .is_ok_and(|n| n * 100 > sample.len() * 97)
}

fn high_entropy(piece: &[u8]) -> bool {
    let mut counts = [0u32; 256];
    for &b in piece {
        counts[b as usize] += 1;
    }
    let n = piece.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits > STORE_ABOVE_BITS
}

/// Compresses one piece into one gzip member by the rule above: stored
/// when [`incompressible`], else deflated at level 6. The host's context
/// pipeline and [`gzip_parallel`] both use it.
pub struct PieceCompressor {
    deflate: libdeflater::Compressor,
    store: libdeflater::Compressor,
}

impl Default for PieceCompressor {
    fn default() -> Self {
        let level = |l| libdeflater::CompressionLvl::new(l).unwrap_or_default();
        Self {
            deflate: libdeflater::Compressor::new(level(6)),
            store: libdeflater::Compressor::new(level(0)),
        }
    }
}

impl PieceCompressor {
    /// Append `piece` as one gzip member to `out`.
    pub fn compress(&mut self, piece: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let c = if incompressible(piece) {
            &mut self.store
        } else {
            &mut self.deflate
        };
        let at = out.len();
        out.resize(at + c.gzip_compress_bound(piece.len()), 0);
        let n = c
            .gzip_compress(piece, &mut out[at..])
            .map_err(|e| format!("gzip: {e:?}"))?;
        out.truncate(at + n);
        Ok(())
    }
}

/// `data` as concatenated gzip members, one per piece cut as layers are
/// ([`crate::pipeline::Cut::LAYERS`]), compressed on every core (through
/// [`crate::pipeline`]). Any gzip reader (Go's, which
/// the Docker daemon and containerd use, zlib's, `gzip -d`) reads the
/// members as one stream.
pub fn gzip_parallel(data: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    crate::pipeline::run_with(
        true,
        crate::pipeline::Cut::LAYERS,
        None,
        crate::pipeline::Plain(Vec::with_capacity(data.len() / 2)),
        |p| p.write_all(data),
    )
    .map(|((), crate::pipeline::Plain(blob))| blob)
    .map_err(|e| match e {
        crate::pipeline::Failed::Produce(e) | crate::pipeline::Failed::Write(e) => {
            format!("gzip: {e}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_gzip_reads_back_as_one_stream() {
        use std::io::Read;
        let data: Vec<u8> = (0..(3 * PIECE + 17)).map(|i| (i % 251) as u8).collect();
        let blob = gzip_parallel(&data).expect("gzip");
        assert_eq!(blob, gzip_parallel(&data).expect("gzip"), "deterministic");
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(blob.as_slice())
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, data);
        // Random bytes are stored, and still read back.
        let noise = crate::noise(PIECE, 0x9e37_79b9_7f4a_7c15);
        assert!(incompressible(&noise));
        assert!(!incompressible(&data[..PIECE]));
        let blob = gzip_parallel(&noise).expect("gzip");
        assert!(blob.len() > noise.len() && blob.len() < noise.len() + 1024);
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(blob.as_slice())
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, noise);
        let empty = gzip_parallel(&[]).expect("gzip");
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(empty.as_slice())
            .read_to_end(&mut back)
            .expect("gunzip");
        assert!(back.is_empty());
    }
}
