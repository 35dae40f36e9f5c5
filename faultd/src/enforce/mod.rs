//! Enforcement backends: how a decided fault actually reaches a service's syscalls.
//!
//! Every backend implements [`Backend`] in its own module: its [`BackendKind`], its probe row, whether it
//! can enforce a rule on a service (or a one-sentence [`Refusal`]), its relative cost, and installing a
//! service's rules on it. The [`Registry`] holds the backends of this host and routes each rule to the
//! cheapest available backend that accepts it (or the forced one) in one generic loop; adding a backend
//! is one module and one line in [`Registry::host`].
//!
//! Whatever the backend, every decision becomes one event on the session's [`EventBus`].

use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

pub use faultd_model::BackendKind;
use faultd_model::backend::{self, RuleShape};

use crate::probe;
use crate::rules::{Rule, RuleSlot};
use crate::syscalls::Syscall;
use crate::trace::EventBus;

pub mod ebpf;
pub mod seccomp;
#[cfg(test)]
mod tests;

/// What a backend needs to decide and report one service's syscalls.
#[derive(Clone)]
pub struct Interceptor {
    /// The service's name, as events carry it.
    pub service: Arc<str>,
    /// The service's current rules; loaded once per intercepted syscall, so a new snapshot applies to
    /// the next syscall.
    pub rules: Arc<RuleSlot>,
    /// Where each decision is emitted.
    pub bus: Arc<EventBus>,
    /// Resolve the target (path, address) of every intercepted syscall, not only of those a rule
    /// concerns, so that allowed calls carry their path in the trace.
    pub resolve_paths: bool,
    /// Volatile tracking and power loss of the service (storage actions).
    pub storage: Arc<seccomp::storage::Storage>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Why a backend will not take a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The backend can never enforce a rule like this one (a bad request when forced).
    Unsupported(String),
    /// It could, but not here or not on this service (not loaded, no cgroup, filter fixed at launch).
    Unavailable(String),
}

impl Refusal {
    /// The sentence.
    pub(crate) fn reason(&self) -> &str {
        match self {
            Refusal::Unsupported(s) | Refusal::Unavailable(s) => s,
        }
    }
}

/// Per-service state a backend keeps between installs (attached programs, maps), owned by the service
/// so that dropping the service detaches everything.
#[derive(Default)]
pub(crate) struct BackendState(Mutex<HashMap<BackendKind, Box<dyn Any + Send>>>);

impl BackendState {
    /// Runs `f` on this backend's state of type `T`, created with `Default` semantics by `init` when
    /// absent; `f` returning `false` removes (drops) the state.
    pub(crate) fn with<T: Any + Send, R>(
        &self,
        kind: BackendKind,
        f: impl FnOnce(&mut Option<T>) -> R,
    ) -> R {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut slot: Option<T> = map
            .remove(&kind)
            .and_then(|b| b.downcast::<T>().ok().map(|b| *b));
        let out = f(&mut slot);
        if let Some(state) = slot {
            map.insert(kind, Box::new(state));
        }
        out
    }

    /// Drops every backend's state of this service (detaching its programs).
    pub(crate) fn clear(&self) {
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        drop(taken);
    }
}

/// The service a backend enforces rules on.
pub(crate) struct ServiceTarget<'a> {
    /// The session it belongs to.
    pub(crate) session: &'a str,
    /// Its name.
    pub(crate) name: &'a Arc<str>,
    /// Its cgroup directory, when it has one.
    pub(crate) cgroup: Option<&'a Path>,
    /// Attached by cgroup rather than launched by faultd.
    pub(crate) attached: bool,
    /// The syscalls its seccomp filter intercepts (fixed at launch; empty when attached).
    pub(crate) intercepted: &'a [&'static Syscall],
    /// The rule snapshot the seccomp answering thread reads.
    pub(crate) rules: &'a Arc<RuleSlot>,
    /// The session's trace.
    pub(crate) bus: &'a Arc<EventBus>,
    /// Backends' per-service state.
    pub(crate) state: &'a BackendState,
}

/// One enforcement backend.
pub(crate) trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Its row of the capability table (`faultd probe`), probed once and cached.
    fn capability(&self) -> probe::Backend;

    /// Whether this host can run it; the sentence says why not.
    fn available(&self) -> Result<(), String> {
        let row = self.capability();
        if row.available {
            Ok(())
        } else {
            Err(row.reason)
        }
    }

    /// Relative cost of enforcing `rule` here (lower is cheaper); the registry tries cheaper first.
    fn cost(&self, rule: &Rule) -> u32;

    /// Whether it can enforce `rule` on `service`. The default is the shared capability table.
    fn accepts(&self, rule: &Rule, service: &ServiceTarget<'_>) -> Result<(), Refusal> {
        let _ = service;
        match backend::refusal(self.kind(), &shape(rule)) {
            Some(why) => Err(Refusal::Unsupported(why)),
            None => Ok(()),
        }
    }

    /// Makes `rules` (precedence order; empty removes everything) the service's rules on this backend.
    /// May load or attach programs: call it from a blocking thread.
    fn install(&self, service: &ServiceTarget<'_>, rules: &[Arc<Rule>]) -> Result<(), String>;
}

/// The shape of a compiled rule, as the shared capability table sees it.
pub(crate) fn shape(rule: &Rule) -> RuleShape<'_> {
    RuleShape {
        syscalls: rule.syscall_names(),
        action: &rule.action,
        path_glob: rule.path_glob.is_some(),
        destination: rule.destination.is_some(),
        probability: rule.probability(),
        triggered: rule.trigger() != Default::default(),
    }
}

/// The backends of a host.
pub(crate) struct Registry {
    backends: Vec<Box<dyn Backend>>,
}

impl Registry {
    /// A registry of exactly these backends.
    pub(crate) fn new(backends: Vec<Box<dyn Backend>>) -> Registry {
        Registry { backends }
    }

    /// This host's backends: one line per backend.
    pub(crate) fn host() -> &'static Arc<Registry> {
        static HOST: OnceLock<Arc<Registry>> = OnceLock::new();
        HOST.get_or_init(|| {
            Arc::new(Registry::new(vec![
                Box::new(seccomp::SeccompBackend),
                Box::new(ebpf::OverrideBackend),
                Box::new(ebpf::LsmBackend),
                Box::new(ebpf::CrashBackend),
                Box::new(ebpf::CgroupBackend),
            ]))
        })
    }

    /// Every backend, in registration order.
    pub(crate) fn backends(&self) -> impl Iterator<Item = &dyn Backend> {
        self.backends.iter().map(|b| &**b)
    }

    /// The backend of this kind, if registered.
    pub(crate) fn get(&self, kind: BackendKind) -> Option<&dyn Backend> {
        self.backends().find(|b| b.kind() == kind)
    }

    /// The backend that enforces `rule` on `service`: the forced one if it accepts and is available,
    /// else the cheapest available one that accepts. The error says why each candidate refused.
    pub(crate) fn choose(
        &self,
        rule: &Rule,
        service: &ServiceTarget<'_>,
        forced: Option<BackendKind>,
    ) -> Result<BackendKind, Refusal> {
        let mut candidates: Vec<&dyn Backend> = match forced {
            Some(kind) => vec![self.get(kind).ok_or_else(|| {
                Refusal::Unavailable(format!("faultd has no {kind} backend on this host"))
            })?],
            None => self.backends().collect(),
        };
        candidates.sort_by_key(|b| b.cost(rule));
        let mut refusals = Vec::new();
        for backend in candidates {
            let verdict = backend.accepts(rule, service);
            // A backend this host lacks adds nothing to why the others refused, unless forced.
            if matches!(verdict, Err(Refusal::Unsupported(_)))
                && forced.is_none()
                && backend.available().is_err()
            {
                continue;
            }
            let verdict = verdict.and_then(|()| {
                backend.available().map_err(|why| {
                    Refusal::Unavailable(format!(
                        "the {} backend is not available here: {why}",
                        backend.kind()
                    ))
                })
            });
            match verdict {
                Ok(()) => return Ok(backend.kind()),
                Err(refusal) => refusals.push(refusal),
            }
        }
        Err(combine(service.name, refusals))
    }

    /// Where `rule`'s syscalls go: to one backend (the forced one, or the cheapest that takes the whole
    /// rule), or — when faultd chooses and the cheapest backend of some of its syscalls is not that of
    /// the others — per syscall, one part per backend in table order. A named op of write + fsync on a
    /// kernel with BPF LSM but no kprobe override so denies writes in the kernel (ebpf-lsm) and fsync on
    /// seccomp, without the spec changing.
    pub(crate) fn route(
        &self,
        rule: &Rule,
        service: &ServiceTarget<'_>,
        forced: Option<BackendKind>,
    ) -> Result<Vec<(BackendKind, Vec<&'static Syscall>)>, Refusal> {
        let whole = || {
            self.choose(rule, service, forced)
                .map(|kind| vec![(kind, rule.syscalls.clone())])
        };
        if forced.is_some() || rule.syscalls.len() < 2 {
            return whole();
        }
        let mut parts: Vec<(BackendKind, Vec<&'static Syscall>)> = Vec::new();
        for &sc in &rule.syscalls {
            let Ok(kind) = self.choose(&rule.part(rule.id, vec![sc]), service, None) else {
                return whole();
            };
            match parts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, syscalls)) => syscalls.push(sc),
                None => parts.push((kind, vec![sc])),
            }
        }
        if parts.len() == 1 {
            return whole();
        }
        Ok(parts)
    }

    /// Installs on every backend the rules routed to it, from `rules` in precedence order. Stops at the
    /// first backend that fails.
    pub(crate) fn install<'r>(
        &self,
        service: &ServiceTarget<'_>,
        rules: impl Iterator<Item = &'r Arc<Rule>> + Clone,
    ) -> Result<(), (BackendKind, String)> {
        for backend in self.backends() {
            let kind = backend.kind();
            let mine: Vec<Arc<Rule>> = rules
                .clone()
                .filter(|r| r.backend == kind && *r.service == **service.name)
                .cloned()
                .collect();
            backend.install(service, &mine).map_err(|e| (kind, e))?;
        }
        Ok(())
    }
}

/// One refusal for a rule no backend took: the only one, or all of them in one paragraph.
fn combine(service: &str, mut refusals: Vec<Refusal>) -> Refusal {
    if refusals.is_empty() {
        return Refusal::Unavailable(format!(
            "no backend available on this host can enforce this rule on {service}"
        ));
    }
    if refusals.len() == 1 {
        return refusals.remove(0);
    }
    let all_unsupported = refusals
        .iter()
        .all(|r| matches!(r, Refusal::Unsupported(_)));
    let text = format!(
        "no backend can enforce this rule on {service}: {}",
        refusals
            .iter()
            .map(Refusal::reason)
            .collect::<Vec<_>>()
            .join("; ")
    );
    if all_unsupported {
        Refusal::Unsupported(text)
    } else {
        Refusal::Unavailable(text)
    }
}
