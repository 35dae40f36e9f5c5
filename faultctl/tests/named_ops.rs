//! End to end: the built `faultctl` runs `specs/named-ops.star` against the demo services and yields
//! exactly the results of issue 4, point 2. Needs root (faultd launches and intercepts services) and
//! the demo binaries (`cargo build --release -p faultd-demo`, which `cargo xtask test` does); skipped
//! with a printed reason otherwise, or failed under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

#[path = "../../faultd/tests/support/skip.rs"]
mod skip;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("faultctl lives in the workspace")
        .to_owned()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("needs root (faultd launches and intercepts the demo services)".into());
    }
    let release = workspace_root().join("target/release");
    for bin in ["inventory-svc", "order-svc"] {
        if !release.join(bin).is_file() {
            return Some(format!(
                "{} missing: build the demo services with `cargo build --release -p faultd-demo` (cargo xtask test does)",
                release.join(bin).display()
            ));
        }
    }
    None
}

/// Pids of running demo services.
fn demo_processes() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        matches!(comm.trim(), "inventory-svc" | "order-svc").then_some(pid)
    })
    .collect()
}

/// The demo services listen on fixed ports: runs of the spec must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn faultctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("faultctl runs")
}

fn test<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tests"]
        .as_array()
        .expect("tests is an array")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no test {name} in {report:#}"))
}

#[test]
fn named_ops_spec_gives_the_chapter_results() {
    if let Some(reason) = skip_reason() {
        skip::cannot_run("named_ops_spec_gives_the_chapter_results", &reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        demo_processes().is_empty(),
        "demo services already running: {:?}",
        demo_processes()
    );

    let out = faultctl(&[
        "run",
        "specs/named-ops.star",
        "--format",
        "json",
        "--seed",
        "7",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code (one matrix cell fails); stderr:\n{stderr}"
    );
    assert!(stderr.contains("seed: 7"), "the seed is printed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}); stderr:\n{stderr}"));

    // Schema.
    for key in ["spec", "seed", "passed", "failed", "tests"] {
        assert!(report.get(key).is_some(), "top-level key {key}");
    }
    assert_eq!(report["spec"], "specs/named-ops.star");
    assert_eq!(report["seed"], 7);
    for t in report["tests"].as_array().unwrap() {
        for key in [
            "name",
            "kind",
            "scenario",
            "fault",
            "result",
            "reason",
            "duration_ms",
            "rules",
            "events",
        ] {
            assert!(t.get(key).is_some(), "test key {key} in {t:#}");
        }
        for r in t["rules"].as_array().unwrap() {
            for key in [
                "service", "op", "syscalls", "action", "errno", "label", "hits",
            ] {
                assert!(r.get(key).is_some(), "rule key {key} in {r:#}");
            }
        }
        for e in t["events"].as_array().unwrap() {
            for key in [
                "seq", "service", "pid", "syscall", "op", "path", "decision", "errno", "label",
            ] {
                assert!(e.get(key).is_some(), "event key {key} in {e:#}");
            }
        }
    }

    // Results, in source order.
    let names: Vec<&str> = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "place_order",
            "persist_failure",
            "wal_failure",
            "check_inventory",
            "matrix_place_order_persist_broken",
            "matrix_place_order_wal_broken",
            "matrix_check_inventory_persist_broken",
            "matrix_check_inventory_wal_broken",
        ]
    );
    for name in &names[..7] {
        let t = test(&report, name);
        assert_eq!(t["result"], "pass", "{name}: {:#}", t["reason"]);
    }
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64()),
        (Some(7), Some(1))
    );

    // The failing cell says why: the expectation's message, the status seen, the rule that never fired.
    let cell = test(&report, "matrix_check_inventory_wal_broken");
    assert_eq!(cell["result"], "fail");
    assert_eq!(cell["kind"], "matrix_cell");
    assert_eq!(cell["scenario"], "check_inventory");
    assert_eq!(cell["fault"], "wal_broken");
    assert_eq!(cell["reason"], "expected failure under fault (status 200)");
    let wal_rule = cell["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["op"] == "wal_write")
        .expect("wal_write rule");
    assert_eq!(wal_rule["hits"], 0, "{wal_rule:#}");
    assert_eq!(wal_rule["errno"], "EIO");
    assert_eq!(wal_rule["label"], "WAL broken");

    // persist denies inventory's socket reply: order-svc answers 503.
    let persist = test(&report, "persist_failure");
    let denied = persist["events"].as_array().unwrap().iter().find(|e| {
        e["service"] == "inventory"
            && e["op"] == "persist"
            && e["syscall"] == "write"
            && e["decision"] == "deny"
    });
    let denied = denied.unwrap_or_else(|| panic!("a denied persist(write): {persist:#}"));
    assert_eq!(denied["errno"], "EIO");
    assert_eq!(denied["label"], "persist broken");

    // wal_write fires on the WAL file only.
    let wal = test(&report, "wal_failure");
    let on_wal = wal["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["op"] == "wal_write" && e["decision"] == "deny");
    let on_wal = on_wal.unwrap_or_else(|| panic!("a denied wal_write: {wal:#}"));
    assert_eq!(on_wal["path"], "/tmp/inventory.wal");

    assert!(
        demo_processes().is_empty(),
        "demo services left running: {:?}",
        demo_processes()
    );
}

#[test]
fn text_report_shows_op_and_syscall_in_the_trace() {
    if let Some(reason) = skip_reason() {
        skip::cannot_run("text_report_shows_op_and_syscall_in_the_trace", &reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = faultctl(&["run", "specs/named-ops.star", "--test", "persist_failure"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("inventory persist(write) deny(EIO) [persist broken]")),
        "trace line in:\n{stdout}"
    );
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
}

#[test]
fn crash_and_connect_spec_kills_at_fsync_refuses_one_destination_and_partitions() {
    if let Some(reason) = skip_reason() {
        skip::cannot_run(
            "crash_and_connect_spec_kills_at_fsync_refuses_one_destination_and_partitions",
            &reason,
        );
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = std::fs::remove_file("/tmp/crash-demo.wal");
    let out = faultctl(&[
        "run",
        "specs/crash-and-connect.star",
        "--format",
        "json",
        "--seed",
        "5",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64()),
        (Some(5), Some(0))
    );

    let crash = test(&report, "crash_before_fsync");
    assert_eq!(crash["exits"][0]["service"], "inventory", "{crash:#}");
    assert_eq!(crash["exits"][0]["signal"], "SIGKILL");
    let event = crash["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["decision"] == "crash")
        .unwrap_or_else(|| panic!("no crash event in {crash:#}"));
    assert_eq!(event["op"], "wal_sync");
    assert_eq!(event["syscall"], "fsync");
    assert_eq!(event["errno"], "SIGKILL");
    assert_eq!(event["path"], "/tmp/crash-demo.wal");
    // The record was appended before the crashing fsync: the write itself was not touched.
    let wal = std::fs::read_to_string("/tmp/crash-demo.wal").unwrap_or_default();
    assert!(wal.contains("widget"), "WAL: {wal:?}");

    let refused = test(&report, "orders_without_inventory");
    let denied: Vec<&Value> = refused["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), 1, "{refused:#}");
    assert_eq!(denied[0]["path"], "127.0.0.1:5433");
    assert_eq!(denied[0]["errno"], "ECONNREFUSED");

    let split = test(&report, "orders_partitioned_from_inventory");
    let cut = split["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["decision"] == "deny")
        .unwrap_or_else(|| panic!("no refused connect in {split:#}"));
    assert_eq!(cut["label"], "net split");
    assert_eq!(cut["path"], "127.0.0.1:5433");
    assert_eq!(test(&report, "test_partition_heals")["result"], "pass");
    assert!(demo_processes().is_empty(), "demo services left running");
}

#[test]
fn every_example_spec_checks() {
    for entry in std::fs::read_dir(workspace_root().join("specs"))
        .unwrap()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "star") {
            let out = faultctl(&["check", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
