//! The integration tests' helpers are kiln-test-support's (`tests/support`),
//! shared with the plugins' tests.

pub use kiln_test_support::*;
