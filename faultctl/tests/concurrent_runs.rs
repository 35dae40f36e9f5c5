//! Two `faultctl run specs/named-ops.star` at once (embedded engines), three times in a row: each
//! session has a network namespace of its own, so both runs get the chapter's results (7 passed, 1
//! failed) although the demo services listen on fixed ports; and nothing (processes, namespaces,
//! cgroups) is left after the runs or after `kill -9` of one. Needs root and the demo binaries;
//! skipped with a printed reason otherwise, or failed under `CI=true`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../faultd/tests/support/skip.rs"]
mod skip;

/// How long leftovers may take to go (a killed engine's watchdog, the kernel freeing namespaces).
const GONE_WAIT: Duration = Duration::from_secs(20);

/// The runs here use the demo services' fixed ports and count namespaces: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("faultctl lives in the workspace")
        .to_owned()
}

/// Why the tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, launching and intercepting services)".into());
    }
    let release = workspace_root().join("target/release");
    for bin in ["inventory-svc", "order-svc"] {
        if !release.join(bin).is_file() {
            return Some(format!(
                "{} missing: build the demo services with `cargo build --release -p faultd-demo`",
                release.join(bin).display()
            ));
        }
    }
    let probe = Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(["probe", "--daemon", "embedded"])
        .output()
        .expect("faultctl probe runs");
    let text = String::from_utf8_lossy(&probe.stdout);
    let line = text.lines().find(|l| l.starts_with("network: "))?;
    (!line.starts_with("network: namespace per session"))
        .then(|| format!("sessions share the host network here ({line})"))
}

/// `faultctl run specs/named-ops.star` with its own embedded engine, JSON on stdout.
fn start_run() -> Child {
    Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args([
            "run",
            "specs/named-ops.star",
            "--format",
            "json",
            "--seed",
            "7",
            "--daemon",
            "embedded",
        ])
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("faultctl runs")
}

/// Pids of running demo services.
fn demo_processes() -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| matches!(c.trim(), "inventory-svc" | "order-svc"))
        })
        .collect()
}

fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Every network namespace a thread of the host is in, or an fd names (`net:[inode]`).
fn namespaces() -> HashSet<String> {
    let mut out = HashSet::new();
    for pid in pids() {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        for task in tasks.into_iter().flatten().filter_map(Result::ok) {
            if let Ok(link) = std::fs::read_link(task.path().join("ns/net")) {
                out.insert(link.to_string_lossy().into_owned());
            }
        }
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"));
        for fd in fds.into_iter().flatten().filter_map(Result::ok) {
            if let Ok(link) = std::fs::read_link(fd.path())
                && link.to_string_lossy().starts_with("net:[")
            {
                out.insert(link.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// The cgroup directories an engine hosted by process `pid` made (`<root>/faultd/<pid>-<start>`).
fn engine_cgroups(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("{pid}-");
    ["/sys/fs/cgroup/faultd", "/sys/fs/cgroup/unified/faultd"]
        .iter()
        .filter_map(|root| std::fs::read_dir(root).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Polls `left` until it is empty or [`GONE_WAIT`] passed; what is left.
fn wait_until_empty<T>(mut left: impl FnMut() -> Vec<T>) -> Vec<T> {
    let deadline = Instant::now() + GONE_WAIT;
    loop {
        let now = left();
        if now.is_empty() || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_runs_at_once_both_give_the_chapter_results_three_times() {
    let test = "two_runs_at_once_both_give_the_chapter_results_three_times";
    if let Some(reason) = skip_reason() {
        skip::cannot_run(test, &reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(demo_processes().is_empty(), "demo services already running");
    let before = namespaces();
    for round in 1..=3 {
        let runs = [start_run(), start_run()];
        let engines: Vec<u32> = runs.iter().map(Child::id).collect();
        for run in runs {
            let out = run.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!("round {round}: JSON on stdout ({e}); stderr:\n{stderr}")
            });
            let failed: Vec<&Value> = report["tests"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["result"] != "pass")
                .map(|t| &t["name"])
                .collect();
            assert_eq!(
                (report["passed"].as_u64(), report["failed"].as_u64()),
                (Some(7), Some(1)),
                "round {round}: failed {failed:?}; stderr:\n{stderr}"
            );
            assert_eq!(
                failed,
                ["matrix_check_inventory_wal_broken"],
                "round {round}"
            );
        }
        for pid in engines {
            assert_eq!(engine_cgroups(pid), Vec::<PathBuf>::new(), "round {round}");
        }
    }
    assert_eq!(wait_until_empty(demo_processes), Vec::<u32>::new());
    let left = wait_until_empty(|| namespaces().difference(&before).cloned().collect());
    assert_eq!(left, Vec::<String>::new(), "namespaces left after the runs");
}

#[test]
fn nothing_outlives_a_killed_engine() {
    let test = "nothing_outlives_a_killed_engine";
    if let Some(reason) = skip_reason() {
        skip::cannot_run(test, &reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(demo_processes().is_empty(), "demo services already running");
    let mut run = start_run();
    let engine = run.id();
    // Until the first service runs (its namespace is the session's).
    let deadline = Instant::now() + GONE_WAIT;
    let service = loop {
        if let Some(pid) = demo_processes().first() {
            break *pid;
        }
        assert!(Instant::now() < deadline, "no demo service started");
        std::thread::sleep(Duration::from_millis(5));
    };
    let ns = std::fs::read_link(format!("/proc/{service}/ns/net"))
        .map(|l| l.to_string_lossy().into_owned());
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(wait_until_empty(demo_processes), Vec::<u32>::new());
    // The service may have ended between the look and the read; a namespace read must be gone.
    if let Ok(ns) = ns {
        let left = wait_until_empty(|| {
            if namespaces().contains(&ns) {
                vec![ns.clone()]
            } else {
                Vec::new()
            }
        });
        assert_eq!(left, Vec::<String>::new(), "the session's namespace");
    }
    // The killed engine's cgroups go at the next engine's start (its stale sweep).
    let next = Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(["probe", "--daemon", "embedded"])
        .output()
        .unwrap();
    assert!(next.status.success());
    assert_eq!(engine_cgroups(engine), Vec::<PathBuf>::new());
}
