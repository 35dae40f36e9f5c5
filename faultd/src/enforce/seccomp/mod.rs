//! The seccomp user-notification backend.
//!
//! A launched service gets a seccomp filter before `exec` ([`filter`]): its intercepted syscalls go to
//! a listener fd, every other syscall runs untouched. The child hands the listener to faultd over a
//! socket ([`handoff`]); a thread named `seccomp-<service>` answers each notification ([`notify`]) after
//! resolving what it acts on ([`resolve`]) and asking the service's rules.
//!
//! # Using it from the launcher
//!
//! ```no_run
//! # use std::process::Command;
//! # use faultd::enforce::{Interceptor, seccomp::SeccompLaunch};
//! # fn demo(interceptor: Interceptor) -> Result<(), Box<dyn std::error::Error>> {
//! let syscalls = faultd::syscalls::expand("write").unwrap();
//! let mut cmd = Command::new("/usr/bin/my-service");
//! // … other pre_exec hooks (cgroup placement, setsid) are registered first: the filter goes last,
//! // so nothing the launcher does in the child is intercepted.
//! let (mut child, supervisor) = SeccompLaunch::new(&syscalls)?.spawn(&mut cmd, interceptor)?;
//! child.wait()?;
//! supervisor.shutdown(); // after every process of the service is gone
//! # Ok(()) }
//! ```
//!
//! The pieces `spawn` is made of are public too, for a launcher that spawns by itself:
//! [`SeccompLaunch::child_hook`] (register it in `pre_exec`, last), [`SeccompLaunch::start`] (before
//! `spawn`: the answering thread must already wait for the listener, because `Command::spawn` only
//! returns after `exec`, and the dynamic loader's intercepted `openat` calls happen before that), then
//! [`Supervisor::child_spawned`] once `spawn` returned.
//!
//! # What it costs
//!
//! A syscall the filter does not intercept costs what any seccomp filter costs (about +40 ns per
//! syscall on our VMs, the same as a one-instruction filter). An intercepted one costs the kernel's
//! notification round trip, plus, when a rule of the service concerns that syscall, resolving its
//! target (a `readlink` of `/proc/TID/fd/N` the first time, then a per-service fd cache kept exact
//! by also intercepting `close`, `dup2`, clone, exec and renames: [`resolve`]). Syscalls no rule
//! concerns are answered without resolving, and their trace events carry no path.
//! `cargo bench -p faultd --bench seccomp` measures all of it.
//!
//! # `io_uring_setup`
//!
//! io_uring submits reads and writes without syscalls faultd could see. So whenever any file syscall is
//! intercepted, `io_uring_setup` is intercepted too, and while the service has an active file rule it
//! fails with `ENOSYS` (unless a rule decides it explicitly): io_uring users (e.g. recent databases,
//! tokio-uring) then fall back to plain syscalls. Without an active file rule it proceeds.
//!
//! # When faultd goes away
//!
//! Closing the listener (the [`Supervisor`] is dropped or faultd dies) does not remove the filter, which
//! is impossible: from then on every intercepted syscall of the service fails with `ENOSYS`, as measured
//! on our kernels. Stop a service's processes before shutting its supervisor down; the supervisor also
//! ends by itself once the last process holding the filter has exited.

mod backend;
mod child;
pub mod filter;
pub mod handoff;
pub mod notify;
pub(crate) mod probe;
pub mod resolve;
pub mod storage;

pub(crate) use backend::SeccompBackend;
pub use child::ChildHook;

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::filter::FilterError;
use self::handoff::{Channel, Handoff};
use self::notify::{Counters, Exit, Policy};
use crate::enforce::Interceptor;
use crate::syscalls::{self, Syscall};

/// How long the answering thread waits for the listener by default.
pub(crate) const DEFAULT_HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the seccomp backend could not launch or supervise a service.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter could not be built (nothing to intercept, or too many syscalls).
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The kernel lacks something this backend needs.
    #[error("seccomp user notification is not usable here: {0}")]
    Unsupported(String),
    /// A system call of the launcher failed.
    #[error("{what}: {source}")]
    Io {
        /// What faultd was doing.
        what: &'static str,
        /// The failure.
        source: io::Error,
    },
    /// The service could not be spawned (this includes a failed filter install in the child).
    #[error("spawning the service: {0}")]
    Spawn(#[source] io::Error),
    /// The answering thread did not get the listener.
    #[error("the seccomp listener never arrived: {0}")]
    NotAttached(String),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> SeccompError {
    move |source| SeccompError::Io { what, source }
}

/// The assembled program, at a stable address for the child hook.
struct Program {
    _insns: Box<[libc::sock_filter]>,
    fprog: Box<libc::sock_fprog>,
}

// SAFETY: the raw pointer inside `sock_fprog` points into `_insns`, which is owned by the same value,
// never mutated after construction and freed only with it.
unsafe impl Send for Program {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for Program {}

/// Checks once that the kernel's notification structs are the size libc's are.
fn check_notif_sizes() -> Result<(), SeccompError> {
    static SIZES: OnceLock<Result<(), String>> = OnceLock::new();
    SIZES
        .get_or_init(|| {
            // SAFETY: seccomp_notif_sizes is plain data.
            let mut sizes: libc::seccomp_notif_sizes = unsafe { std::mem::zeroed() };
            // SAFETY: GET_NOTIF_SIZES writes one seccomp_notif_sizes into the struct we own.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_GET_NOTIF_SIZES,
                    0,
                    &mut sizes as *mut libc::seccomp_notif_sizes,
                )
            };
            if rc < 0 {
                return Err(format!(
                    "SECCOMP_GET_NOTIF_SIZES failed ({}); Linux 5.0 or later is needed",
                    io::Error::last_os_error()
                ));
            }
            let ours = (
                size_of::<libc::seccomp_notif>(),
                size_of::<libc::seccomp_notif_resp>(),
            );
            let kernel = (
                usize::from(sizes.seccomp_notif),
                usize::from(sizes.seccomp_notif_resp),
            );
            if kernel.0 > ours.0 || kernel.1 > ours.1 {
                return Err(format!(
                    "the kernel's notification structs ({kernel:?} bytes) are larger than faultd's ({ours:?})"
                ));
            }
            Ok(())
        })
        .clone()
        .map_err(SeccompError::Unsupported)
}

/// Everything prepared in the parent before a service is spawned under seccomp.
pub struct SeccompLaunch {
    syscalls: Vec<&'static Syscall>,
    cache_only: crate::rules::NrSet,
    program: Arc<Program>,
    channel: Channel,
    handoff_timeout: Duration,
}

impl std::fmt::Debug for SeccompLaunch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompLaunch")
            .field(
                "syscalls",
                &self.syscalls.iter().map(|s| s.name).collect::<Vec<_>>(),
            )
            .field("instructions", &self.program.fprog.len)
            .finish_non_exhaustive()
    }
}

impl SeccompLaunch {
    /// Prepares a filter intercepting `syscalls` (already family-expanded; duplicates are fine), plus
    /// `io_uring_setup` when any of them is a file syscall.
    pub fn new(syscalls: &[&'static Syscall]) -> Result<SeccompLaunch, SeccompError> {
        check_notif_sizes()?;
        let mut set: Vec<&'static Syscall> = Vec::with_capacity(syscalls.len() + 1);
        for &sc in syscalls {
            if !set.iter().any(|s| s.nr == sc.nr) {
                set.push(sc);
            }
        }
        if set.iter().any(|s| syscalls::is_file_syscall(s))
            && let Some(uring) = syscalls::lookup("io_uring_setup")
            && !set.iter().any(|s| s.nr == uring.nr)
        {
            set.push(uring);
        }
        // What the fd → path cache needs to see (resolve.rs, "The fd → path cache").
        let cache_only = resolve::add_maintenance(&mut set);
        let channel = handoff::channel().map_err(io_err("creating the listener handoff socket"))?;
        let insns = filter::build(&set, channel.child.as_raw_fd())?.into_boxed_slice();
        let mut program = Program {
            fprog: Box::new(libc::sock_fprog {
                len: insns.len() as u16,
                filter: std::ptr::null_mut(),
            }),
            _insns: insns,
        };
        program.fprog.filter = program._insns.as_ptr().cast_mut();
        Ok(SeccompLaunch {
            syscalls: set,
            cache_only,
            program: Arc::new(program),
            channel,
            handoff_timeout: DEFAULT_HANDOFF_TIMEOUT,
        })
    }

    /// The syscalls the filter intercepts (including an added `io_uring_setup`).
    pub fn syscalls(&self) -> &[&'static Syscall] {
        &self.syscalls
    }

    /// The filter program, for inspection ([`filter::evaluate`]).
    pub fn program(&self) -> &[libc::sock_filter] {
        &self.program._insns
    }

    /// What the child runs in `pre_exec`: see [`ChildHook::install`].
    pub fn child_hook(&self) -> ChildHook {
        ChildHook {
            fprog: &*self.program.fprog,
            sock: self.channel.child.as_raw_fd(),
        }
    }

    /// Starts the `seccomp-<service>` thread answering by `interceptor`'s rules. It waits for the
    /// listener first, so call this before `Command::spawn`, and [`Supervisor::child_spawned`] after.
    pub fn start(self, interceptor: Interceptor) -> Result<Supervisor, SeccompError> {
        let name = format!("seccomp-{}", interceptor.service);
        self.start_with(name, Policy::Rules(interceptor))
    }

    /// Like [`start`](Self::start), but every notification is answered `CONTINUE` at once, unexamined
    /// and unreported: the kernel's own round-trip cost (the benchmark's baseline).
    pub fn start_passthrough(self, name: &str) -> Result<Supervisor, SeccompError> {
        self.start_with(format!("seccomp-{name}"), Policy::Passthrough)
    }

    /// Spawns `cmd` under the filter: registers the child hook (after any hook already registered),
    /// starts the answering thread, spawns, and closes faultd's copy of the child's socket end.
    ///
    /// `cmd` must not be spawned again afterwards (its hook refers to this launch's socket).
    pub fn spawn(
        self,
        cmd: &mut Command,
        interceptor: Interceptor,
    ) -> Result<(Child, Supervisor), SeccompError> {
        let hook = self.child_hook();
        let keep = self.program.clone();
        // SAFETY: `install` is async-signal-safe (raw syscalls on memory prepared here). Its pointers
        // stay valid: the closure owns a reference to the program, and the socket stays open until
        // `child_spawned` below, after the fork.
        unsafe {
            cmd.pre_exec(move || {
                let _program = &keep;
                hook.install()
            });
        }
        let supervisor = self.start(interceptor)?;
        match cmd.spawn() {
            Ok(child) => {
                supervisor.child_spawned();
                Ok((child, supervisor))
            }
            Err(e) => {
                supervisor.shutdown();
                Err(SeccompError::Spawn(e))
            }
        }
    }

    fn start_with(self, name: String, policy: Policy) -> Result<Supervisor, SeccompError> {
        // SAFETY: eventfd creates a new fd or fails.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(io_err("creating the supervisor's stop eventfd")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: a fresh fd nobody else owns.
        let stop = Arc::new(unsafe { OwnedFd::from_raw_fd(stop) });
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Waiting),
            changed: Condvar::new(),
            counters: Counters::default(),
        });
        let SeccompLaunch {
            program,
            channel,
            handoff_timeout,
            cache_only,
            ..
        } = self;
        let Channel { parent, child } = channel;
        let thread = {
            let (stop, shared) = (stop.clone(), shared.clone());
            let service = name.clone();
            let span = tracing::Span::current();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let _span = span.enter();
                    let policy = (&policy, cache_only);
                    supervise(&service, parent, &stop, &shared, policy, handoff_timeout)
                })
                .map_err(io_err("starting the seccomp answering thread"))?
        };
        Ok(Supervisor {
            shared,
            stop,
            child_end: Mutex::new(Some(child)),
            thread: Some(thread),
            _program: program,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting,
    Attached,
    Ended { attached: bool, reason: String },
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    counters: Counters,
}

impl Shared {
    fn set(&self, state: State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        self.changed.notify_all();
    }
}

/// Counts of one supervisor's notifications so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SupervisorStats {
    /// Notifications received.
    pub received: u64,
    /// Answered `CONTINUE` right away (no rule, or an allow rule).
    pub allowed: u64,
    /// Failed with an errno.
    pub denied: u64,
    /// Answered `CONTINUE` after a delay.
    pub delayed: u64,
    /// Gone before an answer (task killed, or syscall interrupted).
    pub stale: u64,
    /// fd, path or address arguments that could not be resolved.
    pub unresolved: u64,
}

/// The answering thread of one launched service; dropping it stops the thread and closes the listener.
pub struct Supervisor {
    shared: Arc<Shared>,
    stop: Arc<OwnedFd>,
    child_end: Mutex<Option<OwnedFd>>,
    thread: Option<JoinHandle<()>>,
    _program: Arc<Program>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field(
                "state",
                &*self.shared.state.lock().unwrap_or_else(|e| e.into_inner()),
            )
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Closes faultd's copy of the child's socket end. Call it once `Command::spawn` returned (either
    /// way): the answering thread then sees EOF, and ends, if the child died without sending.
    pub fn child_spawned(&self) {
        self.child_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Waits until the thread holds the listener; an error says why it never will.
    pub fn wait_attached(&self, timeout: Duration) -> Result<(), SeccompError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match &*state {
                State::Attached | State::Ended { attached: true, .. } => return Ok(()),
                State::Ended { reason, .. } => {
                    return Err(SeccompError::NotAttached(reason.clone()));
                }
                State::Waiting => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SeccompError::NotAttached(format!("not within {timeout:?}")));
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether the thread is still waiting for or answering the listener.
    pub fn is_running(&self) -> bool {
        !matches!(
            *self.shared.state.lock().unwrap_or_else(|e| e.into_inner()),
            State::Ended { .. }
        )
    }

    /// The counters so far.
    pub fn stats(&self) -> SupervisorStats {
        let c = &self.shared.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        SupervisorStats {
            received: get(&c.received),
            allowed: get(&c.allowed),
            denied: get(&c.denied),
            delayed: get(&c.delayed),
            stale: get(&c.stale),
            unresolved: get(&c.unresolved),
        }
    }

    /// Stops the thread: pending delays are answered `CONTINUE`, then the listener is closed (any
    /// later intercepted syscall of the service fails with `ENOSYS`).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.child_spawned();
        let Some(thread) = self.thread.take() else {
            return;
        };
        // SAFETY: writes an 8-byte counter increment to our eventfd.
        unsafe { libc::eventfd_write(self.stop.as_raw_fd(), 1) };
        if thread.join().is_err() {
            tracing::error!("the seccomp answering thread panicked");
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The answering thread: wait for the listener, then answer until hangup or stop.
fn supervise(
    name: &str,
    sock: OwnedFd,
    stop: &OwnedFd,
    shared: &Shared,
    (policy, cache_only): (&Policy, crate::rules::NrSet),
    timeout: Duration,
) {
    let listener = match handoff::recv_listener(sock.as_fd(), stop.as_fd(), timeout) {
        Ok(Handoff::Listener(fd)) => fd,
        Ok(other) => {
            let reason = match other {
                Handoff::ChildGone => "the child exited before sending it".to_string(),
                Handoff::Stopped => "stopped before it arrived".to_string(),
                _ => format!("nothing arrived within {timeout:?}"),
            };
            tracing::debug!(thread = name, %reason, "no seccomp listener");
            shared.set(State::Ended {
                attached: false,
                reason,
            });
            return;
        }
        Err(e) => {
            tracing::warn!(thread = name, error = %e, "receiving the seccomp listener failed");
            shared.set(State::Ended {
                attached: false,
                reason: e.to_string(),
            });
            return;
        }
    };
    drop(sock);
    shared.set(State::Attached);
    tracing::debug!(thread = name, "seccomp listener attached");
    let exit = notify::Loop::new(
        listener.as_raw_fd(),
        stop.as_raw_fd(),
        policy,
        &shared.counters,
    )
    .cache_only(cache_only)
    .run();
    let reason = match exit {
        Exit::Hangup => "every supervised process exited".to_string(),
        Exit::Stopped => "stopped".to_string(),
        Exit::Failed(e) => {
            tracing::warn!(thread = name, error = %e, "seccomp listener failed");
            format!("listener failed: {e}")
        }
    };
    tracing::debug!(thread = name, %reason, "seccomp supervisor ended");
    drop(listener);
    shared.set(State::Ended {
        attached: true,
        reason,
    });
}

#[cfg(test)]
mod tests;
