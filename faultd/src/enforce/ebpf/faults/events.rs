//! The ring buffer of in-kernel decisions, turned into events on each service's bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use faultd_ebpf::faults::{FaultEvent, HOOK_ENTRY};

use crate::enforce::BackendKind;
use crate::rules::Rule;
use crate::trace::{Decision, EventBus, LateSource, SyscallEvent};

/// How often pending decisions are read when fewer than the wakeup threshold (64 KiB) wait.
pub(super) const EVENTS_POLL: Duration = Duration::from_millis(50);

/// Where one service's decisions go.
pub(super) struct Sink {
    pub(super) service: Arc<str>,
    pub(super) bus: Arc<EventBus>,
    pub(super) rules: HashMap<u32, Arc<Rule>>,
    /// Decisions arrive up to [`EVENTS_POLL`] late: the bus holds events in its reorder window.
    pub(super) _late: LateSource,
}

/// The ring buffer and the sinks its records are dispatched to, by cgroup id.
pub(super) struct Events {
    pub(super) ring: Mutex<RingBuf<MapData>>,
    pub(super) sinks: Mutex<HashMap<u64, Sink>>,
}

impl Events {
    pub(super) fn drain(&self) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(item) = ring.next() {
            let Some(record) = FaultEvent::from_bytes(&item) else {
                continue;
            };
            let Some(sink) = sinks.get(&record.cgroup_id) else {
                continue;
            };
            let rule = sink.rules.get(&record.rule_id);
            let backend = rule.map_or(
                if record.hook == u32::from(HOOK_ENTRY) {
                    BackendKind::EbpfOverride
                } else {
                    BackendKind::EbpfLsm
                },
                |r| r.backend,
            );
            let event = SyscallEvent {
                pid: record.pid,
                tid: record.tid,
                nr: record.nr,
                syscall: faultd_ebpf::syscall_name(record.nr).unwrap_or("unknown"),
                op: rule.and_then(|r| r.op.clone()),
                path: record.path(),
                decision: if record.errno == 0 {
                    Decision::Allow
                } else {
                    Decision::Deny
                },
                errno: record.errno,
                delay: Duration::ZERO,
                label: rule.and_then(|r| r.label.clone()),
                rule_id: record.rule_id,
                signal: 0,
                retval: None,
                io: None,
                latency: Duration::ZERO,
                backend,
            };
            sink.bus
                .emit_kernel_decision(&sink.service, event, record.ts_ns);
        }
    }
}
