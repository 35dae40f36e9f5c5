//! Spawning a service: argv, env and cwd, captured output, cgroup placement and the pre-exec hooks.
//!
//! In the forked child, before `exec`, in this order: join the service's cgroup (write `0` to its
//! `cgroup.procs`, opened by the parent), ask for SIGKILL when faultd dies (`PR_SET_PDEATHSIG`), and
//! install the seccomp filter whose listener goes to faultd. Every spawn happens on one long-lived
//! launcher thread, because the kernel sends the parent-death signal when the *thread* that forked
//! exits, not the process.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::enforce::Interceptor;
use crate::enforce::seccomp::{SeccompError, SeccompLaunch, Supervisor};
use crate::syscalls::Syscall;

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
}

/// A started service's main process and its plumbing.
pub struct Launched {
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
pub enum LaunchError {
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

/// Starts `spec`, in `cgroup_procs`' cgroup when given, intercepting `intercept` when non-empty.
pub async fn launch(
    spec: LaunchSpec,
    cgroup_procs: Option<OwnedFd>,
    intercept: Vec<&'static Syscall>,
    interceptor: Interceptor,
) -> Result<Launched, LaunchError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    launcher()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Box::new(move || {
            let _ = tx.send(spawn(spec, cgroup_procs, &intercept, interceptor));
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
    cgroup_procs: Option<OwnedFd>,
    intercept: &[&'static Syscall],
    interceptor: Interceptor,
) -> Result<Launched, LaunchError> {
    let program = spec.argv.first().ok_or(LaunchError::EmptyArgv)?.clone();
    let mut cmd = Command::new(&program);
    cmd.args(&spec.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if spec.clear_env {
        cmd.env_clear();
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }

    let procs_fd = cgroup_procs.as_ref().map(|fd| fd.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe raw
    // syscalls on data prepared in the parent; it does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = procs_fd
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawn_error = |source| LaunchError::Spawn {
        program: program.clone(),
        source,
    };
    // With a filter, the seccomp hook runs after the one above, and the answering thread waits for the
    // listener before the child execs: the dynamic loader's intercepted syscalls need answers before
    // `spawn` can return.
    let spawned = if intercept.is_empty() {
        cmd.spawn().map(|c| (c, None)).map_err(spawn_error)
    } else {
        match SeccompLaunch::new(intercept)?.spawn(&mut cmd, interceptor) {
            Ok((child, supervisor)) => Ok((child, Some(supervisor))),
            Err(SeccompError::Spawn(e)) => Err(spawn_error(e)),
            Err(e) => Err(e.into()),
        }
    };
    drop(cgroup_procs);
    let (mut child, supervisor) = spawned?;
    let stdout = child.stdout.take().expect("stdout is piped").into();
    let stderr = child.stderr.take().expect("stderr is piped").into();
    // The reaper collects the exit status; std's Child handle is not used to wait.
    let pid = child.id() as i32;
    drop(child);
    Ok(Launched {
        pid,
        stdout,
        stderr,
        supervisor,
    })
}
