//! The image filesystem, which knows nothing of Dockerfiles: trees read
//! from tar archives without copying ([`tree`]), layers applied with
//! overlay whiteouts ([`overlay`]) and sources matched by Go's
//! `filepath.Match` ([`glob`]).

pub mod glob;
pub mod overlay;
pub mod tree;
