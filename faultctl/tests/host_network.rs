//! `network="host"` through `faultctl run` (embedded engine): a declared port another process holds
//! fails the start with who holds it, and someone else's listener does not satisfy a healthcheck.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `spec` (Starlark text) from a fresh directory with the embedded engine.
fn run_spec(name: &str, spec: &str) -> Output {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "faultctl-host-network-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("spec.star");
    std::fs::write(&file, spec).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(["run", "spec.star", "--daemon", "embedded"])
        .current_dir(&dir)
        .output()
        .expect("faultctl runs");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// A listener of this test process, and its port.
fn ours() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn sleep_bin() -> &'static str {
    if Path::new("/bin/sleep").exists() {
        "/bin/sleep"
    } else {
        "/usr/bin/sleep"
    }
}

#[test]
fn a_declared_port_held_by_another_process_fails_the_start() {
    let (_held, port) = ours();
    let spec = format!(
        "web = service(\"web\", \"{}\", interface(\"main\", \"tcp\", {port}), args=[\"30\"], \
         network=\"host\")\ndef test_start():\n    pass\n",
        sleep_bin()
    );
    let out = run_spec("port", &spec);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let me = std::process::id();
    assert!(
        stdout.contains(&format!(
            "cannot start web: port {port} is in use by pid {me} ("
        )),
        "{stdout}"
    );
}

#[test]
fn a_foreign_listener_does_not_satisfy_a_healthcheck() {
    let (_theirs, port) = ours();
    let spec = format!(
        "web = service(\"web\", \"{}\", args=[\"30\"], network=\"host\", \
         healthcheck=tcp(\"127.0.0.1:{port}\", timeout=\"1s\"))\ndef test_start():\n    pass\n",
        sleep_bin()
    );
    let out = run_spec("health", &spec);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let me = std::process::id();
    assert!(
        stdout.contains(&format!("answered by the listener of pid {me} ("))
            && stdout.contains("which is not a process of web"),
        "{stdout}"
    );
}
