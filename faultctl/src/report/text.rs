//! The human-readable report (`--format text`, the default).
//!
//! Layout, in order:
//!
//! ```text
//! --- PASS: persist_failure (412ms, seed=7) ---
//!   syscall trace (17 events):
//!     #48 inventory persist(write) deny(EIO) [persist broken] /tmp/inventory.wal
//!     #183 inventory wal_write(write) deny(EIO) = -5 [WAL broken] /tmp/inventory.wal   (--trace all)
//!   fault rule on inventory: persist=deny(EIO) → [write,writev,pwrite64,fsync,fdatasync] (2 hits)
//!
//! --- FAIL: matrix_check_inventory_wal_broken (96ms, seed=7) ---
//!   reason: expected failure under fault (status 200)
//!   replay: faultctl run specs/named-ops.star --test matrix_check_inventory_wal_broken --seed 7
//!   syscall trace (6 events): none denied or delayed
//!   fault rule on inventory: wal_write=deny(EIO) → [write,…] path=/tmp/*.wal (0 hits)
//!   WARNING: rule wal_write=deny(EIO) on inventory never fired
//!     hint: …
//!
//! Fault Matrix: 2 scenarios × 2 faults = 4 cells
//! <table>
//! Failures:
//!   check_inventory × wal_broken: expected failure under fault (status 200)
//!
//! 7 passed, 1 failed
//! ```
//!
//! Every test gets a block, in run order (matrix cells included, so a failing cell shows its trace
//! and rules). Trace lines are printed for non-`allow` events only; the count in the trace header
//! counts every event. No colours; the output ends with the summary line and a newline.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::model::{
    EventReport, MatrixReport, Outcome, RuleReport, RunReport, TestKind, TestReport,
};

/// Renders the whole run as text: one block per test, one table per matrix, then the final
/// `N passed, N failed` line. The result ends with a newline (print it with `print!`).
pub fn render(report: &RunReport) -> String {
    let mut out = String::new();
    for test in &report.tests {
        let status = match test.result {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
        };
        let _ = writeln!(
            out,
            "--- {status}: {} ({}ms, seed={}) ---",
            test.name, test.duration_ms, test.seed
        );
        out.push_str(&test_details(&report.spec, test));
        out.push('\n');
    }
    for matrix in &report.matrices {
        render_matrix(&mut out, report, matrix);
        out.push('\n');
    }
    let _ = writeln!(out, "{} passed, {} failed", report.passed, report.failed);
    out
}

/// Everything under a test's header line, each line indented by two spaces: reason and replay
/// command (on failure), the syscall trace, the fault rules and a warning per rule that never
/// fired. Empty for a passing test without events or rules. Shared with the JUnit reporter.
pub(crate) fn test_details(spec: &str, test: &TestReport) -> String {
    let mut out = String::new();
    if test.result == Outcome::Fail {
        let reason = test.reason.as_deref().unwrap_or("(no reason recorded)");
        let _ = writeln!(out, "  reason: {}", continue_lines(reason, 10));
        let _ = writeln!(
            out,
            "  replay: faultctl run {} --test {} --seed {}",
            shell_word(spec),
            shell_word(&test.name),
            test.seed
        );
    }

    for line in &test.printed {
        let _ = writeln!(out, "  print: {line}");
    }
    for exit in &test.exits {
        let how = match (&exit.signal, exit.code) {
            (Some(signal), _) => format!("was killed by {signal}"),
            (None, Some(code)) => format!("exited with code {code}"),
            (None, None) => "ended".to_string(),
        };
        let _ = writeln!(out, "  service {} {how} during the test", exit.service);
    }

    let shown: Vec<&EventReport> = test
        .events
        .iter()
        .filter(|e| e.decision != "allow" && e.decision != "pass")
        .collect();
    if !test.events.is_empty() || !test.rules.is_empty() || test.dropped_events > 0 {
        let n = test.events.len();
        let mut noun = plural(n, "event", "events").to_string();
        if test.dropped_events > 0 {
            noun.push_str(&format!(", {} more dropped", test.dropped_events));
        }
        if shown.is_empty() {
            let _ = writeln!(out, "  syscall trace ({n} {noun}): none denied or delayed");
        } else {
            let _ = writeln!(out, "  syscall trace ({n} {noun}):");
        }
    }
    let seq_width = shown
        .iter()
        .map(|e| e.seq.to_string().len() + 1)
        .max()
        .unwrap_or(0);
    for event in &shown {
        out.push_str(&event_line(event, seq_width));
        out.push('\n');
    }

    for rule in &test.rules {
        let _ = writeln!(out, "  fault rule on {}: {}", rule.service, rule_text(rule));
    }
    for rule in test.rules.iter().filter(|r| r.hits == 0) {
        let _ = writeln!(out, "  WARNING: {}", never_fired(rule));
        let _ = writeln!(out, "    hint: {}", never_fired_hint(rule));
    }
    out
}

/// `#48 inventory persist(write) deny(EIO) = -5 [persist broken] /tmp/inventory.wal` (the return value
/// when the tracer saw it, named when it is an error the decision does not name: `observed = -512
/// ERESTARTSYS`), indented by four spaces, the `#seq` column right-aligned to `seq_width`.
fn event_line(event: &EventReport, seq_width: usize) -> String {
    let seq = format!("#{}", event.seq);
    if let Some(iface) = &event.interface {
        return proxy_line(event, iface, &format!("    {seq:>seq_width$}"));
    }
    let mut line = format!("    {seq:>seq_width$} {} ", event.service);
    match &event.op {
        Some(op) => {
            let _ = write!(line, "{op}({})", event.syscall);
        }
        None => line.push_str(&event.syscall),
    }
    line.push(' ');
    match (event.decision.as_str(), event.io_requested, event.io_done) {
        // short(4096→2048), lie(4096→0): what was asked and what faultd transferred.
        (decision @ ("short" | "lie"), Some(asked), Some(done)) => {
            let _ = write!(line, "{decision}({asked}\u{2192}{done})");
        }
        (decision, _, _) => line.push_str(&action_text(
            decision,
            event.errno.as_deref(),
            event.delay_ms,
        )),
    }
    if let Some(retval) = event.retval {
        let _ = write!(line, " = {retval}");
        // A deny already names its errno; any other failure is named after the number.
        if let Some(name) = event
            .errno
            .as_deref()
            .filter(|_| retval < 0 && !matches!(event.decision.as_str(), "deny" | "crash"))
        {
            let _ = write!(line, " {name}");
        }
    }
    if let Some(label) = &event.label {
        let _ = write!(line, " [{label}]");
    }
    if let Some(path) = &event.path {
        let _ = write!(line, " {path}");
    }
    // seccomp is the default backend; others are named.
    if let Some(backend) = event.backend.as_deref().filter(|b| *b != "seccomp") {
        let _ = write!(line, " via {backend}");
    }
    line
}

/// `#41 db.main postgres "INSERT INTO orders …" error(23505) [dup] 0.4ms`.
fn proxy_line(event: &EventReport, iface: &str, seq: &str) -> String {
    let mut line = format!("{seq} {}.{iface} {}", event.service, event.syscall);
    if let Some(request) = &event.request {
        let _ = write!(line, " {request:?}");
    }
    let action = match (&event.errno, event.delay_ms) {
        (_, Some(ms)) if event.decision == "delay" => format!("delay({ms}ms)"),
        (Some(detail), _) if event.decision == "closed" => format!("closed: {detail}"),
        (Some(detail), _) => format!("{}({detail})", event.decision),
        (None, _) => event.decision.clone(),
    };
    let _ = write!(line, " {action}");
    if let Some(label) = &event.label {
        let _ = write!(line, " [{label}]");
    }
    // How long the request took through the proxy (a delay is recorded as it starts).
    if let Some(ns) = event.latency_ns.filter(|_| event.decision != "delay") {
        let _ = write!(line, " {:.1}ms", ns as f64 / 1e6);
    }
    line
}

/// `deny(EIO)`, `delay(500ms)`, else the action as given (`allow`, or `deny` without an errno).
fn action_text(action: &str, errno: Option<&str>, delay_ms: Option<u64>) -> String {
    match (action, errno, delay_ms) {
        ("error" | "response", Some(answer), _) => format!("{action}({answer})"),
        ("deny", Some(errno), _) => format!("deny({errno})"),
        ("crash", Some(signal), _) => format!("crash({signal})"),
        ("delay", _, Some(ms)) => format!("delay({ms}ms)"),
        _ => action.to_string(),
    }
}

/// The rule's key as the user wrote it: the op name, else the syscalls it covers; for a protocol
/// fault the interface.
fn rule_key(rule: &RuleReport) -> String {
    if let Some(iface) = &rule.interface {
        return format!("{}.{iface}", rule.service);
    }
    match &rule.op {
        Some(op) => op.clone(),
        None => rule.syscalls.join(","),
    }
}

/// `key=action`, e.g. `wal_write=deny(EIO)`.
fn rule_head(rule: &RuleReport) -> String {
    format!(
        "{}={}",
        rule_key(rule),
        action_text(rule.action.as_str(), rule.errno.as_deref(), rule.delay_ms)
    )
}

/// `persist=deny(EIO) → [write,writev,pwrite64,fsync,fdatasync] path=/tmp/*.wal (2 hits)`; the
/// expansion is shown only for op rules (for a syscall rule it is the key itself), the backend only
/// when it is not seccomp (`via ebpf-lsm+seccomp`, a rule split across two). The label is left to the
/// trace lines.
fn rule_text(rule: &RuleReport) -> String {
    let mut text = rule_head(rule);
    if let Some(request) = &rule.request {
        let _ = write!(text, " {request}");
    }
    if rule.op.is_some() {
        let _ = write!(text, " → [{}]", rule.syscalls.join(","));
    }
    if let Some(path) = &rule.path {
        let _ = write!(text, " path={path}");
    }
    if let Some(backend) = rule
        .backend
        .as_deref()
        .filter(|b| !matches!(*b, "seccomp" | "proxy"))
    {
        let _ = write!(text, " via {backend}");
    }
    let _ = write!(
        text,
        " ({} {})",
        rule.hits,
        plural(rule.hits, "hit", "hits")
    );
    text
}

/// `rule wal_write=deny(EIO) on inventory never fired`.
fn never_fired(rule: &RuleReport) -> String {
    format!("rule {} on {} never fired", rule_head(rule), rule.service)
}

fn never_fired_hint(rule: &RuleReport) -> String {
    if rule.interface.is_some() {
        return "no matching request went through the proxy while the fault was active — check \
                that the consumer uses the interface's addr (the proxy), not internal_addr"
            .into();
    }
    let base = "the service made no matching syscall while the fault was active";
    match &rule.path {
        Some(glob) => format!(
            "{base} — the rule is path-filtered, and no call reached a path matching {glob}"
        ),
        None => format!(
            "{base} — the scenario may not exercise this operation, or the service uses a syscall \
             the rule does not cover"
        ),
    }
}

fn render_matrix(out: &mut String, report: &RunReport, matrix: &MatrixReport) {
    let rows = matrix.scenarios.len();
    let cols = matrix.faults.len();
    let cell = |r: usize, c: usize| {
        matrix
            .cells
            .get(r)
            .and_then(|row| row.get(c))
            .and_then(Option::as_ref)
    };
    let absent = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .filter(|&(r, c)| cell(r, c).is_none())
        .count();
    let _ = write!(
        out,
        "Fault Matrix: {rows} {} × {cols} {} = {} {}",
        plural(rows, "scenario", "scenarios"),
        plural(cols, "fault", "faults"),
        rows * cols,
        plural(rows * cols, "cell", "cells"),
    );
    if absent > 0 {
        let _ = write!(out, " ({absent} excluded or not selected)");
    }
    out.push_str("\n\n");

    // Cell texts, then column widths (in chars: `—` is one column but three bytes).
    let texts: Vec<Vec<String>> = (0..rows)
        .map(|r| {
            (0..cols)
                .map(|c| match cell(r, c) {
                    Some(cell) if cell.result == Outcome::Pass => {
                        format!("PASS ({}ms)", cell.duration_ms)
                    }
                    Some(_) => "FAIL".to_string(),
                    None => "—".to_string(),
                })
                .collect()
        })
        .collect();
    let width = |s: &str| s.chars().count();
    let first = matrix.scenarios.iter().map(|s| width(s)).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            texts
                .iter()
                .map(|row| width(&row[c]))
                .chain(std::iter::once(width(&matrix.faults[c])))
                .max()
                .unwrap_or(0)
        })
        .collect();

    // Pads every column but the last, so no line ends in spaces.
    let line = |head: &str, cells: &[&str]| {
        let mut s = pad(head, first, cols > 0);
        for (c, text) in cells.iter().enumerate() {
            s.push_str(" │ ");
            s.push_str(&pad(text, widths[c], c + 1 < cols));
        }
        s.trim_end().to_string()
    };
    let faults: Vec<&str> = matrix.faults.iter().map(String::as_str).collect();
    let _ = writeln!(out, "{}", line("", &faults));
    let mut sep = "─".repeat(first + 1);
    for (c, w) in widths.iter().enumerate() {
        sep.push('┼');
        sep.push_str(&"─".repeat(if c + 1 < cols { w + 2 } else { w + 1 }));
    }
    let _ = writeln!(out, "{sep}");
    for (r, scenario) in matrix.scenarios.iter().enumerate() {
        let cells: Vec<&str> = texts[r].iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(scenario, &cells));
    }

    let mut failures = Vec::new();
    for (r, scenario) in matrix.scenarios.iter().enumerate() {
        for (c, fault) in matrix.faults.iter().enumerate() {
            if let Some(cell) = cell(r, c).filter(|cell| cell.result == Outcome::Fail) {
                failures.push((scenario, fault, cell));
            }
        }
    }
    if failures.is_empty() {
        return;
    }
    out.push_str("\nFailures:\n");
    for (scenario, fault, cell) in failures {
        let head = format!("  {scenario} × {fault}: ");
        let reason = cell.reason.as_deref().unwrap_or("(no reason recorded)");
        let _ = writeln!(out, "{head}{}", continue_lines(reason, width(&head)));
        // The cell's own test knows which rules never fired: say so right here.
        let test = report.tests.iter().find(|t| {
            t.kind == TestKind::MatrixCell
                && t.scenario.as_deref() == Some(scenario.as_str())
                && t.fault.as_deref() == Some(fault.as_str())
        });
        for rule in test.iter().flat_map(|t| &t.rules).filter(|r| r.hits == 0) {
            let _ = writeln!(out, "    note: {}", never_fired(rule));
        }
    }
}

fn pad(s: &str, width: usize, pad: bool) -> String {
    let mut s = s.to_string();
    if pad {
        let n = width.saturating_sub(s.chars().count());
        s.extend(std::iter::repeat_n(' ', n));
    }
    s
}

/// Indents every line after the first by `indent` spaces, so a multi-line message stays under
/// its label.
fn continue_lines(text: &str, indent: usize) -> String {
    let mut out = String::new();
    for (i, line) in text.trim_end().lines().enumerate() {
        let line = line.trim_end();
        if i > 0 {
            out.push('\n');
            if !line.is_empty() {
                out.extend(std::iter::repeat_n(' ', indent));
            }
        }
        out.push_str(line);
    }
    out
}

/// The word as a POSIX shell reads it: as is when it has no special characters, else quoted.
fn shell_word(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

fn plural<N: PartialEq + From<u8>>(n: N, one: &'static str, many: &'static str) -> &'static str {
    if n == N::from(1) { one } else { many }
}
