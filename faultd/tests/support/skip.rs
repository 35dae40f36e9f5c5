//! The one way a test (or bench) says it cannot run here: locally it prints `SKIPPED <test>: <reason>`
//! and the caller returns, so it counts as passed; under `CI=true` it panics with the reason instead, so
//! a regression that makes root, a cgroup mount, a backend or a tool unavailable on CI turns the
//! suite red instead of silently green.
//!
//! Shared by every test-support module of the workspace: `faultd/tests/support` (as `support::skip`),
//! `faultd/benches/common`, faultd's unit tests (as `crate::test_skip`) and `faultctl/tests` include
//! this file with `#[path]`. Its own tests are in `faultd/tests/skip_policy.rs`.

#![allow(
    unreachable_pub,
    reason = "included by tests, benches and unit tests; public for the first"
)]
#![allow(dead_code)]

/// What to do about a test that cannot run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnavailable {
    /// Print why and return: the test counts as passed (developer machines).
    Skip,
    /// Panic with the reason: the test fails (CI, which provides everything the suite needs).
    Fail,
}

/// The decision for a given value of the `CI` environment variable (`None`: unset or not UTF-8).
/// `true` (any case) or `1` means CI; anything else, or nothing, means a developer machine.
pub fn when_unavailable(ci: Option<&str>) -> WhenUnavailable {
    match ci.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => WhenUnavailable::Fail,
        _ => WhenUnavailable::Skip,
    }
}

/// `test` cannot run because of `reason` (phrased to follow "test: ", e.g. "needs root (cgroups)" or
/// "bpftool is not installed"). Panics under `CI=true`; otherwise prints `SKIPPED test: reason` and
/// returns, and the caller returns too.
pub fn cannot_run(test: &str, reason: &str) {
    cannot_run_under(std::env::var("CI").ok().as_deref(), test, reason);
}

/// [`cannot_run`] with the value of `CI` passed in, so the decision is testable without touching the
/// process environment.
pub fn cannot_run_under(ci: Option<&str>, test: &str, reason: &str) {
    match when_unavailable(ci) {
        WhenUnavailable::Fail => panic!(
            "{test}: {reason}, but CI={}: failing instead of skipping",
            ci.unwrap_or_default()
        ),
        WhenUnavailable::Skip => eprintln!("SKIPPED {test}: {reason}"),
    }
}

/// `true` when `available`; otherwise [`cannot_run`] with the reason `why` gives, and `false`.
pub fn runs_if(available: bool, test: &str, why: impl FnOnce() -> String) -> bool {
    if !available {
        cannot_run(test, &why());
    }
    available
}
