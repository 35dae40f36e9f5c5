//! The fault rule model shared by faultd and faultctl.
//!
//! Both sides of the wire use these types and tables, so a spec is checked at load with the same code
//! that decides at run time: [`action::Action`] (what a rule does), [`backend`] (the enforcement
//! backends and what each can enforce in principle), [`syscalls`] (names, numbers, families, errno and
//! signal tables) and [`names`] (which names may become paths).

pub mod action;
pub mod backend;
pub mod errno;
pub mod names;
pub mod syscalls;

/// This build's version and `git describe` (e.g. `0.1.0 (v0.1-12-gabc123-dirty)`): faultd's and
/// faultctl's, which compare them to warn about a mismatch.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FAULTD_GIT_DESCRIBE"),
    ")"
);

pub use action::{Action, Fraction, PowerLossMode, Trigger};
pub use backend::{BackendKind, RuleShape};
