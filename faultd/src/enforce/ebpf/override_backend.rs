//! The ebpf-override backend as the registry sees it: a kprobe on each faulted syscall's entry fails it
//! with `bpf_override_return` (programs and maps in [`super::faults`]); and its probe row.

use std::path::Path;
use std::sync::Arc;

use crate::enforce::{Backend, BackendKind, Refusal, ServiceTarget};
use crate::probe::{self, action_table, config_enabled, kernel_config, uname};
use crate::rules::{Action, Rule};

/// Where the kernel lists its kprobe event source; missing without `CONFIG_KPROBES`.
pub(crate) const KPROBE_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

/// kprobe on syscall entry calling `bpf_override_return`.
pub(crate) struct OverrideBackend;

impl Backend for OverrideBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::EbpfOverride
    }

    fn capability(&self) -> probe::Backend {
        let kprobes = Path::new(KPROBE_TYPE).exists();
        backend_row(
            kprobes,
            kernel_config(&uname().0).as_deref(),
            &super::faults::probe_override(),
        )
    }

    /// In-kernel, so cheaper than seccomp's round trip; the ebpf-cgroup backend keeps connects (it
    /// also filters destinations). An `allow` stays with seccomp unless nothing else can take it: an
    /// in-kernel allow shadows only in-kernel rules.
    fn cost(&self, rule: &Rule) -> u32 {
        match rule.action {
            Action::Deny { .. } => 2,
            _ => 50,
        }
    }

    fn accepts(&self, rule: &Rule, service: &ServiceTarget<'_>) -> Result<(), Refusal> {
        in_kernel_accepts(self.kind(), rule, service)?;
        if rule.path_glob.is_some()
            && let Err(why) = super::faults::probe_lsm()
        {
            return Err(Refusal::Unavailable(format!(
                "the ebpf-override backend matches path globs on the path a file was opened as, \
                 which needs a BPF LSM file_open program, and here {}",
                why.trim_end_matches('.')
            )));
        }
        Ok(())
    }

    fn install(&self, service: &ServiceTarget<'_>, rules: &[Arc<Rule>]) -> Result<(), String> {
        super::faults::install(self.kind(), service, rules)
    }
}

/// What both in-kernel backends check: the capability table, a cgroup to target, a glob the kernel
/// matcher can run.
pub(crate) fn in_kernel_accepts(
    kind: BackendKind,
    rule: &Rule,
    service: &ServiceTarget<'_>,
) -> Result<(), Refusal> {
    if let Some(why) = faultd_model::backend::refusal(kind, &crate::enforce::shape(rule)) {
        return Err(Refusal::Unsupported(why));
    }
    if let Some(glob) = &rule.path_glob {
        super::faults::compile_glob(glob).map_err(Refusal::Unsupported)?;
    }
    if service.cgroup.is_none() {
        return Err(Refusal::Unavailable(format!(
            "{} runs without a cgroup (no writable cgroup v2 here), so the {kind} backend cannot \
             tell its syscalls from others",
            service.name
        )));
    }
    Ok(())
}

/// `bpf_override_return` from a kprobe on syscall entry: available when the probe loaded and
/// attached one (`loaded`); otherwise the kernel's configuration names what is missing.
pub(crate) fn backend_row(
    kprobes: bool,
    config: Option<&str>,
    loaded: &Result<(), String>,
) -> probe::Backend {
    let enabled = |option| config.map(|c| config_enabled(c, option));
    let reason = match (
        loaded,
        kprobes,
        enabled("CONFIG_KPROBES"),
        enabled("CONFIG_BPF_KPROBE_OVERRIDE"),
    ) {
        (Ok(()), ..) => {
            "a kprobe calling bpf_override_return loads and attaches; named-op denials \
                         are decided at the syscall's entry in the kernel."
                .to_owned()
        }
        (_, false, Some(true), _) => format!(
            "the kernel has CONFIG_KPROBES=y but {KPROBE_TYPE} is missing (is sysfs mounted?), so \
             bpf_override_return cannot be attached."
        ),
        (_, false, _, _) => "kprobes are not available: the kernel was built without \
                             CONFIG_KPROBES, so bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE) \
                             cannot run."
            .to_owned(),
        (_, true, _, Some(false)) => "kprobes work, but the kernel was built without \
                                      CONFIG_BPF_KPROBE_OVERRIDE, so bpf_override_return cannot \
                                      fail syscalls."
            .to_owned(),
        (Err(e), true, _, _) => e.clone(),
    };
    let available = loaded.is_ok();
    let actions =
        action_table(
            available,
            &reason,
            vec![
            (
                "deny",
                Ok("fails a syscall with the chosen errno at its entry, in the kernel (path globs \
                    match the path a file was opened as, through BPF LSM file_open)."),
            ),
            (
                "allow",
                Ok("lets a syscall through in the kernel, to carve an exception out of a broader \
                    in-kernel rule."),
            ),
            (
                "delay",
                Err("ebpf-override cannot delay: a kprobe cannot sleep on the caller's behalf, so \
                     delays stay with seccomp."
                    .to_owned()),
            ),
        ],
        );
    probe::Backend {
        name: "ebpf-override",
        available,
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
        let refused = Err("the kernel refused it.".to_owned());
        let reason = |kprobes, config| backend_row(kprobes, config, &refused).reason;
        assert!(reason(false, None).contains("without CONFIG_KPROBES"));
        assert!(reason(false, Some("CONFIG_KPROBES=y")).contains("is sysfs mounted"));
        assert!(
            reason(true, Some("CONFIG_KPROBES=y")).contains("without CONFIG_BPF_KPROBE_OVERRIDE")
        );
        let full = "CONFIG_KPROBES=y\nCONFIG_BPF_KPROBE_OVERRIDE=y";
        assert_eq!(reason(true, Some(full)), "the kernel refused it.");
        let row = backend_row(true, Some(full), &Ok(()));
        assert!(row.available && row.reason.contains("loads and attaches"));
    }

    /// This host's kernel cannot run kprobes (KERNEL.md): the probe, which loads and attaches a real
    /// program, says why in one sentence.
    #[test]
    fn the_probe_loads_a_real_program() {
        let row = OverrideBackend.capability();
        if !row.available {
            assert!(
                row.reason.ends_with('.') && !row.reason.contains('\n'),
                "{}",
                row.reason
            );
        }
    }

    /// Each action it knows, available or not, with one sentence.
    #[test]
    fn lists_its_actions_with_a_reason() {
        let over = backend_row(false, None, &Err("x.".into()));
        assert_eq!(
            over.actions
                .iter()
                .map(|a| (a.action, a.available))
                .collect::<Vec<_>>(),
            [("deny", false), ("allow", false), ("delay", false)]
        );
        assert!(over.actions[0].reason.contains("CONFIG_KPROBES"));
        let on = backend_row(true, None, &Ok(()));
        assert_eq!(
            on.available_actions().collect::<Vec<_>>(),
            ["deny", "allow"]
        );
        assert_one_sentence_each(&[&over, &on]);
    }
}
