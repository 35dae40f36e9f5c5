//! faultd: a fault-injection engine for services under test.
//!
//! It launches the services of a session, each in its own cgroup, makes chosen syscalls of chosen
//! services fail or stall through an enforcement backend, runs scenario steps against their interfaces
//! and numbers every decision and lifecycle change in one trace. [`engine::Engine`] owns all of it;
//! [`api`] exposes it as the `faultd.v1` gRPC service, both from the daemon binary and in-process
//! ([`embedded`]).

mod api;
pub mod auth;
pub mod cgroup;
pub mod config;
pub mod embedded;
pub mod enforce;
mod engine;
mod health;
mod http;
mod launch;
pub mod probe;
pub mod proxy;
mod reaper;
pub mod rules;
pub mod server;
mod session;
mod step;
mod step_db;
pub use faultd_model::syscalls;
pub mod trace;
mod watchdog;

/// What unit tests do when they cannot run here (shared with the integration tests).
#[cfg(test)]
#[path = "../tests/support/skip.rs"]
mod skip;

pub use engine::{Engine, EngineError as Error, Limits};

/// The protobuf form of an event, as a watcher receives it (public for the benchmarks).
#[doc(hidden)]
pub use api::event_message;
pub use launch::RunAs;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/faultd/faultd.sock";

/// This build's version and `git describe` (e.g. `0.1.0 (v0.1-12-gabc123-dirty)`).
pub const VERSION: &str = faultd_model::VERSION;
