//! Components as commands use them: a registered component (or a flavor
//! with an inline config) resolved to its flavor, compiled schema and
//! validated config.

mod resolved;

pub use resolved::{RegistryAddress, ResolvedComponent};
