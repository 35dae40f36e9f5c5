//! Forking a service's main process and running its steps before `exec`.
//!
//! The child is created straight in its cgroup with `clone3(CLONE_INTO_CGROUP)`: joining afterwards
//! by writing `cgroup.procs` is a cgroup migration, which costs tens of milliseconds on a quiet host
//! (it waits for an RCU grace period). Where the kernel has no `clone3` (`ENOSYS`, before 5.3) or
//! refuses `CLONE_INTO_CGROUP` (`EINVAL` or `E2BIG`, before 5.7), the child is forked and writes `0`
//! to `cgroup.procs` instead; the first refusal is remembered.
//!
//! The child's steps, in this order, each a raw syscall on data prepared in the parent (the child of
//! a multi-threaded process may only make async-signal-safe calls: no allocation, no lock, and no
//! libc wrapper that assumes its threads, such as `setuid`'s):
//!
//! 1. join the cgroup by writing `cgroup.procs` (only without `CLONE_INTO_CGROUP`),
//! 2. a process group of its own,
//! 3. stdin from `/dev/null`, stdout and stderr into the pipes faultd reads,
//! 4. the working directory,
//! 5. default `SIGPIPE` (faultd ignores it; an ignored signal stays ignored across `exec`) and an
//!    empty signal mask,
//! 6. the session's network namespace (`setns` on an fd the parent opened; [`crate::netns`]), before
//!    7: entering a namespace needs `CAP_SYS_ADMIN`,
//! 7. the caller's identity (`setgroups`, `setgid`, `setuid`), when the service runs as someone else,
//! 8. SIGKILL when faultd's launcher thread dies (`PR_SET_PDEATHSIG`, after 7, which clears it),
//! 9. the seccomp filter, last: any syscall after it may be intercepted,
//!
//! then `execve`. A failing step sends its number and errno on a close-on-exec pipe and exits 127;
//! the parent reads that pipe until `exec` closes it.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::enforce::seccomp::ChildHook;

use super::{LaunchSpec, RunAs};

/// `clone3` flag: create the child in the cgroup given by `cgroup` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Whether `clone3(CLONE_INTO_CGROUP)` may work here: cleared at its first refusal.
static INTO_CGROUP: AtomicBool = AtomicBool::new(true);

/// How the child gets into its cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// `clone3(CLONE_INTO_CGROUP)`, falling back to [`Placement::Write`] where refused (and from
    /// then on, see [`Placement::current`]).
    Clone3,
    /// `fork`, then the child writes `cgroup.procs`.
    Write,
}

impl Placement {
    /// `Clone3` until the kernel refused it once, then `Write`.
    pub(crate) fn current() -> Placement {
        if INTO_CGROUP.load(Ordering::Relaxed) {
            Placement::Clone3
        } else {
            Placement::Write
        }
    }
}

/// The kernel's `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A forked and exec'd child.
pub(crate) struct Forked {
    /// Its pid.
    pub(crate) pid: i32,
    /// Read end of its stdout.
    pub(crate) stdout: OwnedFd,
    /// Read end of its stderr.
    pub(crate) stderr: OwnedFd,
}

/// What the child needs, allocated before the fork.
struct Prepared {
    program: CString,
    _argv: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    groups: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)>,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
}

fn prepare(spec: &LaunchSpec) -> io::Result<Prepared> {
    let first = spec
        .argv
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "argv is empty"))?;
    let program = if first.contains('/') {
        Path::new(first).to_owned()
    } else {
        super::program::resolve(first, std::env::var_os("PATH").as_deref())
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?
    };
    let program = cstring(program.as_os_str().as_bytes())?;
    let argv = spec
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let mut env: Vec<(OsString, OsString)> = if spec.clear_env {
        Vec::new()
    } else {
        std::env::vars_os()
            .filter(|(k, _)| !spec.env.iter().any(|(name, _)| OsStr::new(name) == k))
            .collect()
    };
    env.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
    let envp = env
        .into_iter()
        .map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend(v.into_vec());
            cstring(&entry)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let pointers = |v: &[CString]| {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    Ok(Prepared {
        program,
        argv: pointers(&argv),
        _argv: argv,
        envp: pointers(&envp),
        _envp: envp,
        cwd: spec
            .cwd
            .as_ref()
            .map(|c| cstring(c.as_os_str().as_bytes()))
            .transpose()?,
        groups: spec.run_as.as_ref().map(|RunAs { uid, gid, groups }| {
            (groups.clone(), *gid as libc::gid_t, *uid as libc::uid_t)
        }),
    })
}

/// A pipe whose both ends are close-on-exec: (read, write).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Opens `path` (relative to `dir` when given) close-on-exec with `flags`.
fn open_at(dir: Option<RawFd>, path: &str, flags: i32) -> io::Result<OwnedFd> {
    let path = cstring(path.as_bytes())?;
    let dir = dir.unwrap_or(libc::AT_FDCWD);
    // SAFETY: path is NUL-terminated; openat returns a new fd or -1.
    let fd = unsafe { libc::openat(dir, path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The fds the child's steps use (raw, copied into the child by the fork).
struct ChildFds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// `cgroup.procs`, when the child joins by writing it.
    procs: Option<RawFd>,
    /// The session's network namespace, when it has one.
    netns: Option<RawFd>,
    /// Where a failing step reports.
    report: RawFd,
}

/// Forks `spec` into the cgroup whose directory `cgroup` is open (placed as `placement` says) and the
/// network namespace `netns` is open on, runs the child's steps (with `seccomp` last) and execs it. Call with the reaper's spawning guard held:
/// a child that fails before `exec` is waited for here.
pub(crate) fn spawn(
    spec: &LaunchSpec,
    cgroup: Option<&OwnedFd>,
    placement: Placement,
    netns: Option<&OwnedFd>,
    seccomp: Option<ChildHook>,
) -> io::Result<Forked> {
    let prepared = prepare(spec)?;
    let stdin = open_at(None, "/dev/null", libc::O_RDONLY)?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let mut fds = ChildFds {
        stdin: stdin.as_raw_fd(),
        stdout: stdout_w.as_raw_fd(),
        stderr: stderr_w.as_raw_fd(),
        procs: None,
        netns: netns.map(AsRawFd::as_raw_fd),
        report: report_w.as_raw_fd(),
    };
    let mut procs = None;
    let mut pid = -1;
    if let Some(dir) = cgroup
        && placement == Placement::Clone3
    {
        match clone_into(dir.as_raw_fd()) {
            Ok(p) => pid = p,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG)
                ) =>
            {
                tracing::debug!(
                    "clone3(CLONE_INTO_CGROUP) refused ({e}); joining cgroups by cgroup.procs"
                );
                INTO_CGROUP.store(false, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    if pid < 0 {
        if let Some(dir) = cgroup {
            let fd = open_at(Some(dir.as_raw_fd()), "cgroup.procs", libc::O_WRONLY)?;
            fds.procs = Some(fd.as_raw_fd());
            procs = Some(fd);
        }
        // SAFETY: the child only runs `child` (async-signal-safe) and never returns from it.
        pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if pid == 0 {
        // SAFETY: in the child of the fork above, on memory prepared before it.
        unsafe { child(&prepared, &fds, seccomp) }
    }
    drop((stdin, stdout_w, stderr_w, report_w, procs));
    match read_report(&report_r) {
        None => Ok(Forked {
            pid,
            stdout: stdout_r,
            stderr: stderr_r,
        }),
        Some((step, errno)) => {
            let mut status = 0;
            // SAFETY: waits for our own child, which has exited or is exiting.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let e = io::Error::from_raw_os_error(errno);
            Err(io::Error::new(e.kind(), format!("{}: {e}", STEPS[step])))
        }
    }
}

/// What each step of the child does, for a failure's message.
const STEPS: [&str; 10] = [
    "joining its cgroup",
    "making its process group",
    "redirecting its output",
    "changing to its working directory",
    "resetting its signals",
    "joining the session's network namespace",
    "taking its user's identity",
    "asking for SIGKILL when faultd dies",
    "installing its seccomp filter",
    "exec",
];

/// `clone3` with `CLONE_INTO_CGROUP`: the child's pid in the parent, 0 in the child.
fn clone_into(cgroup: RawFd) -> io::Result<i32> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    // SAFETY: args is a valid clone_args of the size given; without CLONE_VM the child gets a copy
    // of this address space, as with fork, and returns here on its own copy of the stack.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid as i32)
}

/// The failed step and its errno, if the child reported one before `exec`.
fn read_report(report: &OwnedFd) -> Option<(usize, i32)> {
    let mut buf = [0u8; 8];
    loop {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::read(report.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n != 8 {
            return None;
        }
        let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        return Some((step.min(STEPS.len() - 1), errno));
    }
}

/// The child's steps, then `execve`; never returns.
///
/// # Safety
///
/// Only in a freshly forked child, with everything `prepared` and `fds` point to alive.
unsafe fn child(prepared: &Prepared, fds: &ChildFds, seccomp: Option<ChildHook>) -> ! {
    let fail = |step: u32| -> ! {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: raw write and _exit, async-signal-safe.
        unsafe {
            libc::write(fds.report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: every call below is a raw syscall on fds and memory valid in this child.
    unsafe {
        if let Some(procs) = fds.procs
            && libc::write(procs, b"0".as_ptr().cast(), 1) != 1
        {
            fail(0);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(1);
        }
        for (from, to) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
            let ok = if from == to {
                libc::fcntl(to, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(from, to) == to
            };
            if !ok {
                fail(2);
            }
        }
        if let Some(cwd) = &prepared.cwd
            && libc::chdir(cwd.as_ptr()) != 0
        {
            fail(3);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR
            || libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &empty as *const libc::sigset_t,
                std::ptr::null_mut::<libc::sigset_t>(),
                8usize,
            ) != 0
        {
            fail(4);
        }
        if let Some(ns) = fds.netns
            && libc::setns(ns, libc::CLONE_NEWNET) != 0
        {
            fail(5);
        }
        // Groups, then gid, then uid: after setuid the others are no longer allowed. Raw syscalls:
        // glibc's wrappers would try to change the parent's other threads too.
        if let Some((groups, gid, uid)) = &prepared.groups
            && (libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setgid, *gid) != 0
                || libc::syscall(libc::SYS_setuid, *uid) != 0)
        {
            fail(6);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(7);
        }
        if let Some(hook) = seccomp
            && hook.install().is_err()
        {
            fail(8);
        }
        libc::execve(
            prepared.program.as_ptr(),
            prepared.argv.as_ptr(),
            prepared.envp.as_ptr(),
        );
        fail(9)
    }
}

#[cfg(test)]
mod tests;
