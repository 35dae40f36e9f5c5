//! The ebpf-trace ring's records as syscall events.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use faultd_ebpf::TraceEvent;

use super::trace::BACKEND;
use crate::trace::{Decision, SyscallEvent};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The trace event of one record.
pub fn syscall_event(e: &TraceEvent) -> SyscallEvent {
    let retval = e.retval();
    if let Some((signal, rule_id)) = e.crash() {
        return SyscallEvent {
            pid: e.pid,
            tid: e.tid,
            nr: e.nr,
            syscall: syscall_name(e.nr),
            op: None,
            path: None,
            decision: Decision::Crash,
            errno: 0,
            delay: Duration::ZERO,
            label: None,
            rule_id,
            signal,
            retval: None,
            latency: Duration::ZERO,
            backend: BACKEND,
            io: None,
        };
    }
    SyscallEvent {
        pid: e.pid,
        tid: e.tid,
        nr: e.nr,
        syscall: syscall_name(e.nr),
        op: None,
        path: None,
        decision: Decision::Observed,
        errno: match retval {
            Some(r) if (-4095..0).contains(&r) => -r as i32,
            _ => 0,
        },
        delay: Duration::ZERO,
        label: None,
        rule_id: 0,
        signal: 0,
        retval,
        latency: Duration::from_nanos(e.latency_ns),
        backend: BACKEND,
        io: None,
    }
}

/// The name of syscall `nr` (faultd's table, then the kernel headers' full list), or `syscall_<nr>`
/// for a number neither knows.
pub fn syscall_name(nr: u32) -> &'static str {
    if let Some(name) = crate::syscalls::by_nr(nr)
        .map(|sc| sc.name)
        .or_else(|| faultd_ebpf::syscall_name(nr))
    {
        return name;
    }
    static UNKNOWN: OnceLock<Mutex<HashMap<u32, &'static str>>> = OnceLock::new();
    let mut names = lock(UNKNOWN.get_or_init(Mutex::default));
    // Bounded by the number of distinct syscall numbers seen.
    names
        .entry(nr)
        .or_insert_with(|| Box::leak(format!("syscall_{nr}").into_boxed_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultd_ebpf::TRACE_HAS_RETVAL;

    #[test]
    fn a_record_becomes_an_observed_event() {
        let e = syscall_event(&TraceEvent {
            cgroup_id: 9,
            latency_ns: 1500,
            retval: -5,
            pid: 3,
            tid: 4,
            nr: 1,
            flags: TRACE_HAS_RETVAL,
            ts_ns: 0,
            enter_ns: 0,
            arg0: 1,
        });
        assert_eq!(e.syscall, "write");
        assert_eq!(e.decision, Decision::Observed);
        assert_eq!(e.retval, Some(-5));
        assert_eq!(e.errno, libc::EIO);
        assert_eq!(e.latency, Duration::from_nanos(1500));
        assert_eq!((e.pid, e.tid), (3, 4));

        let exit = syscall_event(&TraceEvent {
            nr: 231,
            ..TraceEvent::default()
        });
        assert_eq!(exit.retval, None);
        assert_eq!(exit.errno, 0);
    }

    #[test]
    fn a_crash_record_becomes_a_crash_decision() {
        let e = syscall_event(&TraceEvent {
            cgroup_id: 9,
            latency_ns: 12,
            retval: libc::SIGKILL as i64,
            pid: 3,
            tid: 4,
            nr: 1,
            flags: faultd_ebpf::TRACE_CRASH,
            ts_ns: 0,
            enter_ns: 0,
            arg0: 1,
        });
        assert_eq!(e.decision, Decision::Crash);
        assert_eq!((e.signal, e.rule_id), (libc::SIGKILL, 12));
        assert_eq!(e.syscall, "write");
        assert_eq!(e.retval, None);
        assert_eq!(e.latency, Duration::ZERO);
        assert_eq!(e.backend, crate::enforce::BackendKind::EbpfTrace);
    }

    #[test]
    fn unknown_numbers_get_a_stable_name() {
        assert_eq!(syscall_name(3999), "syscall_3999");
        assert!(std::ptr::eq(syscall_name(3999), syscall_name(3999)));
        assert_eq!(syscall_name(3), "close");
        assert_eq!(syscall_name(231), "exit_group");
    }
}
