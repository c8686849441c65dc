//! Archive primitives shared by the host (`kiln context pack --gzip`) and
//! the `oci` builder (image layers), so each rule has one copy.
//!
//! - [`gzip`]: gzip members with one rule for what is stored rather than
//!   compressed, and [`gzip::gzip_parallel`] over every core.

pub mod gzip;
