//! The answering loop: one thread per service reads each notification from the listener, resolves its
//! target, asks the rules, reports the decision and answers.
//!
//! Per notification: `RECV` (into a zeroed struct) → resolve the fd/path/sockaddr → `ID_VALID` (the
//! thread may have died, and its tid been reused, while we read `/proc` or its memory) → decide →
//! emit one trace event → `SEND` (`-errno`, or `CONTINUE`). A delay does not sleep: the notification
//! goes into a timer heap, the next `ppoll` timeout is the earliest deadline, and when it is due faultd
//! checks `ID_VALID` again and answers `CONTINUE`. Other notifications (other threads or processes of
//! the service) are answered meanwhile; other services have their own threads.
//!
//! The target is resolved only when a rule of the service's current set concerns the syscall (any rule
//! naming it, whatever its action): resolving costs a `readlink` (about 2 µs on our VMs, as much as
//! the kernel's whole round trip), so syscalls no rule is about are answered without, and their trace
//! events carry no path, unless the service was created with `resolve_paths` (then every intercepted
//! call is resolved). A rule with action `allow` is the other way to trace a syscall with its paths.
//!
//! The hot path allocates only the trace event (its path string and the bus's slot). Resolution works
//! in preallocated buffers; the tgid of each thread is read once from `/proc/TID/status` and cached
//! (a tid reused by another process of the same service within the session would be reported under the
//! old tgid).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::resolve::{self, Resolved, Resolver};
use super::storage::{Answer, Call, Effect, StorageIo};
use crate::enforce::Interceptor;
use crate::rules::{Action, NrSet};
use crate::syscalls::{self, ArgKind};
use crate::trace::{self, Decision, SyscallEvent};

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): wake the target on the answering thread's CPU.
const SYNC_WAKE_UP: u64 = 1;

/// How notifications are answered.
pub enum Policy {
    /// By the service's rules, with a trace event each.
    Rules(Interceptor),
    /// `CONTINUE` at once, without looking (the kernel's own round trip; no events).
    Passthrough,
}

/// Counters of one answering thread.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) allowed: AtomicU64,
    pub(crate) denied: AtomicU64,
    pub(crate) delayed: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) unresolved: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Why the loop ended.
#[derive(Debug)]
pub enum Exit {
    /// Every task that had the filter exited (POLLHUP).
    Hangup,
    /// faultd asked it to stop; pending delays were answered `CONTINUE`.
    Stopped,
    /// An unexpected error from the listener.
    Failed(io::Error),
}

/// The state of one answering loop.
pub struct Loop<'a> {
    listener: RawFd,
    stop: RawFd,
    policy: &'a Policy,
    counters: &'a Counters,
    resolver: Resolver,
    delays: BinaryHeap<Reverse<(Instant, u64)>>,
    tgids: HashMap<u32, u32>,
    io_uring_setup: Option<u32>,
    cache_only: NrSet,
    storage: StorageIo,
}

impl<'a> Loop<'a> {
    /// A loop answering `listener` until it hangs up or `stop` becomes readable.
    pub fn new(listener: RawFd, stop: RawFd, policy: &'a Policy, counters: &'a Counters) -> Self {
        // SAFETY: SET_FLAGS reads a u64 flag word passed by value; failure (kernel < 6.6) is harmless.
        unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP) };
        Loop {
            listener,
            stop,
            policy,
            counters,
            resolver: Resolver::new(),
            delays: BinaryHeap::new(),
            tgids: HashMap::new(),
            io_uring_setup: syscalls::lookup("io_uring_setup").map(|s| s.nr),
            cache_only: NrSet::default(),
            storage: StorageIo::new(),
        }
    }

    /// Syscalls intercepted only to keep the resolver's fd cache exact: answered at once, without an
    /// event, unless a rule names them.
    pub fn cache_only(mut self, nrs: NrSet) -> Self {
        self.cache_only = nrs;
        self
    }

    /// Answers notifications until the listener hangs up, `stop` fires or the listener fails.
    pub fn run(&mut self) -> Exit {
        loop {
            let now = Instant::now();
            while let Some(&Reverse((due, id))) = self.delays.peek() {
                if due > now {
                    break;
                }
                self.delays.pop();
                if id_valid(self.listener, id) {
                    self.answer(id, 0);
                } else {
                    bump(&self.counters.stale);
                }
            }
            let timeout = self.delays.peek().map(|Reverse((due, _))| {
                let left = due.saturating_duration_since(now);
                libc::timespec {
                    tv_sec: left.as_secs() as libc::time_t,
                    tv_nsec: left.subsec_nanos() as _,
                }
            });
            let mut fds = [
                libc::pollfd {
                    fd: self.listener,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.stop,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let tp = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const _);
            // SAFETY: fds is a 2-element array we own; tp is null or points at a live timespec.
            let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, tp, std::ptr::null()) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Exit::Failed(err);
            }
            if fds[1].revents != 0 {
                while let Some(Reverse((_, id))) = self.delays.pop() {
                    self.answer(id, 0);
                }
                return Exit::Stopped;
            }
            let revents = fds[0].revents;
            if revents & libc::POLLIN != 0 {
                if let Err(err) = self.receive() {
                    return Exit::Failed(err);
                }
            } else if revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                return Exit::Hangup;
            }
        }
    }

    /// Receives and handles one notification.
    fn receive(&mut self) -> io::Result<()> {
        // SAFETY: seccomp_notif is plain data; RECV requires it zeroed.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif into the struct we own (sizes checked at launch).
        let rc = unsafe { libc::ioctl(self.listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            // ENOENT: the task died (or a signal restarted its syscall) before we got it.
            return match err.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ENOENT) => Ok(()),
                _ => Err(err),
            };
        }
        bump(&self.counters.received);
        match self.policy {
            Policy::Passthrough => self.answer(notif.id, 0),
            Policy::Rules(interceptor) => self.decide(interceptor, &notif, trace::mono_now()),
        }
        Ok(())
    }

    /// Decides one notification received at `received` (`CLOCK_MONOTONIC` ns: the event's timestamp,
    /// the earliest moment faultd knows the call had entered).
    fn decide(&mut self, interceptor: &Interceptor, notif: &libc::seccomp_notif, received: u64) {
        let nr = notif.data.nr as u32;
        let tid = notif.pid;
        let sc = syscalls::by_nr(nr);
        let kind = sc.map_or(ArgKind::None, |s| s.args);
        let rules = interceptor.rules.load();
        self.resolver.observe(tid, nr, &notif.data.args);
        if self.cache_only.contains(nr) && !rules.concerns(nr) {
            bump(&self.counters.allowed);
            self.answer(notif.id, 0);
            return;
        }
        if self.tgids.len() > 1 << 16 {
            self.tgids.clear();
        }
        let pid = *self
            .tgids
            .entry(tid)
            .or_insert_with(|| resolve::tgid(tid).unwrap_or(tid));
        // Resolving costs a readlink or a remote read (µs): only done when a rule concerns the syscall,
        // or when the service asked for every path.
        let concerned = rules.concerns(nr) || interceptor.resolve_paths;
        let resolved = if concerned {
            self.resolver.resolve(tid, kind, &notif.data.args)
        } else {
            Resolved::None
        };
        if concerned && kind != ArgKind::None && resolved == Resolved::None {
            bump(&self.counters.unresolved);
        }
        if !id_valid(self.listener, notif.id) {
            // The thread is gone (or its syscall was interrupted): nothing to answer, nothing happened.
            bump(&self.counters.stale);
            self.tgids.remove(&tid);
            self.resolver.forget(tid);
            return;
        }
        let decided = rules.decide(nr, &resolved.target()).cloned();
        let (action, rule_id, op, label) = match &decided {
            Some(rule) => (rule.action, rule.id, rule.op.clone(), rule.label.clone()),
            None if Some(nr) == self.io_uring_setup && rules.has_file_rule() => (
                Action::Deny {
                    errno: libc::ENOSYS,
                },
                0,
                None,
                None,
            ),
            None => (Action::Allow, 0, None, None),
        };
        let name = sc.map_or("?", |s| s.name);
        // Storage actions, and tracking while some file is volatile: done before the event, which
        // then says what happened. A power loss is done after it: the trace shows the cut before the
        // service's exit, which is reported once the files are restored.
        let storage = StorageIo::concerns(&interceptor.storage, &action, name);
        let power_loss = matches!(action, Action::PowerLoss { .. });
        let call = Call {
            tid,
            pid,
            name,
            args: &notif.data.args,
        };
        let mut effect = (storage && !power_loss).then(|| {
            let io = &mut self.storage;
            storage_effect(
                io,
                self.listener,
                interceptor,
                &action,
                decided.as_deref(),
                call,
                notif.id,
            )
        });
        let (decision, errno, delay, signal) = match action {
            _ if effect.is_some_and(|e| e.passed) => (Decision::Allow, 0, Duration::ZERO, 0),
            Action::Deny { errno } => (Decision::Deny, errno, Duration::ZERO, 0),
            Action::Delay(d) => (Decision::Delay, 0, d, 0),
            Action::Allow => (Decision::Allow, 0, Duration::ZERO, 0),
            Action::Crash { signal } => (Decision::Crash, 0, Duration::ZERO, signal),
            Action::Short { .. } => (Decision::Short, 0, Duration::ZERO, 0),
            Action::Lie => (Decision::Lie, 0, Duration::ZERO, 0),
            Action::Volatile => (Decision::Volatile, 0, Duration::ZERO, 0),
            Action::PowerLoss { .. } => (Decision::PowerLoss, 0, Duration::ZERO, libc::SIGKILL),
        };
        let errno = match effect.map(|e| e.answer) {
            Some(Answer::Errno(e)) => e,
            _ => errno,
        };
        let event = SyscallEvent {
            pid,
            tid,
            nr,
            syscall: name,
            op,
            path: resolved.shown(),
            decision,
            errno,
            delay,
            label,
            rule_id,
            signal,
            retval: None,
            latency: Duration::ZERO,
            backend: crate::enforce::BackendKind::Seccomp,
            io: effect.and_then(|e| e.io),
        };
        // Emitted before answering, so the event precedes anything the target does next.
        interceptor
            .bus
            .emit_decision(&interceptor.service, event, received);
        if storage && power_loss {
            effect = Some(storage_effect(
                &mut self.storage,
                self.listener,
                interceptor,
                &action,
                decided.as_deref(),
                call,
                notif.id,
            ));
        }
        let answer = effect.map_or(Answer::Continue, |e| e.answer);
        if Some(nr) == self.io_uring_setup && matches!(decision, Decision::Allow | Decision::Delay)
        {
            // io_uring may close and install fds unseen from now on.
            self.resolver.disable_fd_cache();
        }
        match answer {
            Answer::Continue => {}
            Answer::Value(v) => {
                bump(&self.counters.denied);
                self.answer_value(notif.id, v);
                return;
            }
            Answer::Errno(e) => {
                bump(&self.counters.denied);
                self.answer(notif.id, e);
                return;
            }
            Answer::Killed => {
                bump(&self.counters.denied);
                return;
            }
        }
        match decision {
            Decision::Deny => {
                bump(&self.counters.denied);
                self.answer(notif.id, errno);
            }
            Decision::Delay => {
                bump(&self.counters.delayed);
                self.delays
                    .push(Reverse((Instant::now() + delay, notif.id)));
            }
            Decision::Allow | Decision::Observed | Decision::Volatile => {
                bump(&self.counters.allowed);
                self.answer(notif.id, 0);
            }
            // Storage decisions were answered above; one that let the call run is an allow.
            Decision::Short | Decision::Lie | Decision::PowerLoss => {
                bump(&self.counters.allowed);
                self.answer(notif.id, 0);
            }
            Decision::Crash => {
                bump(&self.counters.denied);
                // The signal is queued while the task still waits for our answer, so the syscall never
                // takes effect; the EINTR answer only matters for a signal the process survives.
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as i32, signal) };
                self.answer(notif.id, libc::EINTR);
            }
        }
    }

    /// Answers notification `id` with return value `val`: the call is done, it does not run.
    fn answer_value(&self, id: u64, val: i64) {
        let resp = libc::seccomp_notif_resp {
            id,
            val,
            error: 0,
            flags: 0,
        };
        // SAFETY: SEND reads one seccomp_notif_resp from the struct we own.
        if unsafe { libc::ioctl(self.listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) } < 0 {
            bump(&self.counters.stale);
        }
    }

    /// Answers notification `id`: `CONTINUE` when `errno` is 0, else fail the syscall with it.
    fn answer(&self, id: u64, errno: i32) {
        let resp = libc::seccomp_notif_resp {
            id,
            val: 0,
            error: -errno,
            flags: if errno == 0 {
                libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
            } else {
                0
            },
        };
        // SAFETY: SEND reads one seccomp_notif_resp from the struct we own.
        let rc = unsafe { libc::ioctl(self.listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
        if rc < 0 {
            // ENOENT: the task went away (killed) while we decided.
            bump(&self.counters.stale);
        }
    }
}

/// Whether notification `id` is still pending (its task alive and still in that syscall).
fn id_valid(listener: RawFd, id: u64) -> bool {
    // SAFETY: ID_VALID reads a u64 from the pointer we pass.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
}

/// Carries out a storage action (or tracking) for notification `id`.
fn storage_effect(
    io: &mut StorageIo,
    listener: RawFd,
    interceptor: &Interceptor,
    action: &Action,
    rule: Option<&crate::rules::Rule>,
    call: Call<'_>,
    id: u64,
) -> Effect {
    let mut draw = || rule.map_or(0.0, |r| r.unit());
    io.handle(
        &interceptor.storage,
        action,
        call,
        &|| id_valid(listener, id),
        &mut draw,
    )
}
