//! The event bus of a session: every syscall decision and lifecycle change, numbered in one order.
//!
//! Producers (answering loops, output readers, the session) append to a bounded ring under a short lock
//! and never wait for consumers. Each subscriber reads the ring from its own cursor; one that falls more
//! than the ring's capacity behind loses the oldest events, which it is told as one
//! [`EventKind::Dropped`] with the count, and the loss is counted for the session. A slow subscriber
//! therefore never slows a target.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::enforce::BackendKind;

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
    /// This subscriber lost events by falling behind.
    Dropped {
        /// How many.
        count: u64,
    },
}

/// One numbered event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Per session, from 1, without gaps in the ring.
    pub seq: u64,
    /// Wall-clock time.
    pub time: SystemTime,
    /// Service it concerns, if any.
    pub service: Option<Arc<str>>,
    /// What happened.
    pub kind: EventKind,
}

struct Ring {
    events: VecDeque<Arc<Event>>,
    next_seq: u64,
    closed: bool,
}

/// The bounded, numbered event log of one session.
pub struct EventBus {
    ring: Mutex<Ring>,
    capacity: usize,
    notify: Notify,
    dropped: AtomicU64,
}

/// Events kept for late or slow subscribers.
pub const DEFAULT_CAPACITY: usize = 1 << 16;

impl EventBus {
    /// A bus that keeps the last `capacity` events.
    pub fn new(capacity: usize) -> Self {
        EventBus {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.min(4096)),
                next_seq: 1,
                closed: false,
            }),
            capacity: capacity.max(1),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Appends an event about `service` and returns its sequence number.
    pub fn emit(&self, service: &Arc<str>, kind: EventKind) -> u64 {
        self.push(Some(service.clone()), kind)
    }

    /// Appends an event about `service` that happened at `time` (earlier than now, e.g. a syscall a
    /// tracer reports in batches) and returns its sequence number.
    pub fn emit_at(&self, service: &Arc<str>, kind: EventKind, time: SystemTime) -> u64 {
        self.push_at(Some(service.clone()), kind, time)
    }

    /// Appends a session-wide event and returns its sequence number.
    pub fn emit_session(&self, kind: EventKind) -> u64 {
        self.push(None, kind)
    }

    fn push(&self, service: Option<Arc<str>>, kind: EventKind) -> u64 {
        self.push_at(service, kind, SystemTime::now())
    }

    fn push_at(&self, service: Option<Arc<str>>, kind: EventKind, time: SystemTime) -> u64 {
        let seq = {
            let mut ring = self.lock();
            let seq = ring.next_seq;
            ring.next_seq += 1;
            if ring.events.len() == self.capacity {
                ring.events.pop_front();
            }
            ring.events.push_back(Arc::new(Event {
                seq,
                time,
                service,
                kind,
            }));
            seq
        };
        self.notify.notify_waiters();
        seq
    }

    /// Number of events emitted so far.
    pub fn total(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Events lost by subscribers that fell behind, summed over subscribers.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Ends the bus: subscribers drain what is left and then see the end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// A reader starting at `from_seq` (1 = the first event).
    pub fn subscribe(self: &Arc<Self>, from_seq: u64) -> Subscriber {
        Subscriber {
            bus: self.clone(),
            cursor: from_seq.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cursor into a session's events.
pub struct Subscriber {
    bus: Arc<EventBus>,
    cursor: u64,
}

/// What a [`Subscriber`] read.
#[derive(Debug)]
pub enum Batch {
    /// Events in order (possibly starting with a `Dropped` marker).
    Events(Vec<Arc<Event>>),
    /// Nothing new right now.
    Empty,
    /// The bus is closed and everything was read.
    End,
}

impl Subscriber {
    /// Takes up to `max` events from the cursor without waiting.
    pub fn poll(&mut self, max: usize) -> Batch {
        let ring = self.bus.lock();
        let oldest = ring.events.front().map_or(ring.next_seq, |e| e.seq);
        let mut out = Vec::new();
        if self.cursor < oldest {
            let lost = oldest - self.cursor;
            self.bus.dropped.fetch_add(lost, Ordering::Relaxed);
            out.push(Arc::new(Event {
                seq: 0,
                time: SystemTime::now(),
                service: None,
                kind: EventKind::Dropped { count: lost },
            }));
            self.cursor = oldest;
        }
        let start = (self.cursor - oldest) as usize;
        out.extend(ring.events.iter().skip(start).take(max).cloned());
        if let Some(last) = out.last().filter(|e| e.seq != 0) {
            self.cursor = last.seq + 1;
        }
        if !out.is_empty() {
            Batch::Events(out)
        } else if ring.closed {
            Batch::End
        } else {
            Batch::Empty
        }
    }

    /// Waits for and takes up to `max` events; `None` once the bus is closed and drained.
    pub async fn next(&mut self, max: usize) -> Option<Vec<Arc<Event>>> {
        let bus = self.bus.clone();
        loop {
            let notified = bus.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.poll(max) {
                Batch::Events(events) => return Some(events),
                Batch::End => return None,
                Batch::Empty => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(bus: &EventBus, svc: &Arc<str>) -> u64 {
        bus.emit(
            svc,
            EventKind::Ready {
                after: Duration::ZERO,
            },
        )
    }

    #[test]
    fn sequence_numbers_are_monotonic_from_one() {
        let bus = Arc::new(EventBus::new(8));
        let svc: Arc<str> = "a".into();
        assert_eq!(ready(&bus, &svc), 1);
        assert_eq!(ready(&bus, &svc), 2);
        let mut sub = bus.subscribe(0);
        let Batch::Events(events) = sub.poll(10) else {
            panic!("expected events")
        };
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(matches!(sub.poll(10), Batch::Empty));
        bus.close();
        assert!(matches!(sub.poll(10), Batch::End));
    }

    #[test]
    fn a_slow_subscriber_loses_the_oldest_and_is_told() {
        let bus = Arc::new(EventBus::new(4));
        let svc: Arc<str> = "a".into();
        let mut slow = bus.subscribe(1);
        for _ in 0..10 {
            ready(&bus, &svc);
        }
        let Batch::Events(events) = slow.poll(100) else {
            panic!("expected events")
        };
        assert_eq!(events[0].kind, EventKind::Dropped { count: 6 });
        assert_eq!(
            events[1..].iter().map(|e| e.seq).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        assert_eq!(bus.dropped(), 6);
        assert_eq!(bus.total(), 10);
    }

    #[test]
    fn subscribing_from_a_later_seq_skips_earlier_events() {
        let bus = Arc::new(EventBus::new(16));
        let svc: Arc<str> = "a".into();
        (0..5).for_each(|_| {
            ready(&bus, &svc);
        });
        let mut sub = bus.subscribe(4);
        let Batch::Events(events) = sub.poll(100) else {
            panic!("expected events")
        };
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    }

    #[tokio::test]
    async fn next_wakes_on_new_events_and_ends_on_close() {
        let bus = Arc::new(EventBus::new(16));
        let svc: Arc<str> = "a".into();
        let mut sub = bus.subscribe(1);
        let producer = {
            let bus = bus.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                ready(&bus, &svc);
                bus.close();
            })
        };
        let first = sub.next(10).await.expect("an event");
        assert_eq!(first[0].seq, 1);
        assert!(sub.next(10).await.is_none());
        producer.await.unwrap();
    }
}
