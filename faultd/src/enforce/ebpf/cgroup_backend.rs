//! The ebpf-cgroup backend as the registry sees it: connect faults and partitions on a service's
//! cgroup, decided in the kernel.

use std::sync::Arc;

use super::cgroup::{ConnectFaults, DropPeer, EventSink};
use crate::enforce::{Backend, BackendKind, Refusal, ServiceTarget};
use crate::probe;
use crate::rules::{Action, Rule};

/// cgroup/connect4/6 and cgroup_skb programs.
pub(crate) struct CgroupBackend;

impl Backend for CgroupBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::EbpfCgroup
    }

    fn capability(&self) -> probe::Backend {
        probe::cgroup_row()
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
