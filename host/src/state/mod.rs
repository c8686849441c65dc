//! The project (`.kiln/`) and its state files: finding the project like git
//! finds a repository, atomic writes, the state lock, and the component store.

mod atomic;
mod components;
mod project;

pub use atomic::write_atomic;
pub use components::{set_lock_timeout, Component, ComponentStore, SECRET_MARKER};
pub use project::Project;
