use super::*;

const MS: u64 = 1_000_000;
const W: u64 = 250 * MS;

fn ev(tid: u32, nr: u32, decision: Decision, backend: BackendKind) -> SyscallEvent {
    SyscallEvent {
        pid: 1,
        tid,
        nr,
        syscall: crate::syscalls::by_nr(nr).map_or("?", |s| s.name),
        op: None,
        path: None,
        decision,
        errno: 0,
        delay: Duration::ZERO,
        label: None,
        rule_id: 0,
        signal: 0,
        retval: None,
        latency: Duration::ZERO,
        backend,
        io: None,
    }
}

fn item(mono_ns: u64, e: SyscallEvent) -> Item {
    Item {
        mono_ns,
        service: Some("svc".into()),
        kind: EventKind::Syscall(e),
    }
}

fn all(t: &mut Timeline) -> Vec<(u64, SyscallEvent)> {
    let mut out = Vec::new();
    t.release(0, true, |i| {
        if let EventKind::Syscall(s) = i.kind {
            out.push((i.mono_ns, s));
        }
    });
    out
}

const WRITE: u32 = libc::SYS_write as u32;
const READ: u32 = libc::SYS_read as u32;
const CONNECT: u32 = libc::SYS_connect as u32;

fn denied_write(path: &str) -> SyscallEvent {
    let mut d = ev(7, WRITE, Decision::Deny, BackendKind::Seccomp);
    d.errno = libc::EIO;
    d.rule_id = 3;
    d.label = Some("WAL broken".into());
    d.path = Some(path.into());
    d
}

fn observed(tid: u32, nr: u32, retval: i64, latency_ns: u64) -> SyscallEvent {
    let mut o = ev(tid, nr, Decision::Observed, BackendKind::EbpfTrace);
    o.retval = Some(retval);
    o.latency = Duration::from_nanos(latency_ns);
    o
}

#[test]
fn a_denied_call_and_its_traced_return_are_one_event() {
    let mut t = Timeline::default();
    t.insert(
        item(1_000, denied_write("/tmp/inventory.wal")),
        Join::None,
        W,
    );
    // seccomp failed the call: no sys_enter, the exit 20 µs later.
    let o = observed(7, WRITE, -5, 0);
    t.insert(
        item(21_000, o),
        Join::Outcome {
            entry_ns: None,
            exit_ns: 21_000,
        },
        W,
    );
    let out = all(&mut t);
    assert_eq!(out.len(), 1, "{out:?}");
    let (at, e) = &out[0];
    assert_eq!(*at, 1_000, "the decision's timestamp");
    assert_eq!(e.decision, Decision::Deny);
    assert_eq!(e.backend, BackendKind::Seccomp);
    assert_eq!(e.retval, Some(-5));
    assert_eq!(e.latency, Duration::from_nanos(20_000));
    assert_eq!(e.path.as_deref(), Some("/tmp/inventory.wal"));
    assert_eq!(e.label.as_deref(), Some("WAL broken"));
}

#[test]
fn late_records_are_numbered_in_time_order() {
    let mut t = Timeline::default();
    let mut order = Vec::new();
    // A prompt decision at 10 ms, then the tracer's records of reads at 2 and 5 ms arrive.
    t.insert(item(10 * MS, denied_write("/x")), Join::None, W);
    for at in [5 * MS, 2 * MS] {
        t.insert(
            item(at, observed(8, READ, 1, 100)),
            Join::Outcome {
                entry_ns: Some(at),
                exit_ns: at + 100,
            },
            W,
        );
    }
    // Nothing is due before the window passed.
    t.release(10 * MS, false, |i| order.push(i.mono_ns));
    assert!(order.is_empty());
    t.release(10 * MS + W, false, |i| order.push(i.mono_ns));
    assert_eq!(order, [2 * MS, 5 * MS, 10 * MS]);
    assert!(t.is_empty());
}

#[test]
fn a_connect_decided_in_the_kernel_is_one_event() {
    let mut t = Timeline::default();
    // seccomp saw the connect (no seccomp rule concerns it) and let it continue...
    t.insert(
        item(1_000, ev(9, CONNECT, Decision::Allow, BackendKind::Seccomp)),
        Join::None,
        W,
    );
    // ...the tracer's record of its return arrives first...
    t.insert(
        item(3_000, observed(9, CONNECT, -111, 2_000)),
        Join::Outcome {
            entry_ns: Some(3_000),
            exit_ns: 5_000,
        },
        W,
    );
    // ...then the cgroup hook's deny, stamped inside the call.
    let mut c = ev(9, CONNECT, Decision::Deny, BackendKind::EbpfCgroup);
    c.errno = libc::ECONNREFUSED;
    c.rule_id = 4;
    c.path = Some("127.0.0.1:9".into());
    t.insert(item(4_000, c), Join::Supersede, W);
    let out = all(&mut t);
    assert_eq!(out.len(), 1, "{out:?}");
    let (at, e) = &out[0];
    assert_eq!(*at, 1_000);
    assert_eq!(e.decision, Decision::Deny);
    assert_eq!(e.backend, BackendKind::EbpfCgroup);
    assert_eq!((e.rule_id, e.errno), (4, libc::ECONNREFUSED));
    assert_eq!(e.retval, Some(-111));
    assert_eq!(e.path.as_deref(), Some("127.0.0.1:9"));
}

#[test]
fn a_kernel_decision_without_seccomp_takes_the_traced_return() {
    let mut t = Timeline::default();
    let mut c = ev(9, CONNECT, Decision::Deny, BackendKind::EbpfCgroup);
    c.errno = libc::ECONNREFUSED;
    t.insert(item(4_000, c), Join::Supersede, W);
    t.insert(
        item(3_000, observed(9, CONNECT, -111, 2_000)),
        Join::Outcome {
            entry_ns: Some(3_000),
            exit_ns: 5_000,
        },
        W,
    );
    let out = all(&mut t);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1.retval, Some(-111));
    assert_eq!(out[0].1.backend, BackendKind::EbpfCgroup);
}

#[test]
fn another_syscall_or_a_distant_one_does_not_join() {
    let mut t = Timeline::default();
    t.insert(item(1_000, denied_write("/x")), Join::None, W);
    // A read of the same thread (the write's record was lost): not the write's outcome.
    t.insert(
        item(2_000, observed(7, READ, 3, 100)),
        Join::Outcome {
            entry_ns: Some(2_000),
            exit_ns: 2_100,
        },
        W,
    );
    // A write entered a second later cannot be the call seccomp saw.
    t.insert(
        item(1_000 + 1_000 * MS, observed(7, WRITE, 1, 100)),
        Join::Outcome {
            entry_ns: Some(1_000 + 1_000 * MS),
            exit_ns: 1_100 + 1_000 * MS,
        },
        W,
    );
    let out = all(&mut t);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].1.retval, None);
}

#[test]
fn a_delayed_call_waits_for_its_outcome_and_a_late_one_is_not_shown_twice() {
    let mut t = Timeline::default();
    let mut d = ev(7, WRITE, Decision::Delay, BackendKind::Seccomp);
    d.delay = Duration::from_millis(500);
    t.insert(item(0, d), Join::None, W);
    let mut out = Vec::new();
    t.release(W + 100 * MS, false, |i| out.push(i));
    assert!(out.is_empty(), "held for the delay as well as the window");
    t.insert(
        item(500 * MS, observed(7, WRITE, 1, 10)),
        Join::Outcome {
            entry_ns: Some(500 * MS),
            exit_ns: 500 * MS + 10,
        },
        W,
    );
    t.release(u64::MAX, false, |i| out.push(i));
    assert_eq!(out.len(), 1);
    let EventKind::Syscall(s) = &out[0].kind else {
        panic!()
    };
    assert_eq!(s.retval, Some(1));
    assert_eq!(s.latency, Duration::from_nanos(500 * MS + 10));

    // A decision released without its outcome: the outcome arriving afterwards is dropped.
    t.insert(item(2_000 * MS, denied_write("/x")), Join::None, W);
    t.release(u64::MAX, false, |_| {});
    t.insert(
        item(2_000 * MS + 20_000, observed(7, WRITE, -5, 0)),
        Join::Outcome {
            entry_ns: None,
            exit_ns: 2_000 * MS + 20_000,
        },
        W,
    );
    assert!(t.is_empty());
    assert_eq!(t.late_outcomes, 1);
}

#[test]
fn the_window_is_bounded_in_events() {
    let mut t = Timeline::default();
    for i in 0..(MAX_PENDING as u64 + 10) {
        t.insert(
            item(i, ev(1, READ, Decision::Allow, BackendKind::Seccomp)),
            Join::None,
            W,
        );
    }
    let mut n = 0;
    t.release(0, false, |_| n += 1);
    assert_eq!(n, 10);
}
