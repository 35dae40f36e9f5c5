//! A small watchdog process that kills every service of an engine when the process hosting the engine
//! dies, however it dies (`kill -9` of faultd, Ctrl-C or `kill -9` of faultctl in embedded mode).
//!
//! The engine forks it once per cgroup tree. The watchdog keeps nothing of faultd but the read end of a
//! pipe whose write end only the engine's process holds (close-on-exec, so services never inherit it);
//! when that process is gone the read returns end-of-file and the watchdog writes `1` to the tree's
//! `cgroup.kill`, which SIGKILLs every process in every session's cgroups, grandchildren that left
//! their process group included. Services' seccomp listeners and eBPF links die with faultd's fds, so
//! no fault outlives it either. The watchdog ignores SIGINT and leaves the terminal's process group, so
//! a Ctrl-C that kills faultctl does not kill the watchdog first.
//!
//! Without `cgroup.kill` (Linux < 5.14) the watchdog does nothing and the next engine's stale sweep
//! ([`crate::cgroup`]) kills what is left.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Keeps the watchdog armed while alive; dropping it (or the process dying) fires it.
#[derive(Debug)]
pub(crate) struct Watchdog {
    _alive: OwnedFd,
}

impl Watchdog {
    /// Forks a watchdog that writes `1` to `<dir>/cgroup.kill` once this process is gone.
    pub(crate) fn arm(dir: &Path) -> io::Result<Watchdog> {
        let kill = CString::new(dir.join("cgroup.kill").as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a cgroup path"))?;
        let name = c"faultd-watchdog";
        let null = c"/dev/null";
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two fds into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only makes async-signal-safe system calls on memory prepared before the
        // fork (`kill`, `name`) and ends with `_exit`; it never returns into Rust code.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            // SAFETY: this is the freshly forked child, and `read` is the pipe's read end.
            0 => unsafe { watch(read.as_raw_fd(), &kill, name, null) },
            _ => {
                drop(read);
                Ok(Watchdog { _alive: write })
            }
        }
    }
}

/// The watchdog's whole life. Only async-signal-safe calls: the process was forked from a
/// multi-threaded one.
///
/// # Safety
///
/// Call only in a freshly forked child; `read_fd` is the pipe's read end.
unsafe fn watch(read_fd: i32, kill: &CString, name: &CStr, null: &CStr) -> ! {
    // SAFETY: plain system calls on fds and NUL-terminated buffers prepared before the fork.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::setsid();
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        // Keep only the pipe: a copy of a seccomp listener, a socket or the caller's stdout here would
        // outlive faultd.
        let fd = if libc::dup2(read_fd, 3) == 3 {
            3
        } else {
            read_fd
        };
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
        let devnull = libc::open(null.as_ptr(), libc::O_RDWR);
        if devnull >= 0 {
            for std_fd in 0..3 {
                libc::dup2(devnull, std_fd);
            }
            if devnull > 3 {
                libc::close(devnull);
            }
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(fd, (&raw mut byte).cast(), 1);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
        }
        let kill_fd = libc::open(kill.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if kill_fd >= 0 {
            libc::write(kill_fd, c"1".as_ptr().cast(), 1);
            libc::close(kill_fd);
        }
        libc::_exit(0)
    }
}
