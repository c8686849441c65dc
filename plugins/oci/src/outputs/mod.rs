//! Where finished images go (go-containerregistry's `remote` and `tarball`
//! writers): a registry over the distribution API ([`registry`]) or an
//! archive that is both Docker's `docker save` format and an OCI image
//! layout ([`archive`]), or the image's filesystem, in a folder or a tar
//! ([`filesystem`]).

pub mod archive;
pub mod filesystem;
pub mod registry;
