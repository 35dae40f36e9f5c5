//! End to end: `specs/peer-mocks.star` — the demo order service against a tcp line mock of its
//! inventory, an http mock's routes and default, a 503 injected by a proxy in front of a mock and a
//! syscall fault on a mock — passes with the engine in process and with a faultd daemon (each
//! serves mocks with its own binary). Needs root and the demo binaries (`cargo build --release -p
//! faultd-demo`), and for the daemon run the faultd binary; skipped with the reason otherwise, or
//! failed under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

#[path = "support/daemon.rs"]
mod daemon;
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
        return Some("needs root (faultd launches and intercepts the services and mocks)".into());
    }
    let order = workspace_root().join("target/release/order-svc");
    (!order.is_file()).then(|| {
        format!(
            "{} missing: build the demo services with `cargo build --release -p faultd-demo` \
             (cargo xtask test does)",
            order.display()
        )
    })
}

/// The spec's services listen on fixed ports: runs must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn run_spec(daemon: &str) -> (Option<i32>, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args([
            "run",
            "specs/peer-mocks.star",
            "--format",
            "json",
            "--seed",
            "1",
            "--daemon",
            daemon,
        ])
        .current_dir(workspace_root())
        .output()
        .expect("faultctl runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), report, stderr)
}

fn events<'a>(report: &'a Value, test: &str) -> &'a Vec<Value> {
    report["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .find(|t| t["name"] == test)
        .unwrap_or_else(|| panic!("no test {test} in {report:#}"))["events"]
        .as_array()
        .expect("events")
}

fn check(report: &Value, code: Option<i32>, stderr: &str) {
    assert_eq!(code, Some(0), "{report:#}\n{stderr}");
    assert_eq!(report["passed"], 5, "{report:#}");
    assert_eq!(report["failed"], 0, "{report:#}");
    // The 503 came from the proxy in front of the http mock, on the faulted route only.
    let proxied = events(report, "test_a_503_injected_in_front_of_the_mock");
    assert!(
        proxied
            .iter()
            .any(|e| e["service"] == "payments" && e["decision"] == "error"),
        "{proxied:#?}"
    );
    // The mock's own reply was denied by its seccomp filter.
    let denied = events(report, "test_a_syscall_fault_on_the_mock");
    assert!(
        denied.iter().any(|e| e["service"] == "inventory"
            && e["syscall"] == "sendto"
            && e["decision"] == "deny"
            && e["label"] == "inventory replies lost"),
        "{denied:#?}"
    );
}

#[test]
fn mocks_spec_passes_in_process() {
    if let Some(reason) = skip_reason() {
        skip::cannot_run("mocks_spec_passes_in_process", &reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (code, report, stderr) = run_spec("embedded");
    check(&report, code, &stderr);
}

#[test]
fn mocks_spec_passes_with_a_daemon() {
    let reason = skip_reason().or_else(|| daemon::faultd_binary().err());
    if let Some(reason) = reason {
        skip::cannot_run("mocks_spec_passes_with_a_daemon", &reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let faultd = daemon::Daemon::start("mocks");
    let (code, report, stderr) = run_spec(&faultd.url);
    check(&report, code, &stderr);
}
