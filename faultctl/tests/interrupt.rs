//! faultctl tears its session down when interrupted: SIGINT (Ctrl-C) or SIGTERM during a test deletes
//! the session in flight (its services and their children are gone before faultctl exits), says so
//! on stderr, and exits with 130 / 143. Embedded mode, real processes; needs root (skipped with a
//! printed reason otherwise, failed under `CI=true`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[path = "../../faultd/tests/support/procs.rs"]
mod procs;
#[path = "../../faultd/tests/support/skip.rs"]
mod skip;
use procs::processes_with;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Embedded engines of concurrent tests would sweep each other's cgroups: one run at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A spec whose service (`sh`, exec'd into a `sleep` with a background `sleep` child, both carrying
/// `token` in their argv, and `extra` service arguments) runs while its test's body spins until
/// cancelled.
fn spec(dir: &std::path::Path, token: &str, extra: &str) -> PathBuf {
    let path = dir.join("blocks.star");
    std::fs::write(
        &path,
        format!(
            r#"s = service("sleeper", "/bin/sh", args=["-c", "sleep {token} & exec sleep {token}"]{extra})

def test_blocks():
    n = 0
    for i in range(1000000000):
        n += i
"#
        ),
    )
    .unwrap();
    path
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

fn kill(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill has no memory preconditions; pid is our child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Runs the spec, sends `signal` once the service runs, and checks the exit code, the teardown
/// message (`said`) and that no process of the spec remains.
fn interrupted_run(
    test: &str,
    signal: i32,
    code: i32,
    extra: &str,
    said: &[&str],
    within: Duration,
) {
    if !is_root() {
        skip::cannot_run(
            test,
            "needs root (the embedded engine launches services in cgroups)",
        );
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("faultctl-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A sleep duration no other process has in its argv.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let token = format!("9{:05}.{}{nanos}", signal, std::process::id());
    let spec = spec(&dir, &token, extra);

    let mut child = Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(["run", "--daemon", "embedded", "--seed", "1"])
        .arg(&spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("faultctl starts");
    let started = wait_until(Duration::from_secs(30), || {
        processes_with(&token).len() >= 2
    });
    if !started {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "the service and its child did not start; faultctl's stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let sent = Instant::now();
    kill(&child, signal);
    let exited = wait_until(Duration::from_secs(15), || {
        child.try_wait().unwrap().is_some()
    });
    let took = sent.elapsed();
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        exited,
        "faultctl still runs 15 s after the signal:\n{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stderr:\n{stderr}"
    );
    assert!(took < within, "faultctl took {took:?} to exit:\n{stderr}");
    assert!(
        said.iter().all(|s| stderr.contains(s)),
        "the teardown is reported ({said:?}):\n{stderr}"
    );
    let left = processes_with(&token);
    assert!(
        left.is_empty(),
        "processes of the spec survived faultctl: {left:?}\n{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const DELETED: &[&str] = &[
    "interrupted: deleted session ",
    "of test `test_blocks` (services stopped, faults removed)",
];

#[test]
fn ctrl_c_tears_the_session_down_and_exits_130() {
    interrupted_run(
        "ctrl_c_tears_the_session_down_and_exits_130",
        libc::SIGINT,
        130,
        "",
        DELETED,
        Duration::from_secs(5),
    );
}

#[test]
fn sigterm_tears_the_session_down_and_exits_143() {
    interrupted_run(
        "sigterm_tears_the_session_down_and_exits_143",
        libc::SIGTERM,
        143,
        "",
        DELETED,
        Duration::from_secs(5),
    );
}

/// Interrupted while CreateSession waits for a healthcheck that never passes: faultctl waits (at
/// most 10 s) for the creation to end, deletes the session if it was created, and leaves nothing.
#[test]
fn ctrl_c_while_services_start_leaves_nothing() {
    interrupted_run(
        "ctrl_c_while_services_start_leaves_nothing",
        libc::SIGINT,
        130,
        r#", healthcheck=tcp("127.0.0.1:9", timeout="3s")"#,
        &["interrupted: the session of test `test_blocks` did not start ("],
        Duration::from_secs(11),
    );
}
