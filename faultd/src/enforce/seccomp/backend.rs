//! The seccomp backend as the registry sees it: everything on a launched service, nothing on an
//! attached one.

use std::sync::Arc;

use super::super::{Backend, BackendKind, Refusal, ServiceTarget};
use crate::probe;
use crate::rules::{Rule, RuleSet};

/// seccomp user notification: faultd answers each intercepted syscall.
pub(crate) struct SeccompBackend;

/// A notification round trip: cheaper than the tracer, dearer than an in-kernel decision.
const COST: u32 = 10;

impl Backend for SeccompBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Seccomp
    }

    fn capability(&self) -> probe::Backend {
        super::probe::row()
    }

    fn cost(&self, _rule: &Rule) -> u32 {
        COST
    }

    fn accepts(&self, rule: &Rule, service: &ServiceTarget<'_>) -> Result<(), Refusal> {
        if service.attached {
            return Err(Refusal::Unavailable(format!(
                "service {} is attached by cgroup, and the seccomp backend needs faultd to launch \
                 the service (its filter is installed before exec)",
                service.name
            )));
        }
        if let Some(missing) = rule
            .syscalls
            .iter()
            .find(|sc| !service.intercepted.iter().any(|i| i.nr == sc.nr))
        {
            return Err(Refusal::Unavailable(format!(
                "a rule on {} uses {}, which {}'s seccomp filter does not intercept (intercepted: \
                 {}); the filter is fixed at launch, so name it in the service's \
                 intercept_syscalls when creating the session",
                service.name,
                missing.name,
                service.name,
                list_names(service.intercepted)
            )));
        }
        Ok(())
    }

    fn install(&self, service: &ServiceTarget<'_>, rules: &[Arc<Rule>]) -> Result<(), String> {
        service.rules.store(Arc::new(RuleSet::new(rules.to_vec())));
        Ok(())
    }
}

fn list_names(syscalls: &[&'static crate::syscalls::Syscall]) -> String {
    if syscalls.is_empty() {
        return "none".into();
    }
    syscalls
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}
