//! A process started outside faultd, in a cgroup the test makes: for attach-by-cgroup tests.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::unique;

/// The test's own cgroup and the victim in it; kills the victim and removes the directory on drop.
pub struct Outside {
    pub dir: PathBuf,
    pub child: Child,
    pub files: Vec<String>,
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        for _ in 0..200 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Starts `argv` in a new cgroup under `root`, its stdout on a pipe read line by line.
pub fn spawn_in_cgroup(root: &Path, argv: &[&str]) -> (Outside, mpsc::Receiver<String>) {
    let dir = root.join(unique("faultd-cgroup-test"));
    std::fs::create_dir(&dir).expect("create the test's cgroup");
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .expect("open cgroup.procs");
    let procs_fd = procs.as_raw_fd();
    let mut command = Command::new(argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    // SAFETY: the closure only calls write(2), which is async-signal-safe, on an fd opened above.
    unsafe {
        command.pre_exec(move || {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start faultd-victim in the cgroup");
    drop(procs);
    let stdout = child.stdout.take().expect("stdout pipe");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (
        Outside {
            dir,
            child,
            files: Vec::new(),
        },
        rx,
    )
}

pub fn next_line(lines: &mpsc::Receiver<String>) -> String {
    lines
        .recv_timeout(Duration::from_secs(20))
        .expect("a line from the victim within 20 s")
}
