//! The ebpf-override backend (kprobe + `bpf_override_return`): probed and reported; it enforces nothing
//! yet, so the registry never routes a rule to it.

use std::sync::Arc;

use crate::enforce::{Backend, BackendKind, ServiceTarget};
use crate::probe;
use crate::rules::Rule;

/// kprobe on syscall entry calling `bpf_override_return`.
pub(crate) struct OverrideBackend;

impl Backend for OverrideBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::EbpfOverride
    }

    fn capability(&self) -> probe::Backend {
        probe::override_row()
    }

    fn cost(&self, _rule: &Rule) -> u32 {
        0
    }

    fn install(&self, _service: &ServiceTarget<'_>, rules: &[Arc<Rule>]) -> Result<(), String> {
        if rules.is_empty() {
            Ok(())
        } else {
            Err("the ebpf-override backend enforces no rules yet".into())
        }
    }
}
