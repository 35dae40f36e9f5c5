//! The JUnit XML report (`--junit FILE`), for CI systems.
//!
//! One `<testsuite>` per run (named after the spec), one `<testcase>` per test with
//! `classname` = the test's kind. A failing test carries `<failure message="reason">` whose text
//! is the reason, the replay command, the syscall trace and the fault rules, as in the text
//! report; a passing test with a trace carries it in `<system-out>`.

use std::fmt::Write as _;

use super::model::{Outcome, RunReport, TestKind};
use super::text;

/// Renders the run as a JUnit XML document (UTF-8, ending with a newline).
pub fn render(report: &RunReport) -> String {
    let tests = report.tests.len();
    let failures = report
        .tests
        .iter()
        .filter(|t| t.result == Outcome::Fail)
        .count();
    let total_ms: u64 = report.tests.iter().map(|t| t.duration_ms).sum();

    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"faultctl\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{}\">",
        seconds(total_ms)
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{}\">",
        attr(&report.spec),
        seconds(total_ms)
    );
    out.push_str("    <properties>\n");
    let _ = writeln!(
        out,
        "      <property name=\"spec\" value=\"{}\"/>",
        attr(&report.spec)
    );
    let _ = writeln!(
        out,
        "      <property name=\"seed\" value=\"{}\"/>",
        report.seed
    );
    out.push_str("    </properties>\n");

    for test in &report.tests {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\"",
            attr(&test.name),
            kind_name(test.kind),
            seconds(test.duration_ms)
        );
        let details = dedent(&text::test_details(&report.spec, test));
        match test.result {
            Outcome::Fail => {
                let reason = test.reason.as_deref().unwrap_or("(no reason recorded)");
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    attr(reason),
                    body(&details)
                );
            }
            Outcome::Pass if details.is_empty() => out.push_str("/>\n"),
            Outcome::Pass => {
                let _ = writeln!(
                    out,
                    ">\n      <system-out>{}</system-out>\n    </testcase>",
                    body(&details)
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// The kind as the JSON report spells it.
fn kind_name(kind: TestKind) -> &'static str {
    match kind {
        TestKind::Test => "test",
        TestKind::Scenario => "scenario",
        TestKind::FaultScenario => "fault_scenario",
        TestKind::MatrixCell => "matrix_cell",
    }
}

/// Milliseconds as JUnit's seconds, `0.412`.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The text report's detail lines without their two-space indent.
fn dedent(details: &str) -> String {
    details
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("  ").unwrap_or(line)))
        .collect()
}

/// Escapes an attribute value: markup characters, quotes, and whitespace that attribute
/// normalization would otherwise turn into spaces.
fn attr(s: &str) -> String {
    escape(s, true)
}

/// Escapes element text.
fn body(s: &str) -> String {
    escape(s, false)
}

/// XML 1.0 escaping. Characters XML cannot carry at all (most C0 controls, e.g. a terminal's
/// ESC, and the non-characters U+FFFE/U+FFFF) become U+FFFD.
fn escape(s: &str, in_attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if in_attr => out.push_str("&quot;"),
            '\'' if in_attr => out.push_str("&apos;"),
            '\n' if in_attr => out.push_str("&#10;"),
            '\t' if in_attr => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}' => {
                out.push(c)
            }
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}
