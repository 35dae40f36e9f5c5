//! The child's side of a launch: install the filter before `exec` and send the listener to faultd.

use std::io;
use std::os::fd::RawFd;

use super::handoff;

/// What runs in the forked child, before `exec`: installs the filter and sends the listener.
///
/// `Copy` and `Send`, so it moves into a `pre_exec` closure.
#[derive(Debug, Clone, Copy)]
pub struct ChildHook {
    pub(super) fprog: *const libc::sock_fprog,
    pub(super) sock: RawFd,
}

// SAFETY: the hook is two plain values; the pointer is only dereferenced by the kernel in `install`,
// under the contract documented there.
unsafe impl Send for ChildHook {}
// SAFETY: as above; `install` takes `&self` and mutates nothing.
unsafe impl Sync for ChildHook {}

impl ChildHook {
    /// Installs the filter with `NEW_LISTENER | WAIT_KILLABLE_RECV` (without the latter on kernels
    /// older than 5.19, which reject it with `EINVAL`), then sends the listener to faultd.
    ///
    /// `WAIT_KILLABLE_RECV` makes a task whose notification faultd has received ignore non-fatal
    /// signals until answered, so a delayed `write` does not return `EINTR` (which no disk does) nor
    /// get restarted into a second notification. Without `CAP_SYS_ADMIN`, `PR_SET_NO_NEW_PRIVS` is set
    /// first (root needs none). The listener is close-on-exec, so `exec` closes it; the child never
    /// calls `close(2)`, which may be intercepted. Register this as the last `pre_exec` hook: anything
    /// after it would already be intercepted.
    ///
    /// # Safety
    ///
    /// Call only in the forked child (it installs an irrevocable filter on the calling process), while
    /// the [`SeccompLaunch`] it came from, or the [`Supervisor`] that launch became, is alive in the
    /// parent and [`Supervisor::child_spawned`] has not been called yet. It is async-signal-safe: no
    /// allocation, no locks, only raw syscalls.
    pub unsafe fn install(&self) -> io::Result<()> {
        let mut flags =
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        let mut no_new_privs = false;
        let listener = loop {
            // SAFETY: fprog points at a live sock_fprog (contract above); the kernel copies it.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    flags,
                    self.fprog,
                )
            };
            if rc >= 0 {
                break rc as RawFd;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINVAL) if flags & libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0 => {
                    flags &= !libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
                }
                Some(libc::EACCES) if !no_new_privs => {
                    // SAFETY: prctl with integer arguments only.
                    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    no_new_privs = true;
                }
                _ => return Err(err),
            }
        };
        // SAFETY: both fds are open in this (forked, single-threaded) child.
        if let Err(err) = unsafe { handoff::send_listener(self.sock, listener) } {
            // Drop the listener so later intercepted syscalls fail with ENOSYS instead of waiting for a
            // supervisor that will never come. close_range is never intercepted; close may be.
            // SAFETY: closes one fd we own.
            unsafe { libc::syscall(libc::SYS_close_range, listener, listener, 0) };
            return Err(err);
        }
        Ok(())
    }
}
