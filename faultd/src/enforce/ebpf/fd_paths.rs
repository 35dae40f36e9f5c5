//! The file paths of traced processes' fds, kept from the tracer's own records so an observed fd
//! syscall (a `write` no rule concerns, say) carries the path of its fd.
//!
//! The map `(tgid, fd) → path` follows the records in the order the ring delivers them (one thread's
//! records in its order): a successful `open`/`openat`/`openat2`/`creat` takes the absolute path the
//! tracer read from the call's argument at its exit (a relative one is read from `/proc/TGID/fd/FD`,
//! once per open, not per write), `dup`/`dup2`/`dup3` copy the old fd's path,
//! `close` forgets it (and reports it), fd-creating calls that are not files (`socket`, `accept`, …)
//! forget the number, `execve` and `exit_group` forget the process. An fd first seen in another call
//! (inherited, or opened before tracing began) is looked up in `/proc` once. Only absolute paths are
//! kept: sockets, pipes and anonymous inodes have none. The `/proc` lookups happen when the reader
//! handles the record (up to the tracer's poll interval later), so an fd closed and reopened within
//! that time may show the later file; the map is bounded ([`MAX_ENTRIES`], then it starts over).

use std::collections::HashMap;
use std::sync::Arc;

use faultd_ebpf::TraceEvent;

use crate::syscalls::{self, ArgKind};

/// Most fds remembered.
pub(super) const MAX_ENTRIES: usize = 1 << 16;

/// `(tgid, fd) → path` (`None`: known not to be a file).
#[derive(Default)]
pub(crate) struct FdPaths {
    map: HashMap<(u32, i64), Option<Arc<str>>>,
}

fn proc_path(pid: u32, fd: i64) -> Option<Arc<str>> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let text = link.to_str()?;
    (text.starts_with('/') && !text.ends_with(" (deleted)")).then(|| Arc::from(text))
}

impl FdPaths {
    /// Updates the map with record `e` (named `name`) and returns the path its fd refers to, if known.
    /// `opened` is the path argument of a successful open, as the tracer read it at the call's exit.
    pub(crate) fn observe(
        &mut self,
        e: &TraceEvent,
        name: &str,
        opened: Option<&str>,
    ) -> Option<Arc<str>> {
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        let ok = e.retval().is_some_and(|r| r >= 0);
        let ret = e.retval().unwrap_or(-1);
        match name {
            "open" | "openat" | "openat2" | "creat" if ok => {
                let path = match opened {
                    Some(p) if p.starts_with('/') => Some(Arc::from(p)),
                    // Relative to the cwd (or a dirfd): what /proc says, while the fd is open.
                    _ => proc_path(e.pid, ret),
                };
                self.map.insert((e.pid, ret), path.clone());
                path
            }
            "dup" | "dup2" | "dup3" if ok => {
                let path = self.lookup(e.pid, e.arg0);
                self.map.insert((e.pid, ret), path.clone());
                path
            }
            "close" => self.map.remove(&(e.pid, e.arg0)).flatten(),
            "socket" | "accept" | "accept4" | "epoll_create" | "epoll_create1" | "eventfd"
            | "eventfd2" | "memfd_create" | "timerfd_create" | "signalfd" | "signalfd4"
            | "inotify_init" | "inotify_init1" | "pidfd_open" | "userfaultfd" | "fanotify_init"
            | "io_uring_setup" | "perf_event_open" | "bpf"
                if ok =>
            {
                self.map.insert((e.pid, ret), None);
                None
            }
            "execve" | "execveat" | "exit_group" => {
                self.map.retain(|(pid, _), _| *pid != e.pid);
                None
            }
            _ => match syscalls::by_nr(e.nr).map(|s| s.args) {
                Some(ArgKind::Fd { fd: 0 }) => self.lookup(e.pid, e.arg0),
                _ => None,
            },
        }
    }

    fn lookup(&mut self, pid: u32, fd: i64) -> Option<Arc<str>> {
        if fd < 0 {
            return None;
        }
        self.map
            .entry((pid, fd))
            .or_insert_with(|| proc_path(pid, fd))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use faultd_ebpf::TRACE_HAS_RETVAL;

    fn record(nr: i64, arg0: i64, retval: i64) -> TraceEvent {
        TraceEvent {
            pid: std::process::id(),
            tid: std::process::id(),
            nr: nr as u32,
            arg0,
            retval,
            flags: TRACE_HAS_RETVAL,
            ..TraceEvent::default()
        }
    }

    #[test]
    fn paths_follow_open_dup_and_close() {
        let dir = std::env::temp_dir().join(format!("fd-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file_path = dir.join("wal");
        let file = std::fs::File::create(&file_path).unwrap();
        let fd = i64::from(file.as_raw_fd());
        let want = file_path.to_str().unwrap();
        let mut paths = FdPaths::default();

        let open = paths.observe(&record(libc::SYS_openat, -100, fd), "openat", Some(want));
        assert_eq!(open.as_deref(), Some(want));
        // A write on it, even after the file is gone from /proc's view, comes from the map.
        let write = paths.observe(&record(libc::SYS_write, fd, -5), "write", None);
        assert_eq!(write.as_deref(), Some(want));
        let dup = paths.observe(&record(libc::SYS_dup, fd, 4242), "dup", None);
        assert_eq!(dup.as_deref(), Some(want));
        let close = paths.observe(&record(libc::SYS_close, fd, 0), "close", None);
        assert_eq!(close.as_deref(), Some(want));
        // The number reused by a socket: no path.
        paths.observe(&record(libc::SYS_socket, 2, fd), "socket", None);
        assert_eq!(
            paths.observe(&record(libc::SYS_write, fd, 1), "write", None),
            None
        );
        // The dup'ed fd still names the file.
        assert_eq!(
            paths
                .observe(&record(libc::SYS_fsync, 4242, 0), "fsync", None)
                .as_deref(),
            Some(want)
        );
        drop(file);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_fd_first_seen_in_a_write_is_looked_up_once() {
        let mut paths = FdPaths::default();
        // stdin of the test process: a pipe, a tty or /dev/null; only the last is a path.
        let p = paths.observe(&record(libc::SYS_write, 1_000_000, 1), "write", None);
        assert_eq!(p, None);
        assert_eq!(paths.map.len(), 1);
    }
}
