//! End to end: the built `faultctl` runs `specs/shop.star` — a Python shop over a real PostgreSQL and
//! a real redis-server, both behind faultd's protocol proxies — and every test passes; the combined
//! scenario's trace holds the injected SQL error and the denied fsync of Redis's append-only file,
//! in that order. Needs root, redis-server, PostgreSQL and the Python modules redis and pg8000
//! (`cargo xtask deps` installs them); skipped with a printed reason otherwise, failed under
//! `CI=true`.

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

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (faultd launches the services, one as the postgres user)".into());
    }
    if !succeeds("redis-server", &["--version"]) {
        return Some("redis-server is not installed (cargo xtask deps)".into());
    }
    if !Path::new("/usr/lib/postgresql").is_dir() || !succeeds("id", &["postgres"]) {
        return Some("PostgreSQL is not installed (cargo xtask deps)".into());
    }
    if !succeeds("python3", &["-c", "import redis, pg8000"]) {
        return Some("the Python modules redis and pg8000 are missing (cargo xtask deps)".into());
    }
    None
}

#[test]
fn shop_spec_passes_and_orders_the_sql_error_before_the_fsync_denial() {
    const TEST: &str = "shop_spec_passes_and_orders_the_sql_error_before_the_fsync_denial";
    if let Some(reason) = skip_reason() {
        skip::cannot_run(TEST, &reason);
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(["run", "specs/shop.star", "--format", "json", "--seed", "3"])
        .current_dir(workspace_root())
        .output()
        .expect("faultctl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}); stderr:\n{stderr}"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "every test passes: {report:#}\nstderr:\n{stderr}"
    );
    assert_eq!(report["passed"], 5);

    let combined = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "sql_error_and_fsync_denied")
        .expect("the combined scenario ran");
    let events = combined["events"].as_array().unwrap();
    let sql_error = events
        .iter()
        .find(|e| e["syscall"] == "postgres" && e["decision"] == "error")
        .unwrap_or_else(|| panic!("an injected SQL error in {events:#?}"));
    assert_eq!(sql_error["errno"], "23505");
    assert_eq!(sql_error["label"], "dup");
    assert_eq!(sql_error["interface"], "main");
    assert!(
        sql_error["request"]
            .as_str()
            .unwrap()
            .starts_with("INSERT INTO orders"),
        "{sql_error:#}"
    );
    let fsync = events
        .iter()
        .find(|e| e["service"] == "cache" && e["decision"] == "deny")
        .unwrap_or_else(|| panic!("a denied fsync in {events:#?}"));
    assert_eq!(fsync["errno"], "EIO");
    assert!(matches!(
        fsync["syscall"].as_str(),
        Some("fsync" | "fdatasync")
    ));
    assert!(
        sql_error["seq"].as_u64() < fsync["seq"].as_u64(),
        "one trace, in the order things happened"
    );
    // Both rules are reported, with their hits.
    let rules = combined["rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["action"] == "error" && r["backend"] == "proxy" && r["hits"] == 1),
        "{rules:#?}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r["action"] == "deny" && r["service"] == "cache" && r["hits"] == 1),
        "{rules:#?}"
    );
}
