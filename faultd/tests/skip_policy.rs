//! The skip-or-fail decision every test that cannot run goes through (`support/skip.rs`): skip on a
//! developer machine, fail under `CI=true`. The value of `CI` is passed in; the process environment
//! is never changed.

#[path = "support/skip.rs"]
mod skip;

use skip::{WhenUnavailable, cannot_run_under, when_unavailable};

#[test]
fn ci_true_fails_instead_of_skipping() {
    assert_eq!(when_unavailable(Some("true")), WhenUnavailable::Fail);
    assert_eq!(when_unavailable(Some("TRUE")), WhenUnavailable::Fail);
    assert_eq!(when_unavailable(Some("1")), WhenUnavailable::Fail);
}

#[test]
fn unset_or_other_values_skip() {
    assert_eq!(when_unavailable(None), WhenUnavailable::Skip);
    assert_eq!(when_unavailable(Some("")), WhenUnavailable::Skip);
    assert_eq!(when_unavailable(Some("false")), WhenUnavailable::Skip);
    assert_eq!(when_unavailable(Some("0")), WhenUnavailable::Skip);
}

#[test]
#[should_panic(
    expected = "forced_unavailable: needs root (forced), but CI=true: failing instead of skipping"
)]
fn an_unavailable_condition_panics_under_ci_true() {
    cannot_run_under(Some("true"), "forced_unavailable", "needs root (forced)");
}

#[test]
fn an_unavailable_condition_only_skips_without_ci() {
    // Returns (after printing SKIPPED ...) instead of panicking.
    cannot_run_under(None, "forced_unavailable", "needs root (forced)");
    cannot_run_under(Some("false"), "forced_unavailable", "needs root (forced)");
}
