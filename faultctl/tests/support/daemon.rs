//! A faultd daemon of this build on a private socket, for faultctl's end-to-end tests that run
//! against a daemon rather than the embedded engine. Stopped (SIGTERM, then SIGKILL) on drop.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The faultd binary built beside faultctl (`cargo test --workspace` builds it), or why not.
pub(crate) fn faultd_binary() -> Result<PathBuf, String> {
    let faultctl = PathBuf::from(env!("CARGO_BIN_EXE_faultctl"));
    let faultd = faultctl.with_file_name("faultd");
    if faultd.is_file() {
        Ok(faultd)
    } else {
        Err(format!(
            "{} missing: build it with `cargo build -p faultd` (cargo test --workspace does)",
            faultd.display()
        ))
    }
}

/// A running daemon.
pub(crate) struct Daemon {
    child: Child,
    dir: PathBuf,
    /// `unix:///.../faultd.sock`, for `--daemon`.
    pub(crate) url: String,
}

impl Daemon {
    /// Starts `faultd --socket <tmp>/faultd.sock` and waits for the socket.
    pub(crate) fn start(tag: &str) -> Daemon {
        let bin = faultd_binary().expect("faultd binary");
        let dir = std::env::temp_dir().join(format!("faultctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("faultd.sock");
        let child = Command::new(bin)
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("faultd starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "faultd did not create {socket:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            url: format!("unix://{}", socket.display()),
            dir,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
