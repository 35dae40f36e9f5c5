//! The ebpf-cgroup backend as the registry sees it: connect faults and partitions on a service's
//! cgroup, decided in the kernel; and its probe row.

use std::sync::Arc;

use super::cgroup::{ConnectFaults, DropPeer, EventSink};
use crate::enforce::{Backend, BackendKind, Refusal, ServiceTarget};
use crate::probe::{self, action_table};
use crate::rules::{Action, Rule};

/// cgroup/connect4/6 and cgroup_skb programs.
pub(crate) struct CgroupBackend;

impl Backend for CgroupBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::EbpfCgroup
    }

    fn capability(&self) -> probe::Backend {
        // The programs' load is probed once per process; the cgroup v2 mount every time.
        probed_row(crate::cgroup::cgroup_v2_root().is_some())
    }

    /// A denial in the kernel costs nothing measurable. An `allow` stays with seccomp unless nothing
    /// else can take it: an in-kernel allow shadows only in-kernel rules.
    fn cost(&self, rule: &Rule) -> u32 {
        match rule.action {
            Action::Deny { .. } => 1,
            _ => 50,
        }
    }

    fn accepts(&self, rule: &Rule, service: &ServiceTarget<'_>) -> Result<(), Refusal> {
        if let Some(why) = faultd_model::backend::refusal(self.kind(), &crate::enforce::shape(rule))
        {
            return Err(Refusal::Unsupported(why));
        }
        if service.cgroup.is_none() {
            return Err(Refusal::Unavailable(format!(
                "{} runs without a cgroup (no writable cgroup v2 here), so the ebpf-cgroup backend \
                 has nothing to attach to",
                service.name
            )));
        }
        Ok(())
    }

    fn install(&self, service: &ServiceTarget<'_>, rules: &[Arc<Rule>]) -> Result<(), String> {
        service
            .state
            .with(self.kind(), |slot: &mut Option<ConnectFaults>| {
                if rules.is_empty() {
                    // Detaches the programs after adding their last hits to the rules.
                    drop(slot.take());
                    return Ok(());
                }
                if slot.is_none() {
                    let cgroup = service
                        .cgroup
                        .ok_or_else(|| format!("{} runs without a cgroup", service.name))?;
                    let sink = EventSink {
                        service: service.name.clone(),
                        bus: service.bus.clone(),
                    };
                    *slot = Some(ConnectFaults::attach(cgroup, Some(sink))?);
                }
                let programs = slot.as_mut().expect("attached above");
                programs.set_rules(rules)?;
                // A partition's connect rule names one interface port of the other service: its packets
                // to and from that port are dropped too, which cuts connections that are already open.
                let drops: Vec<DropPeer> = rules
                    .iter()
                    .filter(|r| r.partition)
                    .filter_map(|r| {
                        let d = r.destination_filter()?;
                        Some(DropPeer {
                            ip: d.ip,
                            port: d.port,
                            rule_id: r.id,
                        })
                    })
                    .collect();
                programs.set_drops(&drops)
            })
    }
}

/// In-kernel connect faults through cgroup/connect4 and connect6 programs: available when faultd's
/// `fd_connect4` program loads (it is loaded, not attached, and dropped; cached per process) and there
/// is a writable cgroup v2 to attach it to.
pub(crate) fn probed_row(cgroup_v2: bool) -> probe::Backend {
    let (result, drops) = if cgroup_v2 {
        (super::cgroup::available(), super::cgroup::drops_available())
    } else {
        let none = "there is no writable cgroup v2 to attach cgroup/connect programs to.";
        (Err(none.to_owned()), Err(none.to_owned()))
    };
    backend_row(&result, &drops)
}

/// The `ebpf-cgroup` row for the outcome of loading the connect program and the packet-drop program.
pub(crate) fn backend_row(
    result: &Result<(), String>,
    drops: &Result<(), String>,
) -> probe::Backend {
    let reason = match result {
        Ok(()) => {
            "cgroup/connect4 programs load; connect faults are decided in the kernel, with no \
                   round trip to faultd."
                .to_owned()
        }
        Err(e) => e.clone(),
    };
    let partition = match drops {
        Ok(()) => Ok(
            "refuses new connects to the other service's interface ports and drops TCP and UDP \
             packets to and from them (cgroup_skb egress and ingress), so open connections are cut \
             too.",
        ),
        Err(e) => Err(format!("a partition needs packet drops, but {e}")),
    };
    let actions = action_table(
        result.is_ok(),
        &reason,
        vec![
            (
                "deny",
                Ok("fails connect(2) only, in the kernel, with the chosen errno (cgroup/connect4 \
                    and connect6); other syscalls stay with seccomp."),
            ),
            (
                "allow",
                Ok("lets a connect through in the kernel, to carve an exception out of a broader \
                    connect rule."),
            ),
            (
                "delay",
                Err("ebpf-cgroup cannot delay a connect: the cgroup hook can only allow or refuse it."
                    .to_owned()),
            ),
            (
                "crash",
                Err("ebpf-cgroup cannot crash a service: its hooks can only allow or refuse a \
                     connect, so crashes go to seccomp or ebpf-trace."
                    .to_owned()),
            ),
            ("partition", partition),
        ],
    );
    probe::Backend {
        name: super::cgroup::BACKEND.as_str(),
        available: result.is_ok(),
        reason,
        actions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tests::assert_one_sentence_each;

    /// As root on our machines the connect program loads; otherwise the reason is one sentence.
    #[test]
    fn ebpf_cgroup_probe_loads_the_connect_program() {
        let b = probed_row(true);
        assert_eq!(b.name, "ebpf-cgroup");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(b.available, "{}", b.reason);
            let available: Vec<_> = b.available_actions().collect();
            assert_eq!(available, ["deny", "allow", "partition"]);
        } else {
            assert!(!b.available && b.reason.ends_with('.') && !b.reason.contains('\n'));
        }
        let b = probed_row(false);
        assert!(
            !b.available && b.reason.contains("cgroup v2"),
            "{}",
            b.reason
        );
        assert!(b.actions.iter().all(|a| !a.available), "{b:?}");
    }

    /// Each action it knows, available or not, with one sentence.
    #[test]
    fn lists_its_actions_with_a_reason() {
        let table = |b: &probe::Backend| -> Vec<(&str, bool)> {
            b.actions.iter().map(|a| (a.action, a.available)).collect()
        };
        let cgroup = backend_row(&Ok(()), &Ok(()));
        assert_eq!(
            table(&cgroup),
            [
                ("deny", true),
                ("allow", true),
                ("delay", false),
                ("crash", false),
                ("partition", true)
            ]
        );
        let reason = |b: &probe::Backend, action: &str| {
            b.actions
                .iter()
                .find(|a| a.action == action)
                .unwrap()
                .reason
                .clone()
        };
        assert_eq!(
            reason(&cgroup, "delay"),
            "ebpf-cgroup cannot delay a connect: the cgroup hook can only allow or refuse it."
        );
        assert!(reason(&cgroup, "deny").contains("connect(2) only"));
        let no_drops = backend_row(&Ok(()), &Err("the kernel refused it.".into()));
        assert_eq!(
            reason(&no_drops, "partition"),
            "a partition needs packet drops, but the kernel refused it."
        );
        assert_eq!(
            no_drops.available_actions().collect::<Vec<_>>(),
            ["deny", "allow"]
        );
        assert_one_sentence_each(&[&cgroup, &no_drops]);
    }
}
