//! End to end: the peer's (Faultbox's) spec language against the demo services. `specs/peer-traces.star`
//! (trace, fault_start/stop, partitions, events and the trace assertions) and `specs/peer-wiring.star`
//! (load, FAULTBOX_ variables, Response.data, print, probability forms, test names) run and pass;
//! failing trace assertions quote the nearest events; `--test` takes the peer's names. Needs root and
//! the demo binaries (`cargo build --release -p faultd-demo`); skipped with the reason otherwise, or
//! failed under `CI=true`.

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

fn release(bin: &str) -> PathBuf {
    workspace_root().join("target/release").join(bin)
}

/// Why the tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (faultd launches and intercepts the demo services)".into());
    }
    ["inventory-svc", "order-svc"]
        .iter()
        .map(|b| release(b))
        .find(|p| !p.is_file())
        .map(|p| {
            format!(
                "{} missing: build the demo services with `cargo build --release -p faultd-demo` \
                 (cargo xtask test does)",
                p.display()
            )
        })
}

/// The demo services listen on fixed ports: runs must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs faultctl from the workspace root; returns exit code, JSON report (when asked) and stderr.
fn faultctl(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("faultctl runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), report, stderr)
}

fn test<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no test {name} in {report:#}"))
}

fn names(report: &Value) -> Vec<String> {
    report["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

fn runnable(name: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    if let Some(reason) = skip_reason() {
        skip::cannot_run(name, &reason);
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

#[test]
fn trace_spec_passes_with_paths_on_allowed_calls() {
    let Some(_serial) = runnable("trace_spec_passes_with_paths_on_allowed_calls") else {
        return;
    };
    let (code, report, stderr) = faultctl(&["run", "specs/peer-traces.star", "--format", "json"]);
    assert_eq!(code, Some(0), "{report:#}\n{stderr}");
    assert_eq!(report["passed"], 4, "{report:#}");
    // Allowed intercepted calls carry their path: the peer's `openat allow /tmp/inventory.wal`.
    let t = test(&report, "test_order_writes_the_wal");
    let events = t["events"].as_array().unwrap();
    for syscall in ["openat", "write", "fsync"] {
        assert!(
            events.iter().any(|e| e["syscall"] == syscall
                && e["decision"] == "allow"
                && e["path"] == "/tmp/inventory.wal"),
            "{syscall}: {events:#?}"
        );
    }
    // fault_start resolved the op: the denial names it, and only the WAL write was denied.
    let t = test(&report, "test_wal_fault_started_and_stopped");
    let denied: Vec<&Value> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["op"], "wal_write");
    // The partitions were enforced (a connect refused) and healed (the test's later step passed).
    for name in [
        "test_partition_scoped_by_run",
        "test_partition_started_and_stopped",
    ] {
        let t = test(&report, name);
        assert!(
            t["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["service"] == "orders"
                    && e["syscall"] == "connect"
                    && e["decision"] == "deny"),
            "{name}: {t:#}"
        );
    }
}

#[test]
fn failing_trace_assertions_quote_the_nearest_events() {
    let Some(_serial) = runnable("failing_trace_assertions_quote_the_nearest_events") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("faultctl-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("assertions.star");
    std::fs::write(
        &spec,
        format!(
            r#"
inventory = service("inventory", "{inv}", interface("main", "tcp", 5432),
    env = {{"PORT": "5432", "WAL_PATH": "/tmp/inventory.wal"}}, healthcheck = tcp("localhost:5432"))
orders = service("orders", "{ord}", interface("public", "http", 8080),
    env = {{"PORT": "8080"}}, depends_on = [inventory], healthcheck = http("localhost:8080/health"))
def order():
    return orders.post(path="/orders", body='{{"sku":"widget","qty":1}}')
def test_eventually():
    trace(inventory, syscalls=["openat", "fsync"], run=order)
    assert_eventually(service="inventory", syscall="openat", path="*.log")
def test_never():
    trace(inventory, syscalls=["openat"], run=order)
    assert_never(syscall="openat", path="*.wal")
def test_before():
    trace(inventory, syscalls=["openat", "fsync"], run=order)
    assert_before(first={{"syscall": "fsync"}}, then={{"syscall": "openat", "path": "*.wal"}})
def test_not_intercepted():
    svc = inventory
    trace(svc, syscalls=["connect"], run=order)
"#,
            inv = release("inventory-svc").display(),
            ord = release("order-svc").display()
        ),
    )
    .unwrap();
    let (code, report, stderr) = faultctl(&["run", spec.to_str().unwrap(), "--format", "json"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    let reason = |name: &str| test(&report, name)["reason"].as_str().unwrap().to_owned();
    let r = reason("test_eventually");
    assert!(
        r.starts_with(
            "assert_eventually failed: no event matches service=\"inventory\", syscall=\"openat\", \
             path=\"*.log\" among "
        ),
        "{r}"
    );
    assert!(
        r.contains("nearest: #")
            && r.contains(" inventory openat allow /tmp/inventory.wal (matches service, syscall)"),
        "{r}"
    );
    let r = reason("test_never");
    assert!(
        r.starts_with("assert_never failed: event #")
            && r.contains("matches syscall=\"openat\", path=\"*.wal\": #")
            && r.contains(" inventory openat allow /tmp/inventory.wal"),
        "{r}"
    );
    let r = reason("test_before");
    assert!(
        r.starts_with(
            "assert_before failed: then= (syscall=\"openat\", path=\"*.wal\") came first: #"
        ) && r.contains("inventory fsync allow /tmp/inventory.wal"),
        "{r}"
    );
    let r = reason("test_not_intercepted");
    assert!(
        r.starts_with("service `inventory` does not intercept connect (its seccomp filter is fixed at launch; intercepting: "),
        "{r}"
    );
}

#[test]
fn wiring_spec_passes_and_test_names_select_as_the_peers_users_type_them() {
    let Some(_serial) =
        runnable("wiring_spec_passes_and_test_names_select_as_the_peers_users_type_them")
    else {
        return;
    };
    let (code, report, stderr) = faultctl(&["run", "specs/peer-wiring.star", "--format", "json"]);
    assert_eq!(code, Some(0), "{report:#}\n{stderr}");
    // scenario(test_happy_path) registered it once.
    assert_eq!(
        names(&report),
        [
            "test_happy_path",
            "test_health_is_plain_text",
            "order_when_wal_down"
        ]
    );
    let t = test(&report, "test_happy_path");
    assert_eq!(
        t["printed"],
        serde_json::json!(["order 1 confirmed, 98 widgets left"])
    );

    for filter in ["happy_path", "test_happy_path", "test_test_happy_path"] {
        let (code, report, stderr) = faultctl(&[
            "run",
            "specs/peer-wiring.star",
            "--test",
            filter,
            "--format",
            "json",
        ]);
        assert_eq!(code, Some(0), "{filter}: {stderr}");
        assert_eq!(names(&report), ["test_happy_path"], "{filter}");
    }
    // The peer's name of a matrix cell.
    let (code, report, stderr) = faultctl(&[
        "run",
        "specs/named-ops.star",
        "--test",
        "test_matrix_place_order_persist_broken",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(names(&report), ["matrix_place_order_persist_broken"]);
    let (code, _, stderr) = faultctl(&["run", "specs/peer-wiring.star", "--test", "nope"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no test matches `nope`"), "{stderr}");
}

#[test]
fn repeated_runs_name_flaky_tests_with_seeds_that_replay_each_outcome() {
    let Some(_serial) =
        runnable("repeated_runs_name_flaky_tests_with_seeds_that_replay_each_outcome")
    else {
        return;
    };
    let (code, report, stderr) = faultctl(&[
        "run",
        "specs/peer-flaky.star",
        "--runs",
        "6",
        "--seed",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("6 runs (seeds 1, 2, 3, 4, 5, 6)"),
        "{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("FLAKY order_with_a_flaky_wal: passed with seed "))
        .unwrap_or_else(|| panic!("no flaky line: {stderr}"));
    // The report shown is the first run with a failure.
    let failing_seed = report["seed"].as_u64().unwrap();
    assert_eq!(test(&report, "order_with_a_flaky_wal")["result"], "fail");
    let seeds = |outcome: &str| -> Vec<u64> {
        let rest = line.split(outcome).nth(1).unwrap();
        rest.split([';', '('])
            .next()
            .unwrap()
            .split(',')
            .map(|s| s.trim().parse().unwrap())
            .collect()
    };
    let (passed, failed) = (seeds("passed with seed "), seeds("failed with seed "));
    assert_eq!(failed[0], failing_seed);
    assert_eq!(passed.len() + failed.len(), 6, "{line}");
    // Each seed replays its outcome.
    for (seed, expected) in [(passed[0], Some(0)), (failed[0], Some(2))] {
        let (code, _, stderr) =
            faultctl(&["run", "specs/peer-flaky.star", "--seed", &seed.to_string()]);
        assert_eq!(code, expected, "seed {seed}: {stderr}");
    }
}
