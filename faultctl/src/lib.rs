//! faultctl: evaluates Starlark fault-injection specs, runs their tests through faultd, reports.

pub mod client;
pub mod collect;
pub mod report;
pub mod runner;
pub mod spec;
