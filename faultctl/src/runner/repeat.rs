//! `--runs N`: the selection run N times with consecutive seeds, and which tests changed result
//! between runs (flaky), with the seeds that replay each outcome.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::model::{Outcome, RunReport};

/// One test's results over the runs: the seeds it passed with and those it failed with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repeated {
    /// Seeds of the runs in which it passed.
    pub passed: Vec<u64>,
    /// Seeds of the runs in which it failed, with the first failure's reason.
    pub failed: Vec<u64>,
    /// The reason of its first failure.
    pub reason: Option<String>,
}

impl Repeated {
    /// Passed in some runs and failed in others.
    pub fn flaky(&self) -> bool {
        !self.passed.is_empty() && !self.failed.is_empty()
    }
}

/// Per test (in first-seen order), its results over `runs`.
pub fn tally(runs: &[RunReport]) -> Vec<(String, Repeated)> {
    let mut order = Vec::new();
    let mut by_name: BTreeMap<String, Repeated> = BTreeMap::new();
    for run in runs {
        for t in &run.tests {
            let entry = by_name.entry(t.name.clone()).or_insert_with(|| {
                order.push(t.name.clone());
                Repeated::default()
            });
            match t.result {
                Outcome::Pass => entry.passed.push(run.seed),
                Outcome::Fail => {
                    entry.failed.push(run.seed);
                    if entry.reason.is_none() {
                        entry.reason = t.reason.clone();
                    }
                }
            }
        }
    }
    order
        .into_iter()
        .map(|n| {
            let r = by_name.remove(&n).unwrap_or_default();
            (n, r)
        })
        .collect()
}

/// The summary printed after `--runs N`: flaky tests with the seeds of each outcome, then tests that
/// failed every time.
pub fn summary(spec: &str, runs: &[RunReport]) -> String {
    let mut out = String::new();
    let seeds: Vec<u64> = runs.iter().map(|r| r.seed).collect();
    let _ = writeln!(
        out,
        "\n{} runs (seeds {})",
        runs.len(),
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let tally = tally(runs);
    let list = |s: &[u64]| s.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    let flaky: Vec<_> = tally.iter().filter(|(_, r)| r.flaky()).collect();
    if flaky.is_empty() {
        let _ = writeln!(
            out,
            "no flaky test: every test had the same result in every run"
        );
    }
    for (name, r) in &flaky {
        let _ = writeln!(
            out,
            "FLAKY {name}: passed with seed {}; failed with seed {} ({})",
            list(&r.passed),
            list(&r.failed),
            r.reason.as_deref().unwrap_or("no reason")
        );
        let _ = writeln!(
            out,
            "  replay the failure: faultctl run {spec} --test {name} --seed {}",
            r.failed[0]
        );
    }
    for (name, _) in tally.iter().filter(|(_, r)| r.passed.is_empty()) {
        let _ = writeln!(out, "FAIL {name}: failed in every run");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{TestKind, TestReport};

    fn run(seed: u64, results: &[(&str, bool)]) -> RunReport {
        let tests: Vec<TestReport> = results
            .iter()
            .map(|(name, pass)| TestReport {
                name: (*name).into(),
                kind: TestKind::Test,
                scenario: None,
                fault: None,
                result: if *pass { Outcome::Pass } else { Outcome::Fail },
                reason: (!pass).then(|| format!("boom {seed}")),
                duration_ms: 1,
                seed,
                rules: Vec::new(),
                events: Vec::new(),
                dropped_events: 0,
                exits: Vec::new(),
                printed: Vec::new(),
            })
            .collect();
        RunReport {
            spec: "s.star".into(),
            seed,
            passed: 0,
            failed: 0,
            tests,
            matrices: Vec::new(),
        }
    }

    #[test]
    fn flaky_tests_are_named_with_the_seeds_of_each_outcome() {
        let runs = [
            run(7, &[("a", true), ("b", true), ("c", false)]),
            run(8, &[("a", false), ("b", true), ("c", false)]),
            run(9, &[("a", true), ("b", true), ("c", false)]),
        ];
        let t = tally(&runs);
        assert_eq!(t[0].0, "a");
        assert_eq!(
            t[0].1,
            Repeated {
                passed: vec![7, 9],
                failed: vec![8],
                reason: Some("boom 8".into())
            }
        );
        assert!(!t[1].1.flaky() && !t[2].1.flaky());
        let s = summary("s.star", &runs);
        assert!(s.contains("3 runs (seeds 7, 8, 9)"), "{s}");
        assert!(
            s.contains("FLAKY a: passed with seed 7, 9; failed with seed 8 (boom 8)"),
            "{s}"
        );
        assert!(s.contains("faultctl run s.star --test a --seed 8"), "{s}");
        assert!(s.contains("FAIL c: failed in every run"), "{s}");
        assert!(!s.contains(" b"), "{s}");
        let s = summary("s.star", &runs[1..2]);
        assert!(s.contains("no flaky test"), "{s}");
    }
}
