//! The ebpf-lsm backend as the registry sees it: BPF LSM hooks return the errno for what they cover —
//! opens (`file_open`), the read and write families (`file_permission`), unlink, rmdir, mkdir, rename,
//! truncate and connect (their `inode_*`, `*_truncate` and `socket_connect` hooks) — for kernels without
//! `CONFIG_BPF_KPROBE_OVERRIDE` (distributions' stock kernels). Programs and maps are shared with
//! ebpf-override ([`super::faults`]); syscalls no hook covers (fsync) stay with another backend.

use std::sync::Arc;

use super::override_backend::in_kernel_accepts;
use crate::enforce::{Backend, BackendKind, Refusal, ServiceTarget};
use crate::probe::{self, action_table};
use crate::rules::{Action, Rule};

/// BPF LSM programs.
pub(crate) struct LsmBackend;

impl Backend for LsmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::EbpfLsm
    }

    fn capability(&self) -> probe::Backend {
        backend_row(&super::faults::probe_lsm())
    }

    /// In-kernel, after ebpf-override (which sees every syscall at its entry).
    fn cost(&self, rule: &Rule) -> u32 {
        match rule.action {
            Action::Deny { .. } => 3,
            _ => 51,
        }
    }

    fn accepts(&self, rule: &Rule, service: &ServiceTarget<'_>) -> Result<(), Refusal> {
        in_kernel_accepts(self.kind(), rule, service)
    }

    fn install(&self, service: &ServiceTarget<'_>, rules: &[Arc<Rule>]) -> Result<(), String> {
        super::faults::install(self.kind(), service, rules)
    }
}

/// The `ebpf-lsm` row for the outcome of loading and attaching an `lsm/file_open` program.
pub(crate) fn backend_row(loaded: &Result<(), String>) -> probe::Backend {
    let reason = match loaded {
        Ok(()) => "BPF LSM programs load and attach; opens, reads, writes, unlink, rmdir, mkdir, \
                   rename, truncate and connect are decided in the kernel (fsync and other syscalls \
                   no hook sees go to another backend)."
            .to_owned(),
        Err(e) => e.clone(),
    };
    let actions =
        action_table(
            loaded.is_ok(),
            &reason,
            vec![
            (
                "deny",
                Ok("fails opens (lsm/file_open), the read and write families \
                    (lsm/file_permission), unlink, rmdir, mkdir, rename, truncate and connect \
                    (their LSM hooks) with the chosen errno, in the kernel."),
            ),
            (
                "allow",
                Ok("lets one of those calls through in the kernel, to carve an exception out of \
                    a broader in-kernel rule."),
            ),
            (
                "delay",
                Err("ebpf-lsm cannot delay: an LSM hook cannot sleep on the caller's behalf, so \
                     delays stay with seccomp."
                    .to_owned()),
            ),
        ],
        );
    probe::Backend {
        name: "ebpf-lsm",
        available: loaded.is_ok(),
        reason,
        actions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tests::assert_one_sentence_each;

    #[test]
    fn lists_its_actions_with_a_reason() {
        let off = backend_row(&Err(
            "bpf is not in the active LSM list (lockdown,capability), so BPF LSM programs never run."
                .into(),
        ));
        assert!(!off.available);
        assert!(off.actions.iter().all(|a| !a.available));
        let on = backend_row(&Ok(()));
        assert_eq!(
            on.available_actions().collect::<Vec<_>>(),
            ["deny", "allow"]
        );
        assert_one_sentence_each(&[&off, &on]);
        let live = LsmBackend.capability();
        assert!(
            live.reason.ends_with('.') && !live.reason.contains('\n'),
            "{}",
            live.reason
        );
    }
}
