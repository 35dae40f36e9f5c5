//! Crash rules on the ebpf-trace backend: `bpf_send_signal` at `sys_enter`, for services faultd did
//! not launch (or when forced); and the backend's probe row.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::trace::Tracer;
use crate::enforce::{Backend, BackendKind, Refusal, ServiceTarget};
use crate::probe::{self, action_table};
use crate::rules::Rule;

/// raw_syscalls tracepoints with a crash map keyed by cgroup and syscall number.
pub(crate) struct CrashBackend;

impl Backend for CrashBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::EbpfTrace
    }

    fn capability(&self) -> probe::Backend {
        probed_row()
    }

    /// Attaching the tracer makes every syscall on the host dearer, so seccomp goes first where it can.
    fn cost(&self, _rule: &Rule) -> u32 {
        20
    }

    fn accepts(&self, rule: &Rule, service: &ServiceTarget<'_>) -> Result<(), Refusal> {
        if let Some(why) = faultd_model::backend::refusal(self.kind(), &crate::enforce::shape(rule))
        {
            return Err(Refusal::Unsupported(why));
        }
        if service.cgroup.is_none() {
            return Err(Refusal::Unavailable(format!(
                "{} runs without a cgroup (no writable cgroup v2 here), so the ebpf-trace backend \
                 cannot tell its syscalls from others",
                service.name
            )));
        }
        Ok(())
    }

    fn install(&self, service: &ServiceTarget<'_>, rules: &[Arc<Rule>]) -> Result<(), String> {
        let Some(cgroup) = service.cgroup else {
            return if rules.is_empty() {
                Ok(())
            } else {
                Err(format!("{} runs without a cgroup", service.name))
            };
        };
        let id = match std::fs::metadata(cgroup) {
            Ok(meta) => meta.ino(),
            // Its cgroup is gone: so are its processes; entries were removed with the session.
            Err(_) if rules.is_empty() => return Ok(()),
            Err(e) => return Err(format!("the cgroup of {}: {e}", service.name)),
        };
        Tracer::global()
            .set_crash(
                service.session,
                id,
                service.name.clone(),
                service.bus.clone(),
                rules,
            )
            .map_err(|e| e.to_string())
    }
}

/// Why `ebpf-trace` cannot be used here, or `None` when it can. Blocks the first time (loads the
/// tracer's programs).
pub fn ebpf_trace_unavailable() -> Option<String> {
    let b = probed_row();
    (!b.available).then_some(b.reason)
}

/// Syscall tracing through raw_syscalls tracepoints: available when the tracer's programs load (they
/// are loaded, not attached, and dropped again). Probed once per process.
pub(crate) fn probed_row() -> probe::Backend {
    backend_row(&super::trace::available())
}

/// The `ebpf-trace` row for the outcome of loading the tracer.
pub(crate) fn backend_row(result: &Result<(), String>) -> probe::Backend {
    let reason = match result {
        Ok(()) => {
            "the raw_syscalls tracer loads; while a session traces every syscall, every process \
                   on the host pays about 0.1-0.2 us more per syscall (cargo xtask bench)."
                .to_owned()
        }
        Err(e) => format!("{e}."),
    };
    let actions = action_table(
        result.is_ok(),
        &reason,
        vec![
            (
                "observe",
                Ok(
                    "records every syscall of the session's services with its return value and \
                    latency (faultctl run --trace all); it decides nothing.",
                ),
            ),
            (
                "crash",
                Ok(
                    "sends the chosen signal with bpf_send_signal at the entry of the rule's syscalls \
                    (every time, while the rule is active), for rules without a path glob, \
                    destination or probability; the default for services attached by cgroup.",
                ),
            ),
        ],
    );
    probe::Backend {
        name: super::trace::BACKEND.as_str(),
        available: result.is_ok(),
        reason,
        actions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tests::assert_one_sentence_each;

    /// As root on our machines the tracer's programs load; otherwise the reason is one sentence.
    #[test]
    fn ebpf_trace_probe_loads_the_tracer() {
        let b = probed_row();
        assert_eq!(b.name, "ebpf-trace");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(b.available, "{}", b.reason);
        } else {
            assert!(!b.available && b.reason.ends_with('.') && !b.reason.contains('\n'));
        }
    }

    /// Each action it knows, available or not, with one sentence.
    #[test]
    fn lists_its_actions_with_a_reason() {
        let trace = backend_row(&Ok(()));
        assert_eq!(
            trace
                .actions
                .iter()
                .map(|a| (a.action, a.available))
                .collect::<Vec<_>>(),
            [("observe", true), ("crash", true)]
        );
        let failed = backend_row(&Err("loading faultd's eBPF tracer failed: EPERM".into()));
        assert!(failed.actions.iter().all(|a| !a.available));
        assert_one_sentence_each(&[&trace, &failed]);
    }
}
