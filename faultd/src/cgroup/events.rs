//! Waiting for a change of a cgroup's `cgroup.events` (its `populated` line going to 0, say): the
//! kernel reports each change to inotify as a modification of the file, so a stop wakes as soon as
//! the last process exits instead of polling.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// Longest wait for a notification before the caller looks again anyway (a lost event costs this).
const RECHECK: Duration = Duration::from_millis(100);

/// An inotify watch on one `cgroup.events` file.
pub(super) struct EventsWatch(AsyncFd<OwnedFd>);

impl EventsWatch {
    /// Watches `events` (a `cgroup.events` path) for modifications. Must run inside a tokio runtime.
    pub(super) fn new(events: &Path) -> io::Result<EventsWatch> {
        let path = std::ffi::CString::new(events.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a cgroup path"))?;
        // SAFETY: inotify_init1 has no memory-safety preconditions.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by inotify_init1 and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: path is NUL-terminated and outlives the call.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open for its lifetime.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(EventsWatch(fd))
    }

    /// Waits until the file changes (or [`RECHECK`] passes), consuming the notifications so far.
    pub(super) async fn changed(&self) {
        let _ = tokio::time::timeout(RECHECK, self.drain()).await;
    }

    async fn drain(&self) -> io::Result<()> {
        let mut guard = self.0.readable().await?;
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::read(
                    self.0.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    return Ok(());
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(());
            }
        }
    }
}
