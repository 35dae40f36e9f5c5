//! The reorder window and the join: how events from sources that report late (the eBPF tracer and the
//! in-kernel connect decisions, both read from ring buffers every 50–100 ms) are put in time order and
//! merged with the decision of the same syscall before they get a sequence number.
//!
//! # Order
//!
//! Every event carries a `CLOCK_MONOTONIC` timestamp of the moment it happened (a syscall: when it
//! entered — seccomp's notification received, `bpf_ktime_get_ns()` at `sys_enter`, or the in-kernel
//! decision). While a session has a late source ([`super::LateSource`]), events wait in a pending set
//! ordered by timestamp and are numbered when they leave it, oldest first. The head leaves when
//! - it is older than the window ([`WINDOW`], 250 ms: more than twice the slowest ring poll), plus, for
//!   a seccomp `delay`, the delay itself (capped at [`MAX_DELAY_HOLD`]) so that the outcome of the
//!   delayed call can still join it;
//! - more than [`MAX_PENDING`] events wait (the oldest leaves at once);
//! - the bus is flushed: when a fault set is cleared (after the rings were drained) and at teardown.
//!
//! An event that arrives later than the window (a syscall that blocked longer than the window before the
//! tracer saw it return, say) is numbered on arrival: sequence numbers follow time order within the
//! window, and the event still carries its true timestamp. Without a late source nothing waits.
//!
//! # Join: one syscall, one event
//!
//! A thread makes one syscall at a time, so for thread `tid` every stamp of one call (seccomp's
//! notification, the in-kernel hook, the tracer's `sys_enter` and `sys_exit`) falls between the exit of
//! its previous call and the entry of its next one. The record the tracer sends at `sys_exit` (with
//! `entry` — absent when seccomp failed the call, which then skips `sys_enter` — and `exit`) therefore
//! belongs to the **latest pending event of the same `tid` stamped at or before `exit`**, when that event
//! is a decision without an outcome, of the same syscall number, and close enough: the tracer's entry
//! (or exit, without one) at most the decision's delay plus [`JOIN_SLACK`] after seccomp's notification
//! (the call was waiting for faultd's answer in between; an in-kernel decision lies inside the call).
//! The decision keeps its timestamp, backend, rule and path (the tracer's path fills a missing one)
//! and gains the return value and the latency from the notification to the exit.
//!
//! A syscall decided in the kernel (ebpf-cgroup's connect hook, ebpf-trace's crash at entry) may also
//! have been intercepted by seccomp first, which had no rule for it and let it continue (the filter
//! holds every syscall any rule of the spec may concern). Such a seccomp `allow` without a rule is
//! **superseded**: the in-kernel decision replaces it in place (same timestamp, the in-kernel backend,
//! rule and errno), so the call is one event. A late outcome whose decision already left the window is
//! dropped rather than shown twice (counted in [`Timeline::late_outcomes`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{Decision, EventKind, SyscallEvent};
use crate::enforce::BackendKind;

/// How long an event waits for older events from late sources.
pub const WINDOW: Duration = Duration::from_millis(250);
/// Longest extra wait for the outcome of a delayed syscall.
pub(crate) const MAX_DELAY_HOLD: Duration = Duration::from_secs(1);
/// Most events waiting; beyond it the oldest is numbered at once.
pub const MAX_PENDING: usize = 1 << 16;
/// Longest time between seccomp's notification (plus the delay it applied) and the tracer's entry of
/// the same call.
pub(crate) const JOIN_SLACK: Duration = Duration::from_millis(50);

/// Threads remembered after their last event left the window.
const MAX_RELEASED: usize = 1 << 16;

/// An event before it has a sequence number.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    /// `CLOCK_MONOTONIC` nanoseconds when it happened.
    pub(crate) mono_ns: u64,
    /// Service it concerns.
    pub(crate) service: Option<Arc<str>>,
    /// What happened.
    pub(crate) kind: EventKind,
}

/// How an arriving syscall event relates to others of the same call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Join {
    /// A new event (seccomp's decision, a lifecycle event).
    None,
    /// An in-kernel decision: replaces a same-call seccomp `allow` without rule.
    Supersede,
    /// A tracer record: the outcome of a pending decision of the same call.
    Outcome {
        /// `sys_enter`, when the tracer saw it.
        entry_ns: Option<u64>,
        /// `sys_exit`.
        exit_ns: u64,
    },
}

type Key = (u64, u64);

struct Slot {
    deadline: u64,
    item: Item,
}

/// What is remembered of a thread's last event that left the window.
#[derive(Clone, Copy)]
struct Last {
    mono_ns: u64,
    nr: u32,
    delay_ns: u64,
    awaiting: bool,
}

/// The pending set of one bus.
#[derive(Default)]
pub(crate) struct Timeline {
    pending: BTreeMap<Key, Slot>,
    by_tid: HashMap<u32, Vec<Key>>,
    released: HashMap<u32, Last>,
    arrivals: u64,
    /// Outcomes dropped because their decision had already left the window.
    pub(crate) late_outcomes: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn syscall(kind: &EventKind) -> Option<&SyscallEvent> {
    match kind {
        EventKind::Syscall(s) => Some(s),
        _ => None,
    }
}

fn syscall_mut(kind: &mut EventKind) -> Option<&mut SyscallEvent> {
    match kind {
        EventKind::Syscall(s) => Some(s),
        _ => None,
    }
}

/// Whether decision `d` stamped `at` can take the outcome of a call entered at `start`.
fn takes_outcome(d: &SyscallEvent, at: u64, nr: u32, start: u64) -> bool {
    d.decision != Decision::Observed
        && d.retval.is_none()
        && d.nr == nr
        && start.saturating_sub(at) <= nanos(d.delay) + nanos(JOIN_SLACK)
}

impl Timeline {
    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The earliest deadline of the head, if something waits.
    pub(crate) fn head_deadline(&self) -> Option<u64> {
        self.pending.first_key_value().map(|(_, s)| s.deadline)
    }

    /// Adds `item`, joining it with a pending event of the same call as `join` says. `window_ns` is the
    /// session's current window.
    pub(crate) fn insert(&mut self, mut item: Item, join: Join, window_ns: u64) {
        if let EventKind::Syscall(ev) = &mut item.kind {
            match join {
                Join::None => {}
                Join::Supersede => {
                    if self.supersede(ev, item.mono_ns) {
                        return;
                    }
                }
                Join::Outcome { entry_ns, exit_ns } => {
                    if self.outcome(ev, entry_ns, exit_ns) {
                        return;
                    }
                }
            }
        }
        let hold = syscall(&item.kind)
            .filter(|s| s.decision == Decision::Delay && s.backend == BackendKind::Seccomp)
            .map_or(0, |s| nanos(s.delay.min(MAX_DELAY_HOLD)));
        let key = (item.mono_ns, self.arrivals);
        self.arrivals += 1;
        if let Some(tid) = syscall(&item.kind).map(|s| s.tid) {
            let keys = self.by_tid.entry(tid).or_default();
            let at = keys.partition_point(|k| *k < key);
            keys.insert(at, key);
        }
        let deadline = item
            .mono_ns
            .saturating_add(window_ns)
            .saturating_add(if window_ns > 0 { hold } else { 0 });
        self.pending.insert(key, Slot { deadline, item });
    }

    /// The latest pending syscall event of `tid` stamped at or before `bound`.
    fn latest(&mut self, tid: u32, bound: u64) -> Option<(u64, &mut SyscallEvent)> {
        let keys = self.by_tid.get(&tid)?;
        let at = keys.partition_point(|k| k.0 <= bound);
        let key = *keys.get(at.checked_sub(1)?)?;
        let slot = self.pending.get_mut(&key)?;
        syscall_mut(&mut slot.item.kind).map(|s| (key.0, s))
    }

    fn outcome(&mut self, o: &SyscallEvent, entry_ns: Option<u64>, exit_ns: u64) -> bool {
        let start = entry_ns.unwrap_or(exit_ns);
        if let Some((at, d)) = self.latest(o.tid, exit_ns) {
            if !takes_outcome(d, at, o.nr, start) {
                return false;
            }
            d.retval = o.retval;
            d.latency = Duration::from_nanos(exit_ns.saturating_sub(at));
            if d.path.is_none() {
                d.path.clone_from(&o.path);
            }
            return true;
        }
        // Its decision may have left the window already: drop the outcome rather than show the call
        // twice.
        if let Some(last) = self.released.get_mut(&o.tid)
            && last.awaiting
            && last.nr == o.nr
            && last.mono_ns <= exit_ns
            && start.saturating_sub(last.mono_ns) <= last.delay_ns + nanos(JOIN_SLACK)
        {
            last.awaiting = false;
            self.late_outcomes += 1;
            return true;
        }
        false
    }

    fn supersede(&mut self, c: &mut SyscallEvent, at_ns: u64) -> bool {
        let Some((at, d)) = self.latest(c.tid, at_ns) else {
            return false;
        };
        let replaces_allow = d.backend == BackendKind::Seccomp
            && d.decision == Decision::Allow
            && d.rule_id == 0
            && d.nr == c.nr
            && at_ns - at <= nanos(JOIN_SLACK);
        let inside_observed = d.decision == Decision::Observed
            && d.nr == c.nr
            && at_ns <= at.saturating_add(nanos(d.latency));
        if !(replaces_allow || inside_observed) {
            return false;
        }
        let mut merged = c.clone();
        merged.retval = d.retval;
        merged.latency = d.latency;
        if merged.path.is_none() {
            merged.path = d.path.take();
        }
        *d = merged;
        true
    }

    /// Hands out, oldest first, every event whose deadline passed (and the oldest beyond
    /// [`MAX_PENDING`]); with `all`, everything.
    pub(crate) fn release(&mut self, now_ns: u64, all: bool, mut out: impl FnMut(Item)) {
        loop {
            let over = self.pending.len() > MAX_PENDING;
            let Some(entry) = self.pending.first_entry() else {
                break;
            };
            if !all && !over && entry.get().deadline > now_ns {
                break;
            }
            let (key, slot) = entry.remove_entry();
            if let Some(s) = syscall(&slot.item.kind) {
                if let Some(keys) = self.by_tid.get_mut(&s.tid) {
                    keys.retain(|k| *k != key);
                    if keys.is_empty() {
                        self.by_tid.remove(&s.tid);
                    }
                }
                if self.released.len() >= MAX_RELEASED {
                    self.released.clear();
                }
                self.released.insert(
                    s.tid,
                    Last {
                        mono_ns: key.0,
                        nr: s.nr,
                        delay_ns: nanos(s.delay),
                        awaiting: s.decision != Decision::Observed && s.retval.is_none(),
                    },
                );
            }
            out(slot.item);
        }
    }
}

#[cfg(test)]
#[path = "timeline_tests.rs"]
mod tests;
