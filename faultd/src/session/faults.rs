//! Fault sets: a client's rules compiled against the session's services, each routed to a backend by
//! the [`Registry`], installed on every service, and removed again.
//!
//! Installing may load and attach BPF programs: [`Session::apply_fault_set`] and
//! [`Session::clear_faults`] block, so async callers run them on a blocking thread (as
//! [`Engine::apply_faults`](crate::engine::Engine::apply_faults) and
//! [`Engine::clear_faults`](crate::engine::Engine::clear_faults) do).

use std::sync::Arc;

use super::Session;
use super::config::PartitionSpec;
use crate::enforce::ebpf::trace::Tracer;
use crate::enforce::{BackendKind, Refusal, Registry};
use crate::engine::EngineError;
use crate::proxy::{ProxyRule, ProxyRuleSpec};
use crate::rules::{Action, Rule, RuleSpec, SeededRng};
use crate::trace::{EventKind, RuleInfo};

/// One applied fault set.
pub(super) struct FaultSet {
    id: Arc<str>,
    rules: Vec<Arc<Rule>>,
    proxy_rules: Vec<Arc<ProxyRule>>,
}

/// The rules of a fault set: syscall rules and protocol rules.
#[derive(Default)]
pub struct AppliedRules {
    /// Syscall rules.
    pub rules: Vec<Arc<Rule>>,
    /// Protocol rules.
    pub proxy_rules: Vec<Arc<ProxyRule>>,
}

/// A session's active fault sets, in the order they were applied, and its id counters.
#[derive(Default)]
pub(super) struct Faults {
    active: Vec<FaultSet>,
    next_rule: u32,
    next_set: u32,
}

impl Session {
    /// Compiles and installs a fault set; returns its id and rules.
    ///
    /// A rule naming an op takes the op's syscalls and path glob where it gives none itself. Every
    /// syscall of a rule must be intercepted by its service's filter, which is fixed at launch.
    /// Blocks (see [`apply_fault_set`](Self::apply_fault_set)).
    pub fn apply_faults(
        &self,
        specs: Vec<RuleSpec>,
        seed: u64,
    ) -> Result<(Arc<str>, Vec<Arc<Rule>>), EngineError> {
        self.apply_fault_set(
            specs.into_iter().map(|s| (s, None)).collect(),
            &[],
            Vec::new(),
            seed,
        )
        .map(|(id, applied)| (id, applied.rules))
    }

    /// [`apply_faults`](Self::apply_faults) with a forced backend per rule (`None`: faultd chooses)
    /// and partitions, which become connect rules on the ebpf-cgroup backend, and protocol rules,
    /// which go to the session's proxies.
    ///
    /// Blocks while backends load and attach their programs: call it from a blocking thread.
    pub fn apply_fault_set(
        &self,
        mut specs: Vec<(RuleSpec, Option<BackendKind>)>,
        partitions: &[PartitionSpec],
        proxy_specs: Vec<ProxyRuleSpec>,
        seed: u64,
    ) -> Result<(Arc<str>, AppliedRules), EngineError> {
        for spec in &proxy_specs {
            self.check_proxy_rule(spec)?;
        }
        // Specs from here on are partition rules (one rule each, in order): they also drop packets.
        let first_partition_rule = specs.len();
        specs.extend(self.partition_rules(partitions)?);
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.next_set += 1;
        let set_id: Arc<str> = format!("fs{}", faults.next_set).into();
        let rng = Arc::new(SeededRng::new(seed));
        let mut rules = Vec::with_capacity(specs.len());
        for (index, (mut spec, forced)) in specs.into_iter().enumerate() {
            let service = self.service(&spec.service)?;
            if let Some(op_name) = &spec.op {
                let op = service
                    .config
                    .ops
                    .iter()
                    .find(|o| &o.name == op_name)
                    .ok_or_else(|| {
                        EngineError::InvalidArgument(format!(
                            "service {} has no op named {op_name:?}",
                            service.name
                        ))
                    })?;
                if spec.syscalls.is_empty() {
                    spec.syscalls = op.syscalls.clone();
                }
                if spec.path_glob.is_none() {
                    spec.path_glob = op.path_glob.clone();
                }
            }
            faults.next_rule += 1;
            let mut rule = Rule::compile(faults.next_rule, set_id.clone(), &spec, rng.clone())
                .map_err(|e| {
                    EngineError::InvalidArgument(format!("rule on {}: {e}", spec.service))
                })?;
            rule.partition = index >= first_partition_rule;
            let target = service.target(&self.id, &self.bus);
            let routes = Registry::host()
                .route(&rule, &target, forced)
                .map_err(|refusal| match refusal {
                    Refusal::Unsupported(why) => {
                        EngineError::InvalidArgument(format!("rule on {}: {why}", service.name))
                    }
                    Refusal::Unavailable(why) => EngineError::FailedPrecondition(why),
                })?;
            if let [(kind, _)] = routes[..] {
                rule.backend = kind;
                rules.push(Arc::new(rule));
                continue;
            }
            rule.split_from = Some(rule.id);
            for (i, (kind, syscalls)) in routes.into_iter().enumerate() {
                let id = if i == 0 {
                    rule.id
                } else {
                    faults.next_rule += 1;
                    faults.next_rule
                };
                let mut part = rule.part(id, syscalls);
                part.backend = kind;
                rules.push(Arc::new(part));
            }
        }
        let mut proxy_rules = Vec::with_capacity(proxy_specs.len());
        for spec in proxy_specs {
            faults.next_rule += 1;
            let label = format!("rule on {}.{}", spec.service, spec.interface);
            let rule = ProxyRule::compile(faults.next_rule, set_id.clone(), spec, rng.clone())
                .map_err(|e| EngineError::InvalidArgument(format!("{label}: {e}")))?;
            proxy_rules.push(Arc::new(rule));
        }
        faults.active.push(FaultSet {
            id: set_id.clone(),
            rules: rules.clone(),
            proxy_rules: proxy_rules.clone(),
        });
        if let Err(e) = self.publish(&faults) {
            faults.active.pop();
            if let Err(again) = self.publish(&faults) {
                tracing::warn!(session = %self.id, "restoring the previous rules: {again}");
            }
            return Err(EngineError::FailedPrecondition(e));
        }
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(rules.iter().cloned());
        self.proxy_history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(proxy_rules.iter().cloned());
        drop(faults);
        self.bus.emit_session(EventKind::FaultsApplied {
            fault_set: set_id.clone(),
            rules: rules.iter().map(|r| rule_info(r)).collect(),
            seed,
        });
        Ok((set_id, AppliedRules { rules, proxy_rules }))
    }

    /// How many rules the active fault sets hold. Waits for an apply or clear in progress: call it
    /// from a blocking thread.
    pub fn active_rules(&self) -> usize {
        let faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults
            .active
            .iter()
            .map(|set| set.rules.len() + set.proxy_rules.len())
            .sum()
    }

    /// Removes a fault set; returns its rules with their counters.
    ///
    /// Blocks while backends detach their programs: call it from a blocking thread.
    pub fn clear_faults(&self, set_id: &str) -> Result<AppliedRules, EngineError> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let index = faults
            .active
            .iter()
            .position(|s| &*s.id == set_id)
            .ok_or_else(|| EngineError::NotFound(format!("fault set {set_id}")))?;
        let set = faults.active.remove(index);
        if let Err(e) = self.publish(&faults) {
            tracing::warn!(session = %self.id, "{e}");
        }
        drop(faults);
        // Every event of the fault set's time is numbered before the marker: the in-kernel
        // decisions were delivered by `publish`, the tracer's records are delivered now.
        Tracer::global().sync();
        self.bus.flush();
        self.bus
            .emit_session(EventKind::FaultsCleared { fault_set: set.id });
        Ok(AppliedRules {
            rules: set.rules,
            proxy_rules: set.proxy_rules,
        })
    }

    /// Installs on every backend of every service the active rules routed to it, in precedence order.
    fn publish(&self, faults: &Faults) -> Result<(), String> {
        self.publish_proxy_rules(faults.active.iter().flat_map(|set| set.proxy_rules.iter()));
        let active = faults.active.iter().flat_map(|set| set.rules.iter());
        for service in &self.services {
            Registry::host()
                .install(&service.target(&self.id, &self.bus), active.clone())
                .map_err(|(kind, e)| {
                    format!("the {kind} backend failed on {}: {e}", service.name)
                })?;
        }
        Ok(())
    }

    /// The connect rules that make up `partitions`: a partition from A to B fails A's connects to
    /// every interface port of B with ECONNREFUSED (and B's to A's with `both_directions`);
    /// [`apply_fault_set`](Self::apply_fault_set) also drops A's packets to and from those ports.
    fn partition_rules(
        &self,
        partitions: &[PartitionSpec],
    ) -> Result<Vec<(RuleSpec, Option<BackendKind>)>, EngineError> {
        let mut out = Vec::new();
        for p in partitions {
            let (from, to) = (self.service(&p.from)?, self.service(&p.to)?);
            if from.name == to.name {
                return Err(EngineError::InvalidArgument(format!(
                    "a partition needs two different services (got {} twice)",
                    from.name
                )));
            }
            let mut directions = vec![(from, to)];
            if p.both_directions {
                directions.push((to, from));
            }
            for (a, b) in directions {
                if b.config.interfaces.is_empty() {
                    return Err(EngineError::InvalidArgument(format!(
                        "cannot partition {} from {}: {} has no interfaces, so there is no port to cut",
                        a.name, b.name, b.name
                    )));
                }
                for iface in &b.config.interfaces {
                    let spec = RuleSpec {
                        trigger: Default::default(),
                        service: a.name.to_string(),
                        op: None,
                        syscalls: vec!["connect".into()],
                        path_glob: None,
                        destination: Some(format!(":{}", iface.port)),
                        action: Action::Deny {
                            errno: libc::ECONNREFUSED,
                        },
                        probability: 1.0,
                        label: Some(
                            p.label
                                .clone()
                                .unwrap_or_else(|| format!("partition {}->{}", a.name, b.name)),
                        ),
                    };
                    out.push((spec, Some(BackendKind::EbpfCgroup)));
                }
            }
        }
        Ok(out)
    }
}

fn rule_info(rule: &Rule) -> RuleInfo {
    RuleInfo {
        id: rule.id,
        service: rule.service.clone(),
        op: rule.op.clone(),
        syscalls: rule.syscalls.iter().map(|s| s.name).collect(),
        path_glob: rule.path_glob.clone(),
        backend: rule.backend,
    }
}
