//! A test's trace as faultd streams it: each batch turned into report rows as it arrives (the
//! protobuf messages are not kept), syscall events capped per test, the rest counted.

use faultd_proto::v1 as pb;

use crate::report::model::{EventReport, ExitReport};

/// Syscall events kept per test unless `--max-events` says otherwise: a test of a million events keeps
/// faultctl's memory to tens of megabytes.
pub const DEFAULT_MAX_EVENTS: usize = 100_000;

/// A test's trace so far.
#[derive(Debug, Default)]
pub struct Collected {
    /// Syscall events as report rows, at most the cap.
    pub events: Vec<EventReport>,
    /// Services that ended on their own.
    pub exits: Vec<ExitReport>,
    /// Syscall events beyond the cap, plus those faultd reported lost.
    pub dropped: u64,
}

impl Collected {
    /// Takes one streamed event: a syscall becomes a row while fewer than `max_events` are kept, else
    /// it is counted in `dropped`; a `Dropped` marker adds its count; an exit is kept.
    pub fn add(&mut self, e: &pb::Event, max_events: usize) {
        match &e.kind {
            Some(pb::event::Kind::Syscall(_) | pb::event::Kind::Proxy(_)) => {
                if self.events.len() < max_events {
                    self.events.extend(event_report(e));
                } else {
                    self.dropped += 1;
                }
            }
            Some(pb::event::Kind::Dropped(d)) => self.dropped += d.count,
            Some(pb::event::Kind::Exited(_)) => self.exits.extend(exit_report(e)),
            _ => {}
        }
    }
}

/// A syscall event as a report row; other events are not part of the report.
fn event_report(e: &pb::Event) -> Option<EventReport> {
    if let Some(pb::event::Kind::Proxy(p)) = &e.kind {
        return Some(proxy_report(e, p));
    }
    let Some(pb::event::Kind::Syscall(s)) = &e.kind else {
        return None;
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let io = s.io_requested > 0;
    let decision = match pb::Decision::try_from(s.decision).unwrap_or(pb::Decision::Unspecified) {
        pb::Decision::Deny => "deny",
        pb::Decision::Delay => "delay",
        pb::Decision::Crash => "crash",
        pb::Decision::Observed => "observed",
        pb::Decision::Short => "short",
        pb::Decision::Lie => "lie",
        pb::Decision::Volatile => "volatile",
        pb::Decision::PowerLoss => "power_loss",
        pb::Decision::Allow | pb::Decision::Unspecified => "allow",
    };
    Some(EventReport {
        seq: e.seq,
        service: e.service.clone(),
        pid: s.pid,
        syscall: s.syscall.clone(),
        op: non_empty(&s.op),
        path: non_empty(&s.path),
        decision: decision.to_owned(),
        errno: if s.signal != 0 {
            Some(signal_name(s.signal))
        } else if !s.errno_name.is_empty() {
            Some(s.errno_name.clone())
        } else if s.has_retval {
            faultd_model::syscalls::retval_name(s.retval).map(str::to_owned)
        } else {
            None
        },
        retval: s.has_retval.then_some(s.retval),
        time_ns: e.time_ns,
        latency_ns: s.has_retval.then_some(s.latency_ns),
        backend: non_empty(&s.backend),
        delay_ms: (s.delay_us > 0).then_some(s.delay_us / 1000),
        label: non_empty(&s.label),
        io_requested: io.then_some(s.io_requested),
        io_done: io.then_some(s.io_done),
        interface: None,
        request: None,
    })
}

/// A proxy decision as a report row: `syscall` names the protocol, `decision` what the proxy did
/// (`pass`, `error`, `response`, `delay`, `drop`, `closed`), `errno` what it answered.
fn proxy_report(e: &pb::Event, p: &pb::ProxyEvent) -> EventReport {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    EventReport {
        seq: e.seq,
        time_ns: e.time_ns,
        service: e.service.clone(),
        pid: 0,
        syscall: p.protocol.clone(),
        op: None,
        path: None,
        decision: p.decision.clone(),
        errno: non_empty(&p.detail),
        delay_ms: (p.delay_us > 0).then_some(p.delay_us / 1000),
        retval: None,
        latency_ns: Some(p.duration_us * 1000),
        backend: Some("proxy".into()),
        label: non_empty(&p.label),
        interface: Some(p.interface.clone()),
        request: non_empty(&p.summary),
        io_requested: None,
        io_done: None,
    }
}

/// `SIGKILL` for 9, else the number.
pub(crate) fn signal_name(signal: i32) -> String {
    faultd_model::syscalls::signal_name(signal).map_or_else(|| signal.to_string(), str::to_owned)
}

/// A service that ended on its own during the test.
fn exit_report(e: &pb::Event) -> Option<ExitReport> {
    let Some(pb::event::Kind::Exited(x)) = &e.kind else {
        return None;
    };
    (!x.stopped_by_faultd).then(|| ExitReport {
        service: e.service.clone(),
        code: (x.signal == 0).then_some(x.code),
        signal: (x.signal != 0).then(|| signal_name(x.signal)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_events_become_report_rows() {
        let event = pb::Event {
            seq: 48,
            time_unix_ns: 0,
            time_ns: 5_000,
            service: "inventory".into(),
            kind: Some(pb::event::Kind::Syscall(pb::SyscallEvent {
                pid: 7,
                syscall: "write".into(),
                op: "persist".into(),
                decision: pb::Decision::Deny as i32,
                errno: 5,
                errno_name: "EIO".into(),
                label: "persist broken".into(),
                ..Default::default()
            })),
        };
        let e = event_report(&event).unwrap();
        assert_eq!(
            (e.seq, e.service.as_str(), e.decision.as_str()),
            (48, "inventory", "deny")
        );
        assert_eq!((e.time_ns, e.retval, e.latency_ns), (5_000, None, None));
        assert_eq!(
            (e.op.as_deref(), e.errno.as_deref(), e.path),
            (Some("persist"), Some("EIO"), None)
        );
        let ready = pb::Event {
            kind: Some(pb::event::Kind::Ready(pb::ServiceReady { ready_ms: 3 })),
            ..event
        };
        assert!(event_report(&ready).is_none());
    }

    #[test]
    fn events_beyond_the_cap_are_counted_not_kept() {
        let syscall = |seq| pb::Event {
            seq,
            service: "inventory".into(),
            kind: Some(pb::event::Kind::Syscall(pb::SyscallEvent {
                syscall: "read".into(),
                decision: pb::Decision::Observed as i32,
                retval: -512,
                has_retval: true,
                latency_ns: 9,
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut collected = Collected::default();
        for seq in 1..=1_000 {
            collected.add(&syscall(seq), 100);
        }
        collected.add(
            &pb::Event {
                kind: Some(pb::event::Kind::Dropped(pb::EventsDropped { count: 5 })),
                ..Default::default()
            },
            100,
        );
        assert_eq!(collected.events.len(), 100);
        assert_eq!(collected.dropped, 905);
        let first = &collected.events[0];
        assert_eq!(first.errno.as_deref(), Some("ERESTARTSYS"));
        assert_eq!((first.retval, first.latency_ns), (Some(-512), Some(9)));
    }
}
