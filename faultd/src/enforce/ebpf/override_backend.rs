//! The ebpf-override backend (kprobe + `bpf_override_return`): probed and reported (its probe reads
//! the kernel's build configuration); it enforces nothing yet, so the registry never routes a rule to
//! it.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::enforce::{Backend, BackendKind, ServiceTarget};
use crate::probe::{self, action_table, config_enabled, kernel_config, uname};
use crate::rules::Rule;

/// Where the kernel lists its kprobe event source; missing without `CONFIG_KPROBES`.
pub(crate) const KPROBE_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

/// kprobe on syscall entry calling `bpf_override_return`.
pub(crate) struct OverrideBackend;

impl Backend for OverrideBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::EbpfOverride
    }

    fn capability(&self) -> probe::Backend {
        static ROW: OnceLock<probe::Backend> = OnceLock::new();
        ROW.get_or_init(|| {
            let kprobes = Path::new(KPROBE_TYPE).exists();
            backend_row(kprobes, kernel_config(&uname().0).as_deref())
        })
        .clone()
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

/// `bpf_override_return` from a kprobe on syscall entry.
///
/// Always unavailable in this build: loading a real BPF program to confirm the kernel accepts it comes
/// with the eBPF programs (issue: faultd-ebpf). Until then this names what is missing.
pub(crate) fn backend_row(kprobes: bool, config: Option<&str>) -> probe::Backend {
    let enabled = |option| config.map(|c| config_enabled(c, option));
    let reason = match (
        kprobes,
        enabled("CONFIG_KPROBES"),
        enabled("CONFIG_BPF_KPROBE_OVERRIDE"),
    ) {
        (false, Some(true), _) => format!(
            "the kernel has CONFIG_KPROBES=y but {KPROBE_TYPE} is missing (is sysfs mounted?), so \
             bpf_override_return cannot be attached."
        ),
        (false, _, _) => {
            "kprobes are not available: the kernel was built without CONFIG_KPROBES, so \
                          bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE) cannot run."
                .to_owned()
        }
        (true, _, Some(false)) => "kprobes work, but the kernel was built without \
                                   CONFIG_BPF_KPROBE_OVERRIDE, so bpf_override_return cannot fail \
                                   syscalls."
            .to_owned(),
        (true, _, _) => "kprobes work, but faultd was built without its eBPF programs (issue: \
                         faultd-ebpf)."
            .to_owned(),
    };
    let actions = action_table(
        false,
        &reason,
        vec![(
            "deny",
            Ok("fails a syscall with the chosen errno at its entry, in the kernel."),
        )],
    );
    probe::Backend {
        name: "ebpf-override",
        available: false,
        reason,
        actions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tests::assert_one_sentence_each;

    #[test]
    fn ebpf_override_reasons() {
        let reason = |kprobes, config| backend_row(kprobes, config).reason;
        assert!(reason(false, None).contains("without CONFIG_KPROBES"));
        assert!(reason(false, Some("CONFIG_KPROBES=y")).contains("is sysfs mounted"));
        assert!(
            reason(true, Some("CONFIG_KPROBES=y")).contains("without CONFIG_BPF_KPROBE_OVERRIDE")
        );
        let full = "CONFIG_KPROBES=y\nCONFIG_BPF_KPROBE_OVERRIDE=y";
        assert!(reason(true, Some(full)).contains("issue: faultd-ebpf"));
    }

    /// Each action it knows, available or not, with one sentence.
    #[test]
    fn lists_its_actions_with_a_reason() {
        let over = backend_row(false, None);
        assert_eq!(
            over.actions
                .iter()
                .map(|a| (a.action, a.available))
                .collect::<Vec<_>>(),
            [("deny", false)]
        );
        assert!(over.actions[0].reason.contains("CONFIG_KPROBES"));
        assert_one_sentence_each(&[&over]);
    }
}
