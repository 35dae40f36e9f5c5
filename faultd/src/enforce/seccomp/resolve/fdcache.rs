//! The fd → path cache of one service, kept exact by the syscalls that replace or remove fds (the
//! reasoning is in the [`resolve`](super) module doc).
//!
//! Entries are keyed by (fd, tid): threads may have fd tables of their own (`clone` without
//! `CLONE_FILES`, `unshare`), so a tid's entry only says what its own table said. Invalidation is by fd
//! number across every tid of the service, which is right whatever tables are shared.

use std::collections::HashMap;

use crate::rules::NrSet;
use crate::syscalls::{ArgKind, Syscall};

/// Entries kept at most (then the cache starts over).
const MAX_ENTRIES: usize = 4096;
/// Unfinished operations tracked at most (then the finished ones are pruned).
const MAX_PENDING: usize = 256;

const fn maint(name: &'static str, nr: i64) -> Syscall {
    Syscall {
        name,
        nr: nr as u32,
        args: ArgKind::None,
    }
}

/// Syscalls that replace or remove fds, or change what paths name: each one invalidates the cache.
#[cfg(target_arch = "x86_64")]
static MAINTENANCE: &[Syscall] = &[
    maint("close", libc::SYS_close),
    maint("close_range", libc::SYS_close_range),
    maint("dup2", libc::SYS_dup2),
    maint("dup3", libc::SYS_dup3),
    maint("clone", libc::SYS_clone),
    maint("clone3", libc::SYS_clone3),
    maint("fork", libc::SYS_fork),
    maint("vfork", libc::SYS_vfork),
    maint("execve", libc::SYS_execve),
    maint("execveat", libc::SYS_execveat),
    maint("rename", libc::SYS_rename),
    maint("renameat", libc::SYS_renameat),
    maint("renameat2", libc::SYS_renameat2),
];

/// Syscalls that replace or remove fds, or change what paths name: each one invalidates the cache.
#[cfg(target_arch = "aarch64")]
static MAINTENANCE: &[Syscall] = &[
    maint("close", libc::SYS_close),
    maint("close_range", libc::SYS_close_range),
    maint("dup3", libc::SYS_dup3),
    maint("clone", libc::SYS_clone),
    maint("clone3", libc::SYS_clone3),
    maint("execve", libc::SYS_execve),
    maint("execveat", libc::SYS_execveat),
    maint("renameat", libc::SYS_renameat),
    maint("renameat2", libc::SYS_renameat2),
];

/// Adds to `set` the syscalls the cache needs to see, when some syscall of `set` has its target
/// resolved through an fd; returns the numbers added (intercepted for the cache alone: answered at
/// once, without a trace event, unless a rule names them).
pub fn add_maintenance(set: &mut Vec<&'static Syscall>) -> NrSet {
    let mut added = NrSet::default();
    let uses_fds = set.iter().any(|s| {
        matches!(
            s.args,
            ArgKind::Fd { .. } | ArgKind::Path { dirfd: Some(_), .. }
        )
    });
    if uses_fds {
        for sc in MAINTENANCE {
            if !set.iter().any(|s| s.nr == sc.nr) {
                set.push(sc);
                added.insert(sc.nr);
            }
        }
    }
    added
}

/// What an intercepted syscall does to fd tables, as far as the cache cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// This fd number may be removed or replaced.
    Fd(u32),
    /// Any fd may be removed or replaced, a new task may take a dead one's tid, or a path changed.
    All,
}

fn change(nr: u32, args: &[u64; 6]) -> Option<Change> {
    // A negative fd fails with EBADF and changes nothing.
    let fd = |a: u64| u32::try_from(a as u32 as i32).ok().map(Change::Fd);
    let sc = MAINTENANCE.iter().find(|s| s.nr == nr)?;
    match sc.name {
        "close" => fd(args[0]),
        "dup2" | "dup3" => fd(args[1]),
        _ => Some(Change::All),
    }
}

/// An operation faultd let proceed that may not have taken effect yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    tid: u32,
    nr: u32,
    arg0: u64,
    change: Change,
}

impl Pending {
    fn covers(&self, fd: u32) -> bool {
        match self.change {
            Change::All => true,
            Change::Fd(n) => n == fd,
        }
    }
}

/// What `readlink` said for one fd of one tid: (tid, link).
type Link = (u32, Box<[u8]>);

/// See the module doc.
#[derive(Debug, Default)]
pub(super) struct FdCache {
    by_fd: HashMap<u32, Vec<Link>>,
    len: usize,
    pending: Vec<Pending>,
    disabled: bool,
}

impl FdCache {
    /// Called for every notification, before it is resolved or answered.
    pub(super) fn observe(&mut self, tid: u32, nr: u32, args: &[u64; 6]) {
        if !self.pending.is_empty() {
            // The task is in its next syscall: whatever it did before has taken effect.
            self.pending.retain(|p| p.tid != tid);
        }
        if self.disabled {
            return;
        }
        let Some(change) = change(nr, args) else {
            return;
        };
        match change {
            Change::Fd(fd) => {
                if let Some(list) = self.by_fd.remove(&fd) {
                    self.len -= list.len();
                }
            }
            Change::All => self.clear(),
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.retain(|p| !finished(p));
        }
        self.pending.push(Pending {
            tid,
            nr,
            arg0: args[0],
            change,
        });
    }

    /// The cached link of `fd` in `tid`'s table.
    pub(super) fn get(&self, tid: u32, fd: i32) -> Option<&[u8]> {
        let fd = u32::try_from(fd).ok().filter(|&fd| fd > 2)?;
        let list = self.by_fd.get(&fd)?;
        list.iter().find(|(t, _)| *t == tid).map(|(_, l)| &**l)
    }

    /// Remembers what `readlink` said for `fd` of `tid`, unless an operation on that fd may still be
    /// in flight (the link may then describe the fd as it was before it).
    pub(super) fn insert(&mut self, tid: u32, fd: i32, link: &[u8]) {
        let Some(fd) = u32::try_from(fd).ok().filter(|&fd| fd > 2) else {
            return;
        };
        if self.disabled {
            return;
        }
        if self.pending.iter().any(|p| p.covers(fd)) {
            self.pending.retain(|p| !p.covers(fd) || !finished(p));
            if self.pending.iter().any(|p| p.covers(fd)) {
                return;
            }
        }
        if self.len >= MAX_ENTRIES {
            self.clear();
        }
        let list = self.by_fd.entry(fd).or_default();
        let before = list.len();
        list.retain(|(t, _)| *t != tid);
        list.push((tid, link.into()));
        self.len = self.len + list.len() - before;
    }

    /// Stops caching for good: fds may now change without a syscall faultd sees (io_uring).
    pub(super) fn disable(&mut self) {
        self.disabled = true;
        self.clear();
        self.pending.clear();
    }

    fn clear(&mut self) {
        self.by_fd.clear();
        self.len = 0;
    }
}

/// Whether the operation has certainly taken effect (or never will): its task is gone, or is now in
/// another syscall, per `/proc/TID/syscall`. "running" (in user space, or still in that syscall) and
/// "the same syscall with the same first argument" count as not finished.
fn finished(p: &Pending) -> bool {
    let mut path = [0u8; 64];
    let mut at = super::put(&mut path, 0, b"/proc/");
    at = super::put_u32(&mut path, at, p.tid);
    at = super::put(&mut path, at, b"/syscall");
    path[at] = 0;
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return true;
    }
    let mut buf = [0u8; 128];
    // SAFETY: buf is writable for its length; fd is open.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    let Ok(n) = usize::try_from(n) else {
        return true; // the task died between open and read
    };
    let text = std::str::from_utf8(&buf[..n]).unwrap_or("running");
    let mut words = text.split_whitespace();
    let Some(Ok(nr)) = words.next().map(str::parse::<i64>) else {
        return false; // "running"
    };
    let arg0 = words
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    !(nr == i64::from(p.nr) && arg0 == Some(p.arg0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOSE: u32 = libc::SYS_close as u32;
    const DUP3: u32 = libc::SYS_dup3 as u32;
    const CLONE: u32 = libc::SYS_clone as u32;
    const WRITE: u32 = libc::SYS_write as u32;

    fn args(a: u64, b: u64) -> [u64; 6] {
        [a, b, 0, 0, 0, 0]
    }

    /// A tid that certainly has no task: `/proc/TID/syscall` does not exist, so its operations count
    /// as finished as soon as anyone asks.
    const GONE: u32 = u32::MAX - 1;

    #[test]
    fn maintenance_is_added_only_where_fds_are_resolved() {
        let mut set = crate::syscalls::expand("connect").unwrap();
        assert_eq!(add_maintenance(&mut set), NrSet::default());
        assert_eq!(set.len(), 1);
        let mut set = crate::syscalls::expand("write").unwrap();
        set.push(crate::syscalls::lookup("close").unwrap());
        let added = add_maintenance(&mut set);
        assert!(added.contains(DUP3) && added.contains(CLONE));
        assert!(
            !added.contains(CLOSE),
            "close was asked for: it stays the user's"
        );
        assert!(set.iter().filter(|s| s.nr == CLOSE).count() == 1);
    }

    #[test]
    fn close_and_dup_invalidate_the_fd_for_every_thread() {
        let mut c = FdCache::default();
        c.insert(10, 5, b"/a");
        c.insert(11, 5, b"/a");
        c.insert(10, 6, b"/b");
        assert_eq!(c.get(11, 5), Some(&b"/a"[..]));
        assert_eq!(c.get(12, 5), None, "another thread's table is not assumed");
        c.observe(11, CLOSE, &args(5, 0));
        assert_eq!((c.get(10, 5), c.get(11, 5)), (None, None));
        assert_eq!(c.get(10, 6), Some(&b"/b"[..]));
        c.observe(10, DUP3, &args(7, 6));
        assert_eq!(c.get(10, 6), None);
        // fds 0-2 are never cached (the filter does not report every change to them).
        c.insert(10, 1, b"/log");
        assert_eq!(c.get(10, 1), None);
    }

    #[test]
    fn nothing_is_cached_for_an_fd_while_an_operation_on_it_may_be_in_flight() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        // A task that spins in user space: /proc says "running", as it would in the middle of close.
        let (stop, tid) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU32::new(0)),
        );
        let spinner = {
            let (stop, tid) = (stop.clone(), tid.clone());
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid.store(unsafe { libc::gettid() } as u32, Ordering::SeqCst);
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        while tid.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let me = tid.load(Ordering::SeqCst);
        let mut c = FdCache::default();
        c.observe(me, CLOSE, &args(5, 0));
        // This thread is "running" per /proc: the close may not have happened; a readlink done now
        // may show the old file.
        c.insert(30, 5, b"/old");
        assert_eq!(c.get(30, 5), None);
        c.insert(30, 6, b"/other");
        assert_eq!(
            c.get(30, 6),
            Some(&b"/other"[..]),
            "other fds are unaffected"
        );
        // The closing task's next notification proves the close done.
        c.observe(me, WRITE, &args(9, 0));
        c.insert(30, 5, b"/new");
        assert_eq!(c.get(30, 5), Some(&b"/new"[..]));
        // A task that is gone finished (or never will do) its operation.
        c.observe(GONE, CLOSE, &args(5, 0));
        assert_eq!(c.get(30, 5), None);
        c.insert(30, 5, b"/newer");
        assert_eq!(c.get(30, 5), Some(&b"/newer"[..]));
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
    }

    #[test]
    fn clone_exec_and_rename_flush_everything_and_io_uring_disables() {
        let mut c = FdCache::default();
        c.insert(10, 5, b"/a");
        c.insert(10, 6, b"/b");
        c.observe(GONE, CLONE, &args(0, 0));
        assert_eq!((c.get(10, 5), c.get(10, 6)), (None, None));
        c.insert(10, 5, b"/a");
        c.observe(GONE, libc::SYS_renameat2 as u32, &args(0, 0));
        assert_eq!(c.get(10, 5), None);
        c.disable();
        c.insert(10, 5, b"/a");
        assert_eq!(c.get(10, 5), None);
    }
}
