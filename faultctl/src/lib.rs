//! faultctl: evaluates Starlark fault-injection specs, runs their tests through faultd, reports.

pub mod client;
pub mod collect;
pub mod generate;
pub mod report;
pub mod runner;
pub mod spec;

/// This build's version and `git describe` (e.g. `0.1.0 (v0.1-12-gabc123-dirty)`), as faultd's.
pub const VERSION: &str = faultd_model::VERSION;
