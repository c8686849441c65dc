//! Archive primitives shared by the host (`kiln context pack --gzip`) and
//! the `oci` builder (image layers), so each rule has one copy.
//!
//! - [`gzip`]: gzip members with one rule for what is stored rather than
//!   compressed, and [`gzip::gzip_parallel`] over every core.
//! - [`pipeline`]: a stream cut into pieces, gzip'd on every core, written
//!   in order, in bounded memory.
//! - [`atomic`]: files that appear whole or not at all.
//! - [`glob`]: Go's `filepath.Match`.
//! - [`tar`]: deterministic tar headers (GNU long names as Docker writes them).
//! - [`path`]: Go's `path.Clean`, inside a root, and the escape check.
//! - [`identity`]: a file's identity (device, inode, size, times), as git's
//!   index trusts it.

pub mod atomic;
pub mod glob;
pub mod gzip;
pub mod identity;
pub mod path;
pub mod pipeline;
pub mod tar;

/// `len` bytes that gzip cannot shrink (xorshift64 from `seed`), for tests.
#[cfg(test)]
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
