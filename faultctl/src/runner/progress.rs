//! The progress line `faultctl run` prints on stderr as each test finishes, only when stderr is a
//! terminal (a log or a pipe gets the report alone).

use crate::report::model::{Outcome, TestReport};

/// Prints a line per finished test, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    shown: bool,
}

impl Progress {
    /// Progress for a stderr that is (or is not) a terminal.
    pub fn new(stderr_is_terminal: bool) -> Progress {
        Progress {
            shown: stderr_is_terminal,
        }
    }

    /// The line for the `done`th of `total` tests to finish, `[3/8] PASS name (12ms)`; `None` when
    /// progress is not shown.
    pub fn line(&self, done: usize, total: usize, test: &TestReport) -> Option<String> {
        if !self.shown {
            return None;
        }
        let result = match test.result {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
        };
        Some(format!(
            "[{done}/{total}] {result} {} ({}ms)",
            test.name, test.duration_ms
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::TestKind;

    fn report(result: Outcome) -> TestReport {
        TestReport {
            name: "test_one".into(),
            kind: TestKind::Test,
            scenario: None,
            fault: None,
            result,
            reason: None,
            duration_ms: 12,
            seed: 1,
            rules: Vec::new(),
            events: Vec::new(),
            dropped_events: 0,
            exits: Vec::new(),
            printed: Vec::new(),
        }
    }

    #[test]
    fn a_line_per_test_on_a_terminal_only() {
        let tty = Progress::new(true);
        assert_eq!(
            tty.line(3, 8, &report(Outcome::Pass)).as_deref(),
            Some("[3/8] PASS test_one (12ms)")
        );
        assert_eq!(
            tty.line(8, 8, &report(Outcome::Fail)).as_deref(),
            Some("[8/8] FAIL test_one (12ms)")
        );
        assert_eq!(
            Progress::new(false).line(3, 8, &report(Outcome::Pass)),
            None
        );
    }
}
