//! A remote agent's view: `specs/clients/faultd_client.py` (grpcio, stubs generated from the proto)
//! drives a faultd on loopback over TLS with a bearer token: session, fault, step, events, delete.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::tls::{certificates, free_port};
use support::unique;

const TOKEN: &str = "python-0123456789abcdef0123456789";

fn has_grpc(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import grpc, grpc_tools"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether python3 has grpcio and grpcio-tools, installing them with pip when missing. Outside CI a
/// machine without them (or without network) skips with the reason; in CI (CI=true) that fails.
fn grpc_or_skip(test: &str) -> bool {
    let python = "python3";
    if has_grpc(python) {
        return true;
    }
    let pip = Command::new(python)
        .args(["-m", "pip", "install", "--quiet", "grpcio", "grpcio-tools"])
        .status();
    if has_grpc(python) {
        return true;
    }
    let reason = format!(
        "python3 lacks grpcio/grpcio-tools and `pip install grpcio grpcio-tools` did not fix it \
         ({pip:?}); `cargo xtask deps` installs them"
    );
    support::cannot_run(test, &reason);
    false
}

#[test]
fn the_python_client_drives_a_remote_faultd() {
    let test = "the_python_client_drives_a_remote_faultd";
    if !support::root_or_skip(test) || !grpc_or_skip(test) {
        return;
    }
    let dir = PathBuf::from(format!("/tmp/{}", unique("faultd-py")));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    std::fs::write(dir.join("tokens"), format!("agent:{TOKEN}\n")).unwrap();
    let port = free_port();
    let mut faultd = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("--socket")
        .arg(dir.join("faultd.sock"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(dir.join("srv.pem"))
        .arg("--tls-key")
        .arg(dir.join("srv.key"))
        .arg("--token-file")
        .arg(dir.join("tokens"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start faultd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "faultd did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("python3")
        .arg(workspace.join("specs/clients/faultd_client.py"))
        .args(["--target", &format!("localhost:{port}")])
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .arg("--token-file")
        .arg(dir.join("tokens"))
        .arg("--proto")
        .arg(workspace.join("proto"))
        .output()
        .expect("run python3");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(faultd.id() as i32, libc::SIGTERM) };
    let _ = faultd.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "step GET /hello.txt: ok=True status 200",
        "status 404",
        "openat",
        "-> EACCES",
        "(hello-unreadable):",
        "faultd_client: ok",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
