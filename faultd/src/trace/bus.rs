//! [`EventBus`]: the pending set of a session's [`timeline`](super::timeline), the numbered ring behind
//! it and the subscribers' cursors.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use super::timeline::{self, Item, Join, Timeline};
use super::{Event, EventKind, SyscallEvent, mono_now};

struct State {
    events: VecDeque<Arc<Event>>,
    /// Approximate bytes the kept events hold ([`approx_bytes`]).
    bytes: usize,
    next_seq: u64,
    closed: bool,
    timeline: Timeline,
    /// Sources that report after the fact ([`LateSource`]); while any is registered events wait
    /// [`timeline::WINDOW`] for older ones.
    late_sources: usize,
}

/// The bounded, numbered event log of one session.
pub struct EventBus {
    state: Mutex<State>,
    capacity: usize,
    notify: Notify,
    dropped: AtomicU64,
    origin_mono: u64,
    origin_wall: SystemTime,
}

/// Events kept for late or slow subscribers.
pub const DEFAULT_CAPACITY: usize = 1 << 16;

/// Bytes the kept events may hold, whatever their count: output lines are up to 64 KiB each.
pub(crate) const MAX_BYTES: usize = 64 << 20;

/// What an event costs to keep, roughly: its fixed part and the text it carries.
fn approx_bytes(kind: &EventKind) -> usize {
    let text = match kind {
        EventKind::Output { line, .. } => line.len(),
        EventKind::Syscall(s) => s.path.as_ref().map_or(0, String::len),
        EventKind::FaultsApplied { rules, .. } => rules.len() * 128,
        EventKind::Proxy(p) => p.summary.len() + p.detail.len(),
        _ => 0,
    };
    std::mem::size_of::<Event>() + 32 + text
}

/// How long a waiting [`Subscriber`] lets events gather after the first wakes it: at most one wake-up
/// per watcher per `LINGER`, and events reach it at most that much later.
pub const LINGER: Duration = Duration::from_millis(1);

/// A registered late source of a bus (the eBPF tracer, in-kernel decisions): while it lives, events
/// wait in the reorder window. Dropping it flushes the events that no longer need to wait.
pub struct LateSource {
    bus: Arc<EventBus>,
}

impl Drop for LateSource {
    fn drop(&mut self) {
        let mut state = self.bus.lock();
        state.late_sources = state.late_sources.saturating_sub(1);
        let released = self.bus.release(&mut state, false);
        drop(state);
        if released {
            self.bus.notify.notify_waiters();
        }
    }
}

impl EventBus {
    /// A bus that keeps the last `capacity` events; the session's clock starts now.
    pub fn new(capacity: usize) -> Self {
        EventBus {
            state: Mutex::new(State {
                events: VecDeque::with_capacity(capacity.min(4096)),
                bytes: 0,
                next_seq: 1,
                closed: false,
                timeline: Timeline::default(),
                late_sources: 0,
            }),
            capacity: capacity.max(1),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            origin_mono: mono_now(),
            origin_wall: SystemTime::now(),
        }
    }

    /// Appends an event about `service` that happens now.
    pub fn emit(&self, service: &Arc<str>, kind: EventKind) {
        self.push(Some(service.clone()), kind, mono_now(), Join::None);
    }

    /// Appends a session-wide event that happens now.
    pub fn emit_session(&self, kind: EventKind) {
        self.push(None, kind, mono_now(), Join::None);
    }

    /// Appends a syscall decided at `mono_ns` (`CLOCK_MONOTONIC`): seccomp's notification received.
    pub fn emit_decision(&self, service: &Arc<str>, event: SyscallEvent, mono_ns: u64) {
        self.push(
            Some(service.clone()),
            EventKind::Syscall(event),
            mono_ns,
            Join::None,
        );
    }

    /// Appends a syscall decided in the kernel at `mono_ns`; it replaces seccomp's `allow` without rule
    /// of the same call (see [`timeline`](super::timeline)).
    pub fn emit_kernel_decision(&self, service: &Arc<str>, event: SyscallEvent, mono_ns: u64) {
        self.push(
            Some(service.clone()),
            EventKind::Syscall(event),
            mono_ns,
            Join::Supersede,
        );
    }

    /// Appends a syscall the tracer saw enter at `entry_ns` (unknown when seccomp failed it) and return
    /// at `exit_ns`: the outcome of the pending decision of the same call, or an event of its own.
    pub fn emit_outcome(
        &self,
        service: &Arc<str>,
        event: SyscallEvent,
        entry_ns: Option<u64>,
        exit_ns: u64,
    ) {
        self.push(
            Some(service.clone()),
            EventKind::Syscall(event),
            entry_ns.unwrap_or(exit_ns),
            Join::Outcome { entry_ns, exit_ns },
        );
    }

    fn push(&self, service: Option<Arc<str>>, kind: EventKind, mono_ns: u64, join: Join) {
        let mut state = self.lock();
        let item = Item {
            mono_ns,
            service,
            kind,
        };
        if state.late_sources == 0 && state.timeline.is_empty() {
            self.number(&mut state, item);
        } else {
            let window = if state.late_sources == 0 {
                0
            } else {
                timeline::WINDOW.as_nanos() as u64
            };
            state.timeline.insert(item, join, window);
            self.release(&mut state, false);
        }
        drop(state);
        self.notify.notify_waiters();
    }

    /// Numbers what is due; whether anything was.
    fn release(&self, state: &mut State, all: bool) -> bool {
        let mut items = Vec::new();
        state
            .timeline
            .release(mono_now(), all, |item| items.push(item));
        let any = !items.is_empty();
        for item in items {
            self.number(state, item);
        }
        any
    }

    fn number(&self, state: &mut State, item: Item) {
        let seq = state.next_seq;
        state.next_seq += 1;
        let size = approx_bytes(&item.kind);
        while state.events.len() == self.capacity
            || (state.bytes + size > MAX_BYTES && !state.events.is_empty())
        {
            if let Some(old) = state.events.pop_front() {
                state.bytes = state.bytes.saturating_sub(approx_bytes(&old.kind));
            }
        }
        state.bytes += size;
        let time_ns = item.mono_ns.saturating_sub(self.origin_mono);
        let before = self.origin_mono.saturating_sub(item.mono_ns);
        let time = (self.origin_wall + Duration::from_nanos(time_ns))
            .checked_sub(Duration::from_nanos(before))
            .unwrap_or(self.origin_wall);
        state.events.push_back(Arc::new(Event {
            seq,
            mono_ns: item.mono_ns,
            time_ns,
            time,
            service: item.service,
            kind: item.kind,
        }));
    }

    /// Registers a source that reports late: until the guard is dropped, events wait in the window.
    pub fn late_source(self: &Arc<Self>) -> LateSource {
        self.lock().late_sources += 1;
        LateSource { bus: self.clone() }
    }

    /// Numbers every waiting event now (a fault set was cleared, the session ends).
    pub fn flush(&self) {
        let mut state = self.lock();
        let released = self.release(&mut state, true);
        drop(state);
        if released {
            self.notify.notify_waiters();
        }
    }

    /// Number of events numbered so far.
    pub fn total(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Events lost by subscribers that fell behind, summed over subscribers.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Tracer outcomes dropped because their decision had left the window already.
    pub fn late_outcomes(&self) -> u64 {
        self.lock().timeline.late_outcomes
    }

    /// Ends the bus: waiting events are numbered, subscribers drain what is left and then see the end.
    pub fn close(&self) {
        let mut state = self.lock();
        self.release(&mut state, true);
        state.closed = true;
        drop(state);
        self.notify.notify_waiters();
    }

    /// A reader starting at `from_seq` (1 = the first event).
    pub fn subscribe(self: &Arc<Self>, from_seq: u64) -> Subscriber {
        Subscriber {
            bus: self.clone(),
            cursor: from_seq.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
    /// Takes up to `max` events from the cursor without waiting (numbering what is due first).
    pub fn poll(&mut self, max: usize) -> Batch {
        let mut out = Vec::new();
        let mut state = self.bus.lock();
        if !state.timeline.is_empty() {
            self.bus.release(&mut state, false);
        }
        let oldest = state.events.front().map_or(state.next_seq, |e| e.seq);
        if self.cursor < oldest {
            let lost = oldest - self.cursor;
            self.bus.dropped.fetch_add(lost, Ordering::Relaxed);
            out.push(Arc::new(Event {
                seq: 0,
                mono_ns: mono_now(),
                time_ns: 0,
                time: SystemTime::now(),
                service: None,
                kind: EventKind::Dropped { count: lost },
            }));
            self.cursor = oldest;
        }
        let start = (self.cursor - oldest) as usize;
        out.extend(state.events.iter().skip(start).take(max).cloned());
        if let Some(last) = out.last().filter(|e| e.seq != 0) {
            self.cursor = last.seq + 1;
        }
        if !out.is_empty() {
            Batch::Events(out)
        } else if state.closed {
            Batch::End
        } else {
            Batch::Empty
        }
    }

    /// How long until the head of the window is due, if something waits.
    fn due_in(&self) -> Option<Duration> {
        let deadline = self.bus.lock().timeline.head_deadline()?;
        Some(Duration::from_nanos(
            deadline.saturating_sub(mono_now()).max(1_000_000),
        ))
    }

    /// Waits for and takes up to `max` events; `None` once the bus is closed and drained.
    ///
    /// Woken from an empty ring, it lingers [`LINGER`] before reading, so that a busy target's events
    /// come in batches: each wake-up of a watcher costs the producer a futex wake (an IPI on a VM,
    /// about as much as the decision itself), so a watcher that kept up event by event would slow the
    /// target it watches.
    pub async fn next(&mut self, max: usize) -> Option<Vec<Arc<Event>>> {
        let bus = self.bus.clone();
        loop {
            let notified = bus.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.poll(max) {
                Batch::Events(events) => return Some(events),
                Batch::End => return None,
                Batch::Empty => {
                    match self.due_in() {
                        Some(wait) => {
                            let _ = tokio::time::timeout(wait, notified).await;
                        }
                        None => notified.await,
                    }
                    tokio::time::sleep(LINGER).await;
                }
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
        );
        bus.total()
    }

    #[test]
    fn the_ring_is_bounded_in_bytes_as_well_as_in_events() {
        let bus = Arc::new(EventBus::new(DEFAULT_CAPACITY));
        let svc: Arc<str> = "a".into();
        let line = "x".repeat(8 << 20);
        for _ in 0..20 {
            bus.emit(
                &svc,
                EventKind::Output {
                    stream: super::super::Stream::Stdout,
                    line: line.clone(),
                },
            );
        }
        let state = bus.lock();
        assert!(state.bytes <= MAX_BYTES, "{} bytes kept", state.bytes);
        assert_eq!(state.events.len(), MAX_BYTES / (8 << 20) - 1);
        assert_eq!(state.events.back().map(|e| e.seq), Some(20));
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
