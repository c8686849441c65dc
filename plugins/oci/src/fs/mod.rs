//! The image filesystem, which knows nothing of Dockerfiles: trees read
//! from tar archives without copying ([`tree`]), layers applied with
//! overlay whiteouts ([`overlay`]) and sources matched by Go's
//! `filepath.Match` ([`glob`]); names that are not UTF-8 kept exactly
//! ([`name`]).

pub mod glob;
pub mod name;
pub mod overlay;
pub mod tree;
