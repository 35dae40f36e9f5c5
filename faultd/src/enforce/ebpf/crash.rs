//! Crash rules on the ebpf-trace backend: `bpf_send_signal` at `sys_enter`, for services faultd did
//! not launch (or when forced).

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::trace::Tracer;
use crate::enforce::{Backend, BackendKind, Refusal, ServiceTarget};
use crate::probe;
use crate::rules::Rule;

/// raw_syscalls tracepoints with a crash map keyed by cgroup and syscall number.
pub(crate) struct CrashBackend;

impl Backend for CrashBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::EbpfTrace
    }

    fn capability(&self) -> probe::Backend {
        probe::trace_row()
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
