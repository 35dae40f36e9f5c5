//! End to end: `faultctl run --fault SPEC -- program args` runs one program under faults, with the
//! engine in process and with a faultd daemon: the program's output comes through, the denied write
//! is in the trace with the rule's hits, and faultctl exits with the program's status (128 + the
//! signal when one killed it). Bad `--fault` values are refused before anything starts, naming the
//! bad part and the expected form. Needs root (and the faultd binary for the daemon run) except for
//! the refusals; skipped with the reason otherwise, or failed under `CI=true`.

use std::process::{Command, Output};

#[path = "support/daemon.rs"]
mod daemon;
#[path = "../../faultd/tests/support/skip.rs"]
mod skip;

fn faultctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(args)
        .output()
        .expect("faultctl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn root() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } != 0)
        .then(|| "needs root (faultd launches and intercepts the program)".to_owned())
}

/// `tee` opens the file itself and writes to that descriptor (writes through fds 0-2 are not
/// intercepted): the write is denied, tee says so and exits 1.
fn denied_write_shows_in_the_trace(daemon: &str, tag: &str) {
    let out_file =
        std::env::temp_dir().join(format!("faultctl-run-{tag}-{}.out", std::process::id()));
    let _ = std::fs::remove_file(&out_file);
    let glob = format!("{}*", out_file.with_extension("").display());
    let fault = format!("write=EIO:100%:{glob}");
    let script = format!("echo hello; echo hi | tee {}", out_file.display());
    let out = faultctl(&[
        "run", "--daemon", daemon, "--seed", "5", "--fault", &fault, "--", "sh", "-c", &script,
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("hello\nhi\n"), "{stdout}");
    assert!(stderr.contains("Input/output error"), "{stderr}");
    assert!(stderr.contains("--- sh: exited with code 1"), "{stderr}");
    assert!(
        stderr.contains(&format!("sh write deny(EIO) {}", out_file.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("path=") && stderr.contains("(1 hit)"),
        "{stderr}"
    );
    // The denied write never reached the file.
    assert_eq!(std::fs::read(&out_file).unwrap_or_default(), b"");
    let _ = std::fs::remove_file(&out_file);
}

#[test]
fn a_program_runs_under_faults_in_process() {
    if let Some(reason) = root() {
        skip::cannot_run("a_program_runs_under_faults_in_process", &reason);
        return;
    }
    denied_write_shows_in_the_trace("embedded", "embedded");
    // The exit status is the program's, 128 + the signal when one killed it.
    let out = faultctl(&["run", "--daemon", "embedded", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let out = faultctl(&[
        "run",
        "--daemon",
        "embedded",
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ]);
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("killed by SIGTERM"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_program_runs_under_faults_with_a_daemon() {
    if let Some(reason) = root().or_else(|| daemon::faultd_binary().err()) {
        skip::cannot_run("a_program_runs_under_faults_with_a_daemon", &reason);
        return;
    }
    let faultd = daemon::Daemon::start("run");
    denied_write_shows_in_the_trace(&faultd.url, "daemon");
}

#[test]
fn bad_fault_values_are_refused_naming_the_bad_part() {
    let cases = [
        (
            "write=EOI:100%",
            "unknown errno `EOI` (did you mean `EIO`?)",
        ),
        ("wirte=EIO:100%", "unknown syscall or family `wirte`"),
        ("write=EIO:200%", "probability `200%` is outside (0%, 100%]"),
        ("write:EIO:100%", "no `=` after the syscall name"),
        ("write=delay:soon:100%", "duration `soon`"),
        ("openat=ENOENT:100%:/a:nth=0", "`nth=0`"),
    ];
    for (fault, wanted) in cases {
        let out = faultctl(&["run", "--fault", fault, "--", "true"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{fault}: {stderr}");
        assert!(
            stderr.contains(&format!("bad --fault {fault:?}: {wanted}")),
            "{fault}: {stderr}"
        );
        assert!(
            stderr.contains("expected SYSCALL=ERRNO:PROB%[:PATH_GLOB][:nth=N|after=N]"),
            "{stderr}"
        );
    }
    // A spec and a program are one or the other; --fault needs a program.
    let out = faultctl(&["run", "specs/shop.star", "--", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = faultctl(&["run", "specs/shop.star", "--fault", "write=EIO:100%"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}
