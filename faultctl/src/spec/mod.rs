//! The spec language: Starlark plus the builtins of `specs/*.star` (services, named ops, fault
//! assumptions, scenarios, matrices, steps, assertions).
//!
//! A spec is parsed and evaluated on its own thread ([`load`]); the result is a plain [`Spec`]
//! whose tests the runner executes one by one through [`SpecRuntime::run_body`].
//!
//! Conventions worth knowing:
//! - A relative `binary` containing a `/` is resolved against the spec file's directory; a bare
//!   name is looked up in `PATH` by faultd.
//! - `probability=` takes a fraction (`0.2`), a percentage string (`"20%"`) or a whole number of
//!   percent (`20`); `"1%"` is one percent (Faultbox reads it as 100 %), and the ambiguous `1` is an
//!   error (see [`units::parse_probability`]).
//! - Durations are strings: `"500ms"`, `"2s"`, `"1m"`, `"1m30s"`.
//! - Tests run in source order (the position of the declaration), matrix cells row by row.

mod assertions;
mod ast_scan;
mod builtins;
mod context;
mod db_steps;
pub mod limits;
pub mod load_errors;
pub mod model;
mod modules;
mod rules;
mod steps;
mod timeline;
pub mod units;
mod validate;
mod values;
pub mod wire;
mod wiring;
mod worker;

pub use context::TestSession;
pub use load_errors::{Location, SpecError};
pub use model::Spec;
pub use worker::{SpecRuntime, load};

#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod mock_tests;
#[cfg(test)]
mod peer_tests;
#[cfg(test)]
mod storage_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_protocol;
