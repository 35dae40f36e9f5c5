//! The event bus of a session: every syscall decision and lifecycle change, numbered in one order —
//! the order in which things happened (see [`timeline`] for the reorder window and the join of a
//! syscall's decision with its outcome).
//!
//! Producers (answering loops, ring-buffer readers, output readers, the session) append under a short
//! lock and never wait for consumers. Each subscriber reads the ring from its own cursor; one that
//! falls more than the ring's capacity behind loses the oldest events, which it is told as one
//! [`EventKind::Dropped`] with the count, and the loss is counted for the session. A slow subscriber
//! therefore never slows a target.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::enforce::BackendKind;

mod bus;
mod pace;
pub mod timeline;

pub use bus::{Batch, DEFAULT_CAPACITY, EventBus, LINGER, LateSource, Subscriber};
pub use pace::Pace;

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of `bpf_ktime_get_ns()` and of every event stamp.
pub fn mono_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a rule (or its absence) did to a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It proceeded.
    Allow,
    /// It failed with an errno.
    Deny,
    /// It proceeded after a delay.
    Delay,
    /// The process was sent a signal at the syscall's entry.
    Crash,
    /// Seen by an observing backend (ebpf-trace): nothing was decided, the syscall ran as it would.
    Observed,
    /// faultd transferred only a prefix on the caller's behalf ([`SyscallEvent::io`]).
    Short,
    /// A sync answered without syncing, or a write answered in full with nothing written.
    Lie,
    /// It proceeded, its file tracked as volatile.
    Volatile,
    /// Every process of the service was killed here and its tracked files restored.
    PowerLoss,
}

/// One intercepted syscall and its decision.
#[derive(Debug, Clone, PartialEq)]
pub struct SyscallEvent {
    /// Process (thread group) id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Syscall number.
    pub nr: u32,
    /// Syscall name.
    pub syscall: &'static str,
    /// Op of the deciding rule.
    pub op: Option<Arc<str>>,
    /// Resolved path, or `ip:port` for connect.
    pub path: Option<String>,
    /// The decision.
    pub decision: Decision,
    /// Errno returned for a deny, else 0.
    pub errno: i32,
    /// Delay applied, else zero.
    pub delay: Duration,
    /// Label of the deciding rule.
    pub label: Option<Arc<str>>,
    /// Id of the deciding rule, 0 when none.
    pub rule_id: u32,
    /// Signal sent by a crash, else 0.
    pub signal: i32,
    /// The syscall's return value (`-errno` on failure), when the backend saw it return.
    pub retval: Option<i64>,
    /// Time from the syscall's entry to its return, when the backend measured it.
    pub latency: Duration,
    /// The backend that decided or observed it.
    pub backend: BackendKind,
    /// Bytes asked for and bytes transferred, for short and lie decisions.
    pub io: Option<(u64, u64)>,
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// A rule as the trace announces it when its fault set is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    /// Rule id.
    pub id: u32,
    /// Service.
    pub service: Arc<str>,
    /// Op name.
    pub op: Option<Arc<str>>,
    /// Expanded syscall names.
    pub syscalls: Vec<&'static str>,
    /// Path glob.
    pub path_glob: Option<String>,
    /// The backend that enforces it.
    pub backend: BackendKind,
}

/// Everything that can happen in a session.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A backend decided an intercepted syscall.
    Syscall(SyscallEvent),
    /// A service's main process was spawned.
    Started {
        /// Its pid.
        pid: u32,
        /// Its cgroup directory, if it has one.
        cgroup: Option<String>,
    },
    /// A service's healthcheck passed.
    Ready {
        /// Time from spawn.
        after: Duration,
    },
    /// A service's main process ended.
    Exited {
        /// How.
        status: ExitStatus,
        /// Whether faultd stopped it.
        stopped_by_faultd: bool,
    },
    /// A line a service wrote.
    Output {
        /// Which stream.
        stream: Stream,
        /// The line without its newline.
        line: String,
    },
    /// A fault set was installed.
    FaultsApplied {
        /// Its id.
        fault_set: Arc<str>,
        /// Its rules.
        rules: Vec<RuleInfo>,
        /// Its seed.
        seed: u64,
    },
    /// A fault set was removed.
    FaultsCleared {
        /// Its id.
        fault_set: Arc<str>,
    },
    /// A step was sent to an interface.
    StepSent {
        /// Interface name.
        interface: String,
        /// `POST /orders` or the TCP line.
        summary: String,
    },
    /// A step's answer came back (or its transport failed).
    StepAnswered {
        /// Whether an answer came back.
        ok: bool,
        /// HTTP status, or 0.
        status: u16,
        /// Transport failure text.
        error: String,
        /// Round-trip time.
        duration: Duration,
    },
    /// A proxy decided a request (or a tcp connection).
    Proxy(ProxyEvent),
    /// This subscriber lost events by falling behind.
    Dropped {
        /// How many.
        count: u64,
    },
}

/// One request through a protocol proxy and what the proxy did with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyEvent {
    /// Interface name.
    pub interface: String,
    /// `http`, `redis`, `postgres` or `tcp`.
    pub protocol: &'static str,
    /// `GET /orders`, `SET k`, the SQL text, `connect`.
    pub summary: String,
    /// `pass`, `error`, `response`, `delay`, `drop`, or `closed` (malformed traffic).
    pub decision: &'static str,
    /// What was answered (`status 503`, `23505`) or why the connection was closed.
    pub detail: String,
    /// Label of the deciding rule.
    pub label: Option<String>,
    /// Id of the deciding rule, 0 when none.
    pub rule_id: u32,
    /// From the request to the end of its reply.
    pub duration: Duration,
    /// Delay applied.
    pub delay: Duration,
}

/// One numbered event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Per session, from 1, without gaps in the ring, in the order of `mono_ns` (within the window).
    pub seq: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when it happened (a syscall: when it entered).
    pub mono_ns: u64,
    /// Nanoseconds since the session started (its bus was created), on the same clock.
    pub time_ns: u64,
    /// Wall-clock time (the session's start plus `time_ns`).
    pub time: SystemTime,
    /// Service it concerns, if any.
    pub service: Option<Arc<str>>,
    /// What happened.
    pub kind: EventKind,
}
