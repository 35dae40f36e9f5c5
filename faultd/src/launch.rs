//! Spawning a service: argv, env and cwd, captured output, cgroup placement and the pre-exec hooks.
//!
//! The child is created in the service's cgroup and runs its steps before `exec` (the session's
//! network namespace, its identity, SIGKILL when faultd dies, the seccomp filter whose listener goes to
//! faultd...): see [`fork`] for
//! the list and its order. Every spawn happens on one long-lived
//! launcher thread, because the kernel sends the parent-death signal when the *thread* that forked
//! exits, not the process.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::enforce::Interceptor;
use crate::enforce::seccomp::{SeccompLaunch, Supervisor};
use crate::reaper::Reaper;
use crate::syscalls::Syscall;

mod fork;
mod program;
pub(crate) use fork::Placement;
pub(crate) use program::check as check_program;

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// argv; `argv[0]` is the program.
    pub argv: Vec<String>,
    /// Variables added to (or, with `clear_env`, making up) the environment.
    pub env: Vec<(String, String)>,
    /// Start from an empty environment.
    pub clear_env: bool,
    /// Working directory.
    pub cwd: Option<std::path::PathBuf>,
    /// The user the service runs as; `None`: as faultd itself.
    pub run_as: Option<RunAs>,
}

/// A user identity a service runs as: uid, primary gid and supplementary groups, resolved in faultd
/// (the forked child cannot read `/etc/group` safely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl RunAs {
    /// The user named `name` in the password database, with its groups.
    pub fn user(name: &str) -> io::Result<RunAs> {
        let cname = std::ffi::CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a user name"))?;
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: all-zero is a valid passwd (pointers null, ids 0); it is only read after success.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf outlives the use of pw's strings.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pw,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc != 0 || found.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("there is no user {name:?} on this host"),
            ));
        }
        Ok(RunAs {
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            groups: group_list(&cname, pw.pw_gid),
        })
    }

    /// The user with id `uid` (primary group `gid`, as its process had it), with the supplementary
    /// groups the password database gives its name; just `gid` for a uid without a name.
    pub fn uid(uid: u32, gid: u32) -> RunAs {
        let groups = user_name(uid)
            .map(|name| group_list(&name, gid))
            .unwrap_or_else(|| vec![gid]);
        RunAs { uid, gid, groups }
    }
}

/// The login name of `uid`, if it has one.
pub(crate) fn user_name(uid: u32) -> Option<std::ffi::CString> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: as in RunAs::user.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: pw_name points into buf, NUL-terminated, after a successful getpwuid_r.
    Some(unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }.to_owned())
}

/// Every group of the user `name` whose primary group is `gid` (which is included).
pub(crate) fn group_list(name: &std::ffi::CStr, gid: u32) -> Vec<u32> {
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let before = n;
        // SAFETY: groups has room for n entries; getgrouplist writes at most n and updates n.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n as usize);
            return groups;
        }
        if n <= before {
            n = before * 2;
        }
        if n > 65_536 {
            return vec![gid];
        }
    }
}

/// A started service's main process and its plumbing.
pub(crate) struct Launched {
    /// Pid of the main process.
    pub pid: i32,
    /// Read end of its stdout.
    pub stdout: OwnedFd,
    /// Read end of its stderr.
    pub stderr: OwnedFd,
    /// The thread answering its seccomp notifications, when it has a filter.
    pub supervisor: Option<Supervisor>,
}

/// Why a service could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaunchError {
    /// argv was empty.
    #[error("the service has no program to run (argv is empty)")]
    EmptyArgv,
    /// The program could not be executed.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// argv[0].
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// The seccomp backend refused.
    #[error(transparent)]
    Seccomp(#[from] crate::enforce::seccomp::SeccompError),
    /// The launcher thread is gone.
    #[error("the launcher thread stopped")]
    LauncherGone,
}

/// Starts `spec`, in the cgroup whose directory `cgroup` is open when given (placed there as
/// `placement` says) and the network namespace `netns` is open on, intercepting `intercept` when
/// non-empty.
pub(crate) async fn launch(
    spec: LaunchSpec,
    cgroup: Option<(OwnedFd, Placement)>,
    netns: Option<OwnedFd>,
    intercept: Vec<&'static Syscall>,
    interceptor: Interceptor,
) -> Result<Launched, LaunchError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The launcher thread works for every session: it takes the caller's span for this job.
    let span = tracing::Span::current();
    launcher()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Box::new(move || {
            let _span = span.enter();
            let _ = tx.send(spawn(spec, cgroup, netns, &intercept, interceptor));
        }))
        .map_err(|_| LaunchError::LauncherGone)?;
    rx.await.map_err(|_| LaunchError::LauncherGone)?
}

type Job = Box<dyn FnOnce() + Send>;

fn launcher() -> &'static Mutex<mpsc::Sender<Job>> {
    static LAUNCHER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    LAUNCHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("launcher".into())
            .spawn(move || rx.into_iter().for_each(|job| job()))
            .expect("spawn the launcher thread");
        Mutex::new(tx)
    })
}

fn spawn(
    spec: LaunchSpec,
    cgroup: Option<(OwnedFd, Placement)>,
    netns: Option<OwnedFd>,
    intercept: &[&'static Syscall],
    interceptor: Interceptor,
) -> Result<Launched, LaunchError> {
    let program = spec.argv.first().ok_or(LaunchError::EmptyArgv)?.clone();
    let spawn_error = |source| LaunchError::Spawn {
        program: program.clone(),
        source,
    };
    // With a filter, the answering thread starts first and waits for the listener: the child's
    // intercepted syscalls (the dynamic loader's, `exec`'s) need answers before `spawn` returns.
    let seccomp = if intercept.is_empty() {
        None
    } else {
        let launch = SeccompLaunch::new(intercept)?;
        let hook = launch.child_hook();
        Some((hook, launch.start(interceptor)?))
    };
    let spawning = Reaper::global().spawning();
    let forked = fork::spawn(
        &spec,
        cgroup.as_ref().map(|(fd, _)| fd),
        cgroup.as_ref().map_or(Placement::Write, |(_, p)| *p),
        netns.as_ref(),
        seccomp.as_ref().map(|(hook, _)| *hook),
    );
    drop(spawning);
    drop(cgroup);
    let supervisor = match (forked.as_ref(), seccomp) {
        (_, None) => None,
        (Ok(_), Some((_, supervisor))) => {
            supervisor.child_spawned();
            Some(supervisor)
        }
        (Err(_), Some((_, supervisor))) => {
            supervisor.shutdown();
            None
        }
    };
    let forked = forked.map_err(spawn_error)?;
    Ok(Launched {
        pid: forked.pid,
        stdout: forked.stdout,
        stderr: forked.stderr,
        supervisor,
    })
}
