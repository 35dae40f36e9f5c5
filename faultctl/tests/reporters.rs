//! Golden tests of the text, JSON and JUnit reporters, on a hand-built run of the named-ops
//! chapter: plain scenarios, fault scenarios with deny events on named ops, a delay rule, and a
//! 2 × 2 fault matrix whose `check_inventory × wal_broken` cell fails because its `wal_write`
//! rule never fired.
//!
//! Regenerate the goldens with `UPDATE_GOLDEN=1 cargo test -p faultctl --test reporters`, then
//! read the diff (`git diff faultctl/tests/golden`) before keeping it.

use std::path::PathBuf;

use faultctl::report::model::{
    ActionKind, ExitReport, MatrixCell, MatrixReport, Outcome, RuleReport, TestKind,
};
use faultctl::report::{json, junit, text};

#[path = "reporters/sample.rs"]
mod sample;
use sample::*;

/// Compares `actual` with `tests/golden/<name>`, or rewrites the file when `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, actual: &str) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "golden", name]
        .iter()
        .collect();
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}\n(create it with UPDATE_GOLDEN=1 cargo test -p faultctl --test reporters)",
            path.display()
        )
    });
    if expected == actual {
        return;
    }
    let (exp, act): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let line = exp
        .iter()
        .zip(&act)
        .position(|(e, a)| e != a)
        .unwrap_or(exp.len().min(act.len()));
    panic!(
        "{} differs from the rendered output at line {}:\n  golden: {:?}\n  actual: {:?}\n\
         --- actual output ---\n{actual}\n---\n\
         If the change is intended: UPDATE_GOLDEN=1 cargo test -p faultctl --test reporters, \
         then review `git diff faultctl/tests/golden`.",
        path.display(),
        line + 1,
        exp.get(line),
        act.get(line),
    );
}

#[test]
fn text_golden() {
    check_golden("report.txt", &text::render(&sample()));
}

#[test]
fn json_golden() {
    check_golden("report.json", &json::render(&sample()));
}

#[test]
fn junit_golden() {
    check_golden("report.xml", &junit::render(&sample()));
}

#[test]
fn text_has_the_lines_the_issue_asks_for() {
    let out = text::render(&sample());
    for needle in [
        "--- PASS: persist_failure (412ms, seed=7) ---\n",
        "  syscall trace (3 events):\n",
        "    #48 inventory persist(write) deny(EIO) [persist broken] /tmp/inventory.wal\n",
        "  fault rule on inventory: persist=deny(EIO) → [write,writev,pwrite64,fsync,fdatasync] (2 hits)\n",
        "  fault rule on inventory: wal_write=deny(EIO) → [write,writev,pwrite64,fsync,fdatasync] path=/tmp/*.wal (0 hits)\n",
        "wal_write(write) deny(EIO) [WAL broken] /tmp/inventory.wal\n",
        "    #9 orders connect delay(500ms) 127.0.0.1:5432\n",
        "--- FAIL: matrix_check_inventory_wal_broken (96ms, seed=7) ---\n  reason: expected failure under fault (status 200)\n",
        "  replay: faultctl run specs/named-ops.star --test matrix_check_inventory_wal_broken --seed 7\n",
        "  WARNING: rule wal_write=deny(EIO) on inventory never fired\n",
        "no call reached a path matching /tmp/*.wal\n",
        "Fault Matrix: 2 scenarios × 2 faults = 4 cells\n",
        "  check_inventory × wal_broken: expected failure under fault (status 200)\n",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(out.ends_with("\n\n8 passed, 1 failed\n"), "{out}");
    assert!(!out.contains('\x1b'), "no ANSI escapes");
    assert!(out.lines().all(|l| l == l.trim_end()), "no trailing spaces");
    // Allowed events are counted, not listed.
    assert!(!out.contains(" allow"), "{out}");
}

#[test]
fn text_matrix_marks_excluded_cells_and_indents_multiline_reasons() {
    let mut report = sample();
    report.tests.retain(|t| t.kind != TestKind::MatrixCell);
    let reason = "scenario raised: connection refused\n  at place_order (specs/x.star:12:5)\n\n";
    report.matrices = vec![MatrixReport {
        scenarios: vec!["place_order".to_string(), "check_inventory".to_string()],
        faults: vec!["persist_broken".to_string()],
        cells: vec![
            vec![Some(MatrixCell {
                result: Outcome::Fail,
                duration_ms: 31,
                reason: Some(reason.to_string()),
            })],
            vec![None],
        ],
    }];
    report.tests[0].result = Outcome::Fail;
    report.tests[0].reason = Some(reason.to_string());
    report.spec = "my specs/it's.star".to_string();
    let out = text::render(&report);
    let table = [
        "Fault Matrix: 2 scenarios × 1 fault = 2 cells (1 excluded or not selected)",
        "",
        "                │ persist_broken",
        "────────────────┼───────────────",
        "place_order     │ FAIL",
        "check_inventory │ —",
        "",
        "Failures:",
        "  place_order × persist_broken: scenario raised: connection refused",
        &format!("{}  at place_order (specs/x.star:12:5)", " ".repeat(32)),
        "",
    ]
    .join("\n");
    assert!(out.contains(&table), "{out}");
    assert!(out.lines().all(|l| l == l.trim_end()), "{out}");
    assert!(
        out.contains(
            "  reason: scenario raised: connection refused\n            at place_order (specs/x.star:12:5)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            r"  replay: faultctl run 'my specs/it'\''s.star' --test test_slow_inventory --seed 7"
        ),
        "{out}"
    );
}

#[test]
fn json_has_the_stable_schema() {
    let doc: serde_json::Value = serde_json::from_str(&json::render(&sample())).unwrap();
    for key in ["spec", "seed", "passed", "failed", "tests"] {
        assert!(doc.get(key).is_some(), "top-level {key}");
    }
    assert_eq!(doc["passed"], 8);
    assert_eq!(doc["failed"], 1);
    let tests = doc["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 9);
    for test in tests {
        for key in [
            "name",
            "kind",
            "scenario",
            "fault",
            "result",
            "reason",
            "duration_ms",
            "seed",
            "rules",
            "events",
        ] {
            assert!(test.get(key).is_some(), "test key {key} in {test}");
        }
        for rule in test["rules"].as_array().unwrap() {
            for key in [
                "service", "op", "syscalls", "path", "action", "errno", "delay_ms", "label", "hits",
            ] {
                assert!(rule.get(key).is_some(), "rule key {key} in {rule}");
            }
        }
        for event in test["events"].as_array().unwrap() {
            for key in [
                "seq", "service", "pid", "syscall", "op", "path", "decision", "errno", "delay_ms",
                "label",
            ] {
                assert!(event.get(key).is_some(), "event key {key} in {event}");
            }
        }
    }
    let cell = &tests[8];
    assert_eq!(cell["name"], "matrix_check_inventory_wal_broken");
    assert_eq!(cell["kind"], "matrix_cell");
    assert_eq!(cell["scenario"], "check_inventory");
    assert_eq!(cell["fault"], "wal_broken");
    assert_eq!(cell["result"], "fail");
    assert_eq!(cell["reason"], CELL_REASON);
    assert_eq!(cell["rules"][0]["op"], "wal_write");
    assert_eq!(cell["rules"][0]["hits"], 0);
    assert_eq!(tests[2]["kind"], "fault_scenario");
    assert_eq!(tests[2]["result"], "pass");
    assert_eq!(tests[2]["reason"], serde_json::Value::Null);
    assert_eq!(tests[2]["events"][1]["op"], "persist");
    assert_eq!(tests[2]["events"][1]["errno"], "EIO");
}

#[test]
fn junit_escapes_markup_quotes_and_control_characters() {
    let mut report = sample();
    report.spec = "specs/a&b.star".to_string();
    let cell = report.tests.last_mut().unwrap();
    cell.name = "matrix_<x>".to_string();
    cell.reason = Some("assert_eq failed: \"a\" != 'b' <&>\n\x1b[31mred\x1b[0m\ttab".to_string());
    let xml = junit::render(&report);
    assert!(xml.contains(r#"<testsuite name="specs/a&amp;b.star" tests="9" failures="1""#));
    assert!(
        xml.contains(r#"<testcase name="matrix_&lt;x&gt;" classname="matrix_cell" time="0.096">"#)
    );
    assert!(xml.contains(
        r#"<failure message="assert_eq failed: &quot;a&quot; != &apos;b&apos; &lt;&amp;&gt;&#10;�[31mred�[0m&#9;tab">"#
    ), "{xml}");
    assert!(
        xml.contains("reason: assert_eq failed: \"a\" != 'b' &lt;&amp;&gt;\n"),
        "{xml}"
    );
    assert!(!xml.contains('\x1b'));
}

/// The keys of each object of the README's JSON schema block, by object: `run`, `test`, and the
/// array each other object is an element of (`rules`, `events`, `exits`).
fn readme_schema() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("### JSON report")
        .nth(1)
        .expect("README has a JSON report section");
    let block = section
        .split("```text")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section has a ```text block");
    let mut schema =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    let mut array = String::new();
    for line in block.lines() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix('"') else {
            continue;
        };
        let key = rest.split('"').next().unwrap().to_string();
        let object = match line.len() - trimmed.len() {
            2 => "run".to_string(),
            6 => "test".to_string(),
            10 => array.clone(),
            _ => continue,
        };
        if object == "test" && trimmed.contains('[') {
            array.clone_from(&key);
        }
        schema.entry(object).or_default().insert(key);
    }
    schema
}

#[test]
fn the_readme_json_schema_matches_the_serialised_report() {
    let mut e = denied(
        event(183, "inventory", "write", Some(WAL)),
        "wal_write",
        "WAL broken",
    );
    e.delay_ms = Some(1);
    e.retval = Some(-5);
    e.latency_ns = Some(20_000);
    e.backend = Some("seccomp".into());
    e.io_requested = Some(4096);
    e.io_done = Some(2048);
    // Set so that no key hides behind a null (a real event has either syscall or proxy fields).
    e.interface = Some("main".into());
    e.request = Some("INSERT INTO orders VALUES (1)".into());
    let mut t = test(
        "wal_failure",
        TestKind::FaultScenario,
        Some("place_order"),
        Some("wal_broken"),
        Some("reason"),
        1,
        vec![deny_rule("wal_write", Some("/tmp/*.wal"), "WAL broken", 1)],
        vec![e],
    );
    t.exits.push(ExitReport {
        service: "inventory".into(),
        code: Some(1),
        signal: Some("SIGKILL".into()),
    });
    t.rules[0].backend = Some("seccomp".into());
    t.rules[0].delay_ms = Some(1);
    t.rules[0].interface = Some("main".into());
    t.rules[0].request = Some("query=INSERT*".into());
    let mut report = sample();
    report.tests = vec![t];
    let doc: serde_json::Value = serde_json::from_str(&json::render(&report)).unwrap();
    let keys = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    let test0 = &doc["tests"][0];
    let mut actual = std::collections::BTreeMap::new();
    actual.insert("run".to_string(), keys(&doc));
    actual.insert("test".to_string(), keys(test0));
    for array in ["rules", "events", "exits"] {
        actual.insert(array.to_string(), keys(&test0[array][0]));
    }
    assert_eq!(readme_schema(), actual);
    // Every optional field of the sample is set, so nothing serialised as null hides a missing key.
    for (array, object) in [
        ("rules", &test0["rules"][0]),
        ("events", &test0["events"][0]),
    ] {
        for (key, value) in object.as_object().unwrap() {
            assert!(!value.is_null(), "{array}.{key} is null in the sample");
        }
    }
}

#[test]
fn text_shows_the_joined_return_value_named_errors_and_dropped_events() {
    let mut wal = denied(
        event(183, "inventory", "write", Some(WAL)),
        "wal_write",
        "WAL broken",
    );
    wal.retval = Some(-5);
    wal.latency_ns = Some(20_000);
    wal.backend = Some("seccomp".into());
    let mut restarted = event(184, "inventory", "read", None);
    restarted.decision = "observed".into();
    restarted.retval = Some(-512);
    restarted.errno = Some("ERESTARTSYS".into());
    restarted.backend = Some("ebpf-trace".into());
    let mut t = test(
        "wal_failure",
        TestKind::FaultScenario,
        Some("place_order"),
        Some("wal_broken"),
        None,
        5,
        vec![],
        vec![wal, restarted],
    );
    t.dropped_events = 7;
    let mut report = sample();
    report.tests = vec![t];
    report.matrices.clear();
    let out = text::render(&report);
    for needle in [
        "  syscall trace (2 events, 7 more dropped):\n",
        "    #183 inventory wal_write(write) deny(EIO) = -5 [WAL broken] /tmp/inventory.wal\n",
        "    #184 inventory read observed = -512 ERESTARTSYS via ebpf-trace\n",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn proxy_events_and_protocol_rules_render_with_interface_request_and_answer() {
    let mut sql = event(31, "db", "postgres", None);
    sql.decision = "error".into();
    sql.errno = Some("23505".into());
    sql.label = Some("dup".into());
    sql.latency_ns = Some(400_000);
    sql.backend = Some("proxy".into());
    sql.interface = Some("main".into());
    sql.request = Some("INSERT INTO orders VALUES (1)".into());
    let mut passed = sql.clone();
    passed.seq = 30;
    passed.decision = "pass".into();
    passed.errno = None;
    let rule = RuleReport {
        service: "db".into(),
        op: None,
        syscalls: vec![],
        path: None,
        action: ActionKind::Error,
        errno: Some("23505".into()),
        delay_ms: None,
        label: Some("dup".into()),
        hits: 1,
        backend: Some("proxy".into()),
        interface: Some("main".into()),
        request: Some("query=INSERT*".into()),
    };
    let t = test(
        "insert_failure",
        TestKind::FaultScenario,
        Some("place_order"),
        Some("dup"),
        None,
        10,
        vec![rule],
        vec![passed, sql],
    );
    let mut report = sample();
    report.tests = vec![t];
    report.matrices.clear();
    let out = text::render(&report);
    assert!(
        out.contains(
            "  syscall trace (2 events):\n    #31 db.main postgres \"INSERT INTO orders VALUES (1)\" error(23505) [dup] 0.4ms\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  fault rule on db: db.main=error(23505) query=INSERT* (1 hit)\n"),
        "{out}"
    );
    let doc: serde_json::Value = serde_json::from_str(&json::render(&report)).unwrap();
    assert_eq!(doc["tests"][0]["rules"][0]["action"], "error");
    assert_eq!(
        doc["tests"][0]["events"][1]["request"],
        "INSERT INTO orders VALUES (1)"
    );
}
