//! End to end: the built `faultctl` runs `specs/power-loss.star` against the demo key-value store
//! (`kv-svc`): fsynced SETs survive a power loss, SETs behind a lying fsync or without fsync are lost,
//! short writes are retried into whole records; and against SQLite in WAL mode (`sql-svc`): a commit
//! with `synchronous=FULL` survives, one with `OFF` is lost; and against redis-server with
//! `appendonly yes`: with `appendfsync always` an acknowledged SET survives a power loss and a
//! restart, with `appendfsync no` or behind a lying fsync it is lost. Needs root and the release demo binaries (`cargo
//! build --release -p faultd-demo`, which `cargo xtask test` does); skipped with a printed reason
//! otherwise, or failed under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

#[path = "../../faultd/tests/support/skip.rs"]
mod skip;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("faultctl lives in the workspace")
        .to_owned()
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (faultd launches and intercepts the demo services)".into());
    }
    for name in ["kv-svc", "sql-svc"] {
        let bin = workspace_root().join("target/release").join(name);
        if !bin.is_file() {
            return Some(format!(
                "{} missing: build the demo services with `cargo build --release -p faultd-demo` (cargo xtask test does)",
                bin.display()
            ));
        }
    }
    let sqlite3 = Command::new("sqlite3").arg("-version").output();
    if !sqlite3.is_ok_and(|o| o.status.success()) {
        return Some("no sqlite3 CLI (apt-get install sqlite3; cargo xtask deps does)".to_owned());
    }
    (!Path::new("/usr/bin/redis-server").is_file()).then(|| {
        "no /usr/bin/redis-server (apt-get install redis-server; cargo xtask deps does)".to_owned()
    })
}

#[test]
fn power_loss_spec_keeps_exactly_what_was_synced() {
    if let Some(reason) = skip_reason() {
        skip::cannot_run("power_loss_spec_keeps_exactly_what_was_synced", &reason);
        return;
    }
    for file in [
        "/tmp/kv-demo.log",
        "/tmp/kv-demo-nosync.log",
        "/tmp/sql-demo-full.db",
        "/tmp/sql-demo-full.db-wal",
        "/tmp/sql-demo-full.db-shm",
        "/tmp/sql-demo-off.db",
        "/tmp/sql-demo-off.db-wal",
        "/tmp/sql-demo-off.db-shm",
    ] {
        let _ = std::fs::remove_file(file);
    }
    for dir in ["/tmp/redis-demo-always", "/tmp/redis-demo-no"] {
        let _ = std::fs::remove_dir_all(dir);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_faultctl"))
        // The engine built with this faultctl, not whatever daemon this host runs.
        .args([
            "run",
            "specs/power-loss.star",
            "--format",
            "json",
            "--seed",
            "3",
            "--daemon",
            "embedded",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("faultctl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}); stderr:\n{stderr}"));
    for t in report["tests"].as_array().expect("tests") {
        assert_eq!(t["result"], "pass", "{}: {:#}", t["name"], t["reason"]);
    }
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64()),
        (Some(10), Some(0)),
        "stderr:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    // The lie is in the trace, and the short writes show what they transferred.
    let events = |name: &str| -> Vec<Value> {
        report["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .and_then(|t| t["events"].as_array().cloned())
            .unwrap_or_default()
    };
    assert!(
        events("test_a_lying_fsync_loses_acknowledged_sets")
            .iter()
            .any(|e| e["decision"] == "lie" && e["syscall"] == "fsync"),
        "a lie event"
    );
    let short = events("test_short_writes_are_retried_into_whole_records")
        .into_iter()
        .find(|e| e["decision"] == "short")
        .expect("a short event");
    assert_eq!(short["io_requested"], 14, "SET short yes\\n: {short:#}");
    assert_eq!(short["io_done"], 7, "{short:#}");
}
