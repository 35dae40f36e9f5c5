//! What an intercepted syscall acts on: the path of its fd or path argument, or its socket address.
//!
//! Everything is read from outside the target while it waits in the syscall: fds through
//! `readlink /proc/TID/fd/N` (the notification's pid is a thread id, and each thread's `/proc/TID`
//! works), path strings and sockaddrs with `process_vm_readv`. The `/proc/TID/fd` directory of each
//! thread is opened once (`O_PATH`) and kept, so each fd costs one `readlinkat(dir, "N")`; a kept
//! directory belongs to its task, so once the thread is gone it fails (and is reopened) instead of
//! showing another task that got the same tid. Relative paths are joined lexically
//! with the dirfd's path or the thread's cwd: `.` and `..` are folded, symlinks are not followed (that
//! would take more syscalls and race the target anyway). Work happens in caller-provided buffers, so
//! resolving allocates nothing.
//!
//! The usual caveat of user-notification supervisors applies: memory the pointer arguments refer to can
//! change between our read and the kernel's, so a hostile multi-threaded target could show faultd one
//! path and open another. faultd injects faults into cooperative services; it is not a sandbox.
//!
//! # The fd → path cache
//!
//! A `readlink` of `/proc/TID/fd/N` costs about 3.4 µs, a third of the kernel's whole notification
//! round trip, and a path rule pays it on every fd syscall. So each answering thread keeps what it
//! read, per (tid, fd) ([`fdcache`]), and reads again only when the entry is unknown. The cache must
//! never show a stale path, so it is kept exact by the syscalls that could make one:
//!
//! - An fd number changes meaning only by `close`, `close_range`, `dup2`/`dup3` onto it, or the
//!   close-on-exec sweep of `execve`/`execveat`. Every other fd-creating syscall (`open*`, `socket`,
//!   `accept`, `dup`, `fcntl(F_DUPFD)`, `pipe`, `SCM_RIGHTS`, `pidfd_getfd`…) takes a *free* number,
//!   which has no entry (it was never cached, or its `close` removed it). When a service intercepts a
//!   syscall whose target is resolved through an fd, the filter also intercepts those few (plus the
//!   clone family and the renames, below); they are answered at once, without a trace event. A
//!   `close` invalidates that fd number for *every* tid of the service, so which tasks share an fd
//!   table (`CLONE_FILES`, threads, `unshare`) does not matter; `close_range`, the exec family, the
//!   clone family and the renames drop everything.
//! - The notification arrives at the syscall's *entry*: after faultd answers `CONTINUE`, the close
//!   happens a little later, and a `readlink` by faultd in between could still see the old file. So
//!   each such operation stays *pending* until its task is seen in a later notification, or
//!   `/proc/TID/syscall` shows the task gone or in another syscall; while one is pending on an fd,
//!   reads of that fd are used but not kept.
//! - Entries are per tid, not per process: two threads may have different tables. A tid reused by a
//!   new task would inherit a dead task's entries, but a new task is only made by a clone-family
//!   syscall of the service (intercepted: it drops everything, pending until the parent is seen
//!   again). A multi-threaded `execve` moves the caller to the leader's tid and ends the other
//!   threads: its pending operation ends when the caller's old tid is gone, and by then no thread of
//!   that process but the caller is left, which is still in `execve`.
//! - io_uring can close and install fds without syscalls: once `io_uring_setup` was allowed to
//!   proceed, the service's cache is off for good.
//! - fds 0–2 are never cached (the filter does not report every change to them).
//! - Renames change the path an fd shows without changing the fd: the service's own renames drop
//!   the cache; a rename of an open file (or of a directory above it) by a process *outside* the
//!   service is not seen, and the cache keeps showing the name the file had (the one caveat).
//!
//! The other designs measured worse or were not exact. Validating an entry on each use costs a
//! syscall anyway, and nothing cheap identifies an open file: `(dev, ino)` (through `pidfd_getfd` +
//! `fstat`, three syscalls) cannot tell hard links apart nor a new file that reused a freed inode;
//! `/proc/TID/fdinfo/N` is an open, read and close; `kcmp(KCMP_FILE)` needs faultd to hold a
//! duplicate of the file, which would keep sockets open and `flock`s held after the service closed
//! them. The price of the interception above is one round trip per `close`/`dup2`/clone/exec/rename
//! (`cargo bench -p faultd --bench seccomp`, modes `g`/`g0`): about one kernel round trip per closed
//! fd for a service that opens and closes a file per request, against a `readlink` saved on every
//! later fd syscall.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::rules::Target;
use crate::syscalls::ArgKind;

mod fdcache;

use fdcache::FdCache;
pub use fdcache::add_maintenance;

const PATH_MAX: usize = libc::PATH_MAX as usize;

/// Reusable buffers (about 16 KiB, allocated once).
struct Scratch {
    link: [u8; PATH_MAX],
    raw: [u8; PATH_MAX],
    joined: [u8; 2 * PATH_MAX],
}

/// How many `/proc/TID/fd` directories a resolver keeps open.
const MAX_FD_DIRS: usize = 64;

/// Open `/proc/TID/fd` directories by tid.
#[derive(Default)]
struct FdDirs(HashMap<u32, OwnedFd>);

impl FdDirs {
    /// `readlink /proc/<tid>/fd/<fd>` into `out`, through the kept directory of `tid`.
    fn readlink(&mut self, tid: u32, fd: i32, out: &mut [u8]) -> Option<usize> {
        let fd = u32::try_from(fd).ok()?;
        let mut name = [0u8; 12];
        let end = put_u32(&mut name, 0, fd);
        name[end] = 0;
        for _ in 0..2 {
            let (dir, fresh) = match self.0.get(&tid) {
                Some(dir) => (dir.as_raw_fd(), false),
                None => {
                    let dir = open_fd_dir(tid)?;
                    if self.0.len() >= MAX_FD_DIRS {
                        self.0.clear();
                    }
                    (self.0.entry(tid).insert_entry(dir).get().as_raw_fd(), true)
                }
            };
            // SAFETY: name is NUL-terminated; out is writable for out.len() bytes; dir is open.
            let n = unsafe {
                libc::readlinkat(
                    dir,
                    name.as_ptr().cast(),
                    out.as_mut_ptr().cast(),
                    out.len(),
                )
            };
            if let Ok(n) = usize::try_from(n) {
                // n == len means the link may have been truncated.
                return (n < out.len()).then_some(n);
            }
            if fresh {
                return None;
            }
            // A kept directory of an exited thread fails; reopen once (the tid may be a new thread).
            self.0.remove(&tid);
        }
        None
    }

    /// Forgets `tid`'s directory.
    fn forget(&mut self, tid: u32) {
        self.0.remove(&tid);
    }
}

fn open_fd_dir(tid: u32) -> Option<OwnedFd> {
    let mut path = [0u8; 64];
    let mut at = put(&mut path, 0, b"/proc/");
    at = put_u32(&mut path, at, tid);
    at = put(&mut path, at, b"/fd");
    path[at] = 0;
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr().cast(), flags) };
    // SAFETY: a fresh fd nobody else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resolves targets for one answering thread: buffers and open `/proc` directories, reused.
pub struct Resolver {
    scratch: Box<Scratch>,
    dirs: FdDirs,
    fds: FdCache,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new()
    }
}

impl Resolver {
    /// A resolver with fresh buffers.
    pub fn new() -> Resolver {
        Resolver {
            scratch: Box::new(Scratch {
                link: [0; PATH_MAX],
                raw: [0; PATH_MAX],
                joined: [0; 2 * PATH_MAX],
            }),
            dirs: FdDirs::default(),
            fds: FdCache::default(),
        }
    }

    /// Tells the fd cache about notification `nr` of thread `tid`: call it for every notification,
    /// before resolving or answering it.
    pub fn observe(&mut self, tid: u32, nr: u32, args: &[u64; 6]) {
        self.fds.observe(tid, nr, args);
    }

    /// Turns the fd cache off for good (the service may now change fds unseen: io_uring).
    pub fn disable_fd_cache(&mut self) {
        self.fds.disable();
    }

    /// Drops what is kept for thread `tid` (it exited, or its notification went stale).
    pub fn forget(&mut self, tid: u32) {
        self.dirs.forget(tid);
    }

    /// Resolves the target of a syscall of kind `kind` with arguments `args`, issued by thread `tid`.
    pub fn resolve(&mut self, tid: u32, kind: ArgKind, args: &[u64; 6]) -> Resolved<'_> {
        let Resolver {
            scratch: s,
            dirs,
            fds,
        } = self;
        let mut fd_link = |fd: i32, out: &mut [u8; PATH_MAX]| match fds.get(tid, fd) {
            Some(link) => {
                out[..link.len()].copy_from_slice(link);
                Some(link.len())
            }
            None => {
                let n = dirs.readlink(tid, fd, out)?;
                fds.insert(tid, fd, &out[..n]);
                Some(n)
            }
        };
        match kind {
            ArgKind::None => Resolved::None,
            ArgKind::Fd { fd } => match fd_link(args[fd] as i32, &mut s.link) {
                Some(n) => classify(&s.link[..n]),
                None => Resolved::None,
            },
            ArgKind::Path { dirfd, path } => {
                let Some(len) = read_cstr(tid, args[path], &mut s.raw) else {
                    return Resolved::None;
                };
                let rel = &s.raw[..len];
                let joined = if rel.first() == Some(&b'/') {
                    normalize(&[rel], &mut s.joined)
                } else {
                    let base_len = match dirfd.map(|i| args[i] as i32) {
                        Some(fd) if fd != libc::AT_FDCWD => fd_link(fd, &mut s.link),
                        _ => readlink_proc(tid, b"/cwd", &mut s.link),
                    };
                    match base_len {
                        Some(n) if s.link.first() == Some(&b'/') => {
                            normalize(&[strip_deleted(&s.link[..n]), rel], &mut s.joined)
                        }
                        _ => None,
                    }
                };
                match joined {
                    Some(n) => classify(&s.joined[..n]),
                    None => Resolved::None,
                }
            }
            ArgKind::SockAddr { addr, len } => sockaddr(tid, args[addr], args[len] as u32, s),
        }
    }
}

/// The target of one syscall as far as it could be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved<'a> {
    /// Nothing to resolve, or resolution failed (thread gone, bad fd, unreadable pointer).
    None,
    /// An absolute, lexically normalized file path: rules match on it.
    Path(&'a str),
    /// Something shown in the trace but never matched by a file glob: `socket:[123]`, `pipe:[45]`,
    /// `anon_inode:[eventfd]`, a Unix socket address, or a non-UTF-8 path (lossily converted).
    Other(Cow<'a, str>),
    /// An IPv4 or IPv6 socket address.
    Addr(SocketAddr),
}

impl Resolved<'_> {
    /// What rules are matched against.
    pub fn target(&self) -> Target<'_> {
        match self {
            Resolved::Path(p) => Target::Path(p),
            Resolved::Addr(a) => Target::Addr(*a),
            Resolved::None | Resolved::Other(_) => Target::None,
        }
    }

    /// What the trace event shows as `path`.
    pub fn shown(&self) -> Option<String> {
        match self {
            Resolved::None => None,
            Resolved::Path(p) => Some((*p).to_string()),
            Resolved::Other(o) => Some(o.to_string()),
            Resolved::Addr(a) => Some(a.to_string()),
        }
    }
}

/// A path if it is absolute UTF-8, else something to show.
fn classify(bytes: &[u8]) -> Resolved<'_> {
    if bytes.first() == Some(&b'/') {
        match std::str::from_utf8(strip_deleted(bytes)) {
            Ok(p) => Resolved::Path(p),
            Err(_) => Resolved::Other(String::from_utf8_lossy(bytes)),
        }
    } else {
        Resolved::Other(String::from_utf8_lossy(bytes))
    }
}

/// `/tmp/x (deleted)` → `/tmp/x`: the fd of an unlinked file still matches its old name.
fn strip_deleted(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b" (deleted)").unwrap_or(bytes)
}

/// Appends the decimal digits of `n` to `buf` at `at`; returns the new end.
fn put_u32(buf: &mut [u8], mut at: usize, n: u32) -> usize {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        buf[at] = d;
        at += 1;
    }
    at
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) -> usize {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
    at + bytes.len()
}

/// `readlink /proc/<tid><suffix>` into `out`; the length, or `None`.
fn readlink_proc(tid: u32, suffix: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut path = [0u8; 64];
    let mut at = put(&mut path, 0, b"/proc/");
    at = put_u32(&mut path, at, tid);
    at = put(&mut path, at, suffix);
    path[at] = 0;
    readlink(&path, out)
}

fn readlink(cpath: &[u8], out: &mut [u8]) -> Option<usize> {
    // SAFETY: cpath is NUL-terminated (callers write the NUL); out is a writable buffer of out.len().
    let n = unsafe { libc::readlink(cpath.as_ptr().cast(), out.as_mut_ptr().cast(), out.len()) };
    // n == len means the link may have been truncated.
    usize::try_from(n).ok().filter(|&n| n < out.len())
}

/// Reads from the target's memory at `addr` into `out` (as much as is mapped, up to `out.len()`),
/// splitting the remote range at 4 KiB boundaries so an unmapped page after a short string only costs
/// the part after it. Returns the byte count.
fn read_remote(tid: u32, addr: u64, out: &mut [u8]) -> Option<usize> {
    if addr == 0 {
        return None;
    }
    const PAGE: u64 = 4096;
    let mut remote = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 3];
    let mut count = 0;
    let (mut at, end) = (addr, addr.checked_add(out.len() as u64)?);
    while at < end && count < remote.len() {
        let next = ((at / PAGE) + 1).saturating_mul(PAGE).min(end);
        remote[count] = libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: (next - at) as usize,
        };
        count += 1;
        at = next;
    }
    let local = libc::iovec {
        iov_base: out.as_mut_ptr().cast(),
        iov_len: out.len(),
    };
    // SAFETY: the local iovec covers exactly `out`; the remote ones are addresses in the target, which
    // the kernel validates (EFAULT) without touching our memory.
    let n = unsafe {
        libc::process_vm_readv(
            tid as libc::pid_t,
            &local,
            1,
            remote.as_ptr(),
            count as _,
            0,
        )
    };
    usize::try_from(n).ok().filter(|&n| n > 0)
}

/// Reads a NUL-terminated string from the target; its length without the NUL.
fn read_cstr(tid: u32, addr: u64, out: &mut [u8; PATH_MAX]) -> Option<usize> {
    let n = read_remote(tid, addr, out)?;
    out[..n].iter().position(|&b| b == 0)
}

/// Joins `parts` as path components into `out`, folding `.`, `..` and repeated slashes; the result is
/// absolute. Returns its length, or `None` if it does not fit.
fn normalize(parts: &[&[u8]], out: &mut [u8]) -> Option<usize> {
    let mut len = 0usize;
    for part in parts {
        for comp in part.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    len = out[..len].iter().rposition(|&b| b == b'/').unwrap_or(0);
                }
                _ => {
                    let end = len + 1 + comp.len();
                    if end > out.len() {
                        return None;
                    }
                    out[len] = b'/';
                    out[len + 1..end].copy_from_slice(comp);
                    len = end;
                }
            }
        }
    }
    if len == 0 {
        *out.first_mut()? = b'/';
        len = 1;
    }
    Some(len)
}

/// Decodes the sockaddr at `addr` (length `len`) in the target.
fn sockaddr(tid: u32, addr: u64, len: u32, s: &mut Scratch) -> Resolved<'_> {
    let want = (len as usize).min(size_of::<libc::sockaddr_storage>());
    if want < 2 {
        return Resolved::None;
    }
    let buf = &mut s.raw[..want];
    let Some(n) = read_remote(tid, addr, buf) else {
        return Resolved::None;
    };
    let buf = &s.raw[..n];
    let family = u16::from_ne_bytes([buf[0], buf[1]]) as i32;
    match family {
        libc::AF_INET if n >= 8 => {
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            Resolved::Addr(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if n >= 28 => {
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let flow = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&buf[8..24]);
            let scope = u32::from_ne_bytes([buf[24], buf[25], buf[26], buf[27]]);
            let ip = Ipv6Addr::from(octets);
            Resolved::Addr(SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope)))
        }
        libc::AF_UNIX if n > 2 => {
            let path = &buf[2..];
            if path[0] == 0 {
                let name = &path[1..];
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                Resolved::Other(Cow::Owned(format!(
                    "@{}",
                    String::from_utf8_lossy(&name[..end])
                )))
            } else {
                let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                Resolved::Other(String::from_utf8_lossy(&path[..end]))
            }
        }
        _ => Resolved::None,
    }
}

/// The thread group (process) id of thread `tid`, from `/proc/<tid>/status`.
pub fn tgid(tid: u32) -> Option<u32> {
    let mut path = [0u8; 64];
    let mut at = put(&mut path, 0, b"/proc/");
    at = put_u32(&mut path, at, tid);
    at = put(&mut path, at, b"/status");
    path[at] = 0;
    // SAFETY: path is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 512];
    // SAFETY: buf is writable for its length; fd is open.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    let text = &buf[..usize::try_from(n).ok()?];
    let start = text.windows(6).position(|w| w == b"Tgid:\t")? + 6;
    let digits = text[start..].iter().take_while(|b| b.is_ascii_digit());
    let mut v = 0u32;
    for d in digits {
        v = v.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::AsRawFd;

    fn norm(parts: &[&str]) -> String {
        let mut out = [0u8; 256];
        let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        let n = normalize(&parts, &mut out).unwrap();
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn lexical_join() {
        assert_eq!(norm(&["/tmp", "a.wal"]), "/tmp/a.wal");
        assert_eq!(norm(&["/tmp/", "./x/../a.wal"]), "/tmp/a.wal");
        assert_eq!(norm(&["/", "../../etc//passwd"]), "/etc/passwd");
        assert_eq!(norm(&["/a/b", ".."]), "/a");
        assert_eq!(norm(&["/a", "../.."]), "/");
        assert_eq!(norm(&["//x///y/"]), "/x/y");
        let mut tiny = [0u8; 4];
        assert_eq!(normalize(&[b"/abcdef"], &mut tiny), None);
    }

    #[test]
    fn resolves_own_fds_paths_and_addresses() {
        let me = std::process::id();
        // SAFETY: gettid has no preconditions.
        let tid = u32::try_from(unsafe { libc::gettid() }).unwrap();
        let dir = std::env::temp_dir().join(format!("faultd-resolve-{me}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::File::create(dir.join("a.wal")).unwrap();
        let mut r = Resolver::new();
        let mut args = [file.as_raw_fd() as u64, 0, 0, 0, 0, 0];
        let want = dir.join("a.wal");
        assert_eq!(
            r.resolve(tid, ArgKind::Fd { fd: 0 }, &args),
            Resolved::Path(want.to_str().unwrap())
        );
        // A bad fd does not resolve.
        args[0] = 100_000;
        assert_eq!(r.resolve(tid, ArgKind::Fd { fd: 0 }, &args), Resolved::None);

        // openat(dirfd, "sub/../a.wal"): relative to the dirfd.
        let d = std::fs::File::open(&dir).unwrap();
        let rel = CString::new("sub/../a.wal").unwrap();
        let args = [d.as_raw_fd() as u64, rel.as_ptr() as u64, 0, 0, 0, 0];
        let at = ArgKind::Path {
            dirfd: Some(0),
            path: 1,
        };
        assert_eq!(
            r.resolve(tid, at, &args),
            Resolved::Path(want.to_str().unwrap())
        );
        // AT_FDCWD: relative to the cwd.
        let cwd = std::env::current_dir().unwrap();
        let args = [libc::AT_FDCWD as u64, rel.as_ptr() as u64, 0, 0, 0, 0];
        let expect = cwd.join("a.wal");
        assert_eq!(
            r.resolve(tid, at, &args),
            Resolved::Path(expect.to_str().unwrap())
        );
        // Unreadable pointer.
        let args = [libc::AT_FDCWD as u64, 8, 0, 0, 0, 0];
        assert_eq!(r.resolve(tid, at, &args), Resolved::None);

        // connect(fd, sockaddr_in 127.0.0.1:18080)
        // SAFETY: sockaddr_in is plain data.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as _;
        sin.sin_port = 18080u16.to_be();
        sin.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let args = [
            3,
            &sin as *const _ as u64,
            size_of_val(&sin) as u64,
            0,
            0,
            0,
        ];
        let kind = ArgKind::SockAddr { addr: 1, len: 2 };
        assert_eq!(
            r.resolve(tid, kind, &args),
            Resolved::Addr("127.0.0.1:18080".parse().unwrap())
        );
        let args = [3, 0, 0, 0, 0, 0];
        assert_eq!(r.resolve(tid, kind, &args), Resolved::None);

        assert_eq!(tgid(tid), Some(me));
        drop(file);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sockets_and_deleted_files_classify() {
        assert_eq!(
            classify(b"socket:[123]"),
            Resolved::Other("socket:[123]".into())
        );
        assert_eq!(
            classify(b"/tmp/x.wal (deleted)"),
            Resolved::Path("/tmp/x.wal")
        );
        assert!(matches!(classify(b"/tmp/\xff"), Resolved::Other(_)));
    }
}
