//! Where finished images go (go-containerregistry's `remote` and `tarball`
//! writers): a registry over the distribution API ([`registry`]) or an
//! archive that is both Docker's `docker save` format and an OCI image
//! layout ([`archive`]).

pub mod archive;
pub mod registry;
