//! The image filesystem, which knows nothing of Dockerfiles: trees read
//! from tar archives without copying ([`tree`]) and sources matched by Go's
//! `filepath.Match` ([`glob`]).

pub mod glob;
pub mod tree;
