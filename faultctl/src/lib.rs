//! faultctl: evaluates Starlark fault-injection specs, runs their tests through faultd, reports.

pub mod report;
