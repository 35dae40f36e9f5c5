//! A session: the services of one test, their fault sets, steps, lease and teardown.
//!
//! Services start in `depends_on` order, each waiting for its healthcheck (raced against its exit) before
//! the next starts. Stopping goes in reverse order: SIGTERM to every process of the service, SIGKILL to
//! whatever is left after the grace period. A session ends when a client deletes it, when its lease runs
//! out (no open follow stream and no RPC for the lease time), or when faultd shuts down.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use crate::cgroup::{Cgroup, CgroupTree};
use crate::enforce::ebpf::trace::Tracer;
use crate::enforce::seccomp::Supervisor;
use crate::enforce::{BackendKind, BackendState, Interceptor, Refusal, Registry, ServiceTarget};
use crate::engine::EngineError;
use crate::health::{self, HealthCheck};
use crate::launch::{self, LaunchSpec};
use crate::reaper::Reaper;
use crate::rules::{Action, Rule, RuleSlot, RuleSpec, SeededRng};
use crate::step::{self, StepOutcome, StepRequest};
use crate::syscalls::{self, Syscall};
use crate::trace::{EventBus, EventKind, ExitStatus, RuleInfo, Stream};

/// Lines of stdout and stderr kept per service for the summary and start errors.
const TAIL_LINES: usize = 50;
/// How long an exit waits for the service's output pipes to drain (a grandchild may keep them open).
const OUTPUT_DRAIN: Duration = Duration::from_millis(300);

/// An interface a service listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Its name (`main`, `public`).
    pub name: String,
    /// `tcp` or `http`.
    pub protocol: Protocol,
    /// Host, `127.0.0.1` when empty.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl InterfaceConfig {
    /// `host:port`.
    pub fn addr(&self) -> String {
        let host = if self.host.is_empty() {
            "127.0.0.1"
        } else {
            &self.host
        };
        format!("{host}:{}", self.port)
    }
}

/// How steps talk to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A line protocol over TCP.
    Tcp,
    /// HTTP/1.1.
    Http,
}

/// A named group of syscalls with an optional path glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpConfig {
    /// Op name.
    pub name: String,
    /// Syscall or family names.
    pub syscalls: Vec<String>,
    /// Path glob.
    pub path_glob: Option<String>,
}

/// One service to run.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Unique within the session.
    pub name: String,
    /// What to run and how.
    pub launch: LaunchSpec,
    /// Its interfaces.
    pub interfaces: Vec<InterfaceConfig>,
    /// Readiness check, timeout and interval.
    pub healthcheck: Option<(HealthCheck, Duration, Duration)>,
    /// Services that must be ready first.
    pub depends_on: Vec<String>,
    /// Its named ops.
    pub ops: Vec<OpConfig>,
    /// Syscall or family names its filter intercepts.
    pub intercept: Vec<String>,
    /// SIGTERM-to-SIGKILL grace period.
    pub stop_grace: Duration,
    /// An existing cgroup v2 directory whose processes are the service: faultd launches nothing,
    /// never signals them and never removes the directory.
    pub attach_cgroup: Option<std::path::PathBuf>,
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A label.
    pub name: String,
    /// Its services.
    pub services: Vec<ServiceConfig>,
    /// Lease time.
    pub lease: Duration,
    /// Trace every syscall of the services through the `ebpf-trace` backend, not only the
    /// intercepted ones.
    pub trace_all: bool,
}

/// A started service, as reported to the client.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// Name.
    pub name: String,
    /// Main pid.
    pub pid: u32,
    /// cgroup directory, if any.
    pub cgroup: Option<String>,
    /// From spawn to ready.
    pub ready_after: Duration,
    /// Intercepted syscalls.
    pub intercepted: Vec<&'static str>,
}

/// How a service ended and what it last printed.
#[derive(Debug, Clone)]
pub struct ServiceSummary {
    /// Name.
    pub name: String,
    /// Exit status of the main process, if it ended.
    pub exit: Option<ExitStatus>,
    /// Whether faultd stopped it.
    pub stopped_by_faultd: bool,
    /// Last stdout lines.
    pub stdout_tail: Vec<String>,
    /// Last stderr lines.
    pub stderr_tail: Vec<String>,
}

/// What a deleted session leaves: its rules with hits, services, and event count.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// Every rule the session had.
    pub rules: Vec<Arc<Rule>>,
    /// Every service.
    pub services: Vec<ServiceSummary>,
    /// Events emitted.
    pub events_total: u64,
}

type Tail = Arc<Mutex<VecDeque<String>>>;

struct Service {
    name: Arc<str>,
    config: ServiceConfig,
    pid: i32,
    cgroup: Option<Cgroup>,
    /// Attached by cgroup (not launched): faultd never signals its processes nor removes the cgroup.
    attached: bool,
    rules: Arc<RuleSlot>,
    intercepted: Vec<&'static Syscall>,
    supervisor: Mutex<Option<Supervisor>>,
    /// What each backend keeps for this service (attached programs); dropped with the service.
    backends: BackendState,
    exit: watch::Receiver<Option<ExitStatus>>,
    stopping: Arc<AtomicBool>,
    stdout_tail: Tail,
    stderr_tail: Tail,
    ready_after: Duration,
}

impl Service {
    /// The service as its backends see it.
    fn target<'a>(&'a self, session: &'a str, bus: &'a Arc<EventBus>) -> ServiceTarget<'a> {
        ServiceTarget {
            session,
            name: &self.name,
            cgroup: self.cgroup.as_ref().map(|c| c.path()),
            attached: self.attached,
            intercepted: &self.intercepted,
            rules: &self.rules,
            bus,
            state: &self.backends,
        }
    }
}

struct FaultSet {
    id: Arc<str>,
    rules: Vec<Arc<Rule>>,
}

#[derive(Default)]
struct Faults {
    active: Vec<FaultSet>,
    history: Vec<Arc<Rule>>,
    next_rule: u32,
    next_set: u32,
}

/// A running session.
pub struct Session {
    /// Its id.
    pub id: String,
    /// Its label.
    pub name: String,
    /// Its trace.
    pub bus: Arc<EventBus>,
    services: Vec<Service>,
    faults: Mutex<Faults>,
    lease: Duration,
    last_touch: Mutex<Instant>,
    holders: AtomicUsize,
    stopped: AtomicBool,
    trace_all: bool,
}

/// Holds a session's lease while alive (an open follow stream).
pub struct LeaseGuard(Arc<Session>);

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.0.holders.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl Session {
    /// Validates `config`, starts its services in dependency order and waits for each to be ready.
    /// On any failure everything already started is stopped before the error returns.
    pub async fn start(
        id: String,
        config: SessionConfig,
        cgroups: Option<&CgroupTree>,
    ) -> Result<Arc<Session>, EngineError> {
        let order = start_order(&config.services)?;
        let intercepts = config
            .services
            .iter()
            .map(intercept_set)
            .collect::<Result<Vec<_>, _>>()?;
        let bus = Arc::new(EventBus::new(crate::trace::DEFAULT_CAPACITY));
        let mut session = Session {
            id: id.clone(),
            name: config.name.clone(),
            bus: bus.clone(),
            services: Vec::with_capacity(order.len()),
            faults: Mutex::default(),
            lease: config.lease,
            last_touch: Mutex::new(Instant::now()),
            holders: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            trace_all: config.trace_all,
        };
        for index in order {
            let svc = config.services[index].clone();
            let intercepted = intercepts[index].clone();
            match start_service(&id, svc, intercepted, cgroups, &bus, config.trace_all).await {
                Ok(service) => session.services.push(service),
                Err(e) => {
                    session.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(session))
    }

    /// The started services, in start order.
    pub fn services(&self) -> Vec<ServiceInfo> {
        self.services
            .iter()
            .map(|s| ServiceInfo {
                name: s.name.to_string(),
                pid: s.pid as u32,
                cgroup: s.cgroup.as_ref().map(|c| c.path().display().to_string()),
                ready_after: s.ready_after,
                intercepted: s.intercepted.iter().map(|s| s.name).collect(),
            })
            .collect()
    }

    /// Records activity for the lease.
    pub fn touch(&self) {
        *self.last_touch.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Holds the lease until the guard drops.
    pub fn hold(self: &Arc<Self>) -> LeaseGuard {
        self.holders.fetch_add(1, Ordering::Relaxed);
        LeaseGuard(self.clone())
    }

    /// Whether nobody holds the lease and no RPC named the session for the lease time.
    pub fn lease_expired(&self) -> bool {
        self.holders.load(Ordering::Relaxed) == 0
            && self
                .last_touch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                > self.lease
    }

    /// Compiles and installs a fault set; returns its id and rules.
    ///
    /// A rule naming an op takes the op's syscalls and path glob where it gives none itself. Every
    /// syscall of a rule must be intercepted by its service's filter, which is fixed at launch.
    pub fn apply_faults(
        &self,
        specs: Vec<RuleSpec>,
        seed: u64,
    ) -> Result<(Arc<str>, Vec<Arc<Rule>>), EngineError> {
        self.apply_fault_set(specs.into_iter().map(|s| (s, None)).collect(), &[], seed)
    }

    /// [`apply_faults`](Self::apply_faults) with a forced backend per rule (`None`: faultd chooses)
    /// and partitions, which become connect rules on the ebpf-cgroup backend.
    pub fn apply_fault_set(
        &self,
        mut specs: Vec<(RuleSpec, Option<BackendKind>)>,
        partitions: &[PartitionSpec],
        seed: u64,
    ) -> Result<(Arc<str>, Vec<Arc<Rule>>), EngineError> {
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
            rule.backend = Registry::host()
                .choose(&rule, &target, forced)
                .map_err(|refusal| match refusal {
                    Refusal::Unsupported(why) => {
                        EngineError::InvalidArgument(format!("rule on {}: {why}", service.name))
                    }
                    Refusal::Unavailable(why) => EngineError::FailedPrecondition(why),
                })?;
            rules.push(Arc::new(rule));
        }
        faults.active.push(FaultSet {
            id: set_id.clone(),
            rules: rules.clone(),
        });
        if let Err(e) = self.publish(&faults) {
            faults.active.pop();
            if let Err(again) = self.publish(&faults) {
                tracing::warn!(session = %self.id, "restoring the previous rules: {again}");
            }
            return Err(EngineError::FailedPrecondition(e));
        }
        faults.history.extend(rules.iter().cloned());
        drop(faults);
        self.bus.emit_session(EventKind::FaultsApplied {
            fault_set: set_id.clone(),
            rules: rules.iter().map(|r| rule_info(r)).collect(),
            seed,
        });
        Ok((set_id, rules))
    }

    /// Removes a fault set; returns its rules with their counters.
    pub fn clear_faults(&self, set_id: &str) -> Result<Vec<Arc<Rule>>, EngineError> {
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
        Ok(set.rules)
    }

    /// Installs on every backend of every service the active rules routed to it, in precedence order.
    fn publish(&self, faults: &Faults) -> Result<(), String> {
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

    /// Runs one step against an interface of a service and records it in the trace.
    pub async fn step(
        &self,
        service: &str,
        interface: &str,
        request: StepRequest,
        timeout: Duration,
    ) -> Result<StepOutcome, EngineError> {
        let svc = self.service(service)?;
        let iface = match interface {
            "" if svc.config.interfaces.len() == 1 => &svc.config.interfaces[0],
            "" => {
                return Err(EngineError::InvalidArgument(format!(
                    "service {service} has {} interfaces; name one",
                    svc.config.interfaces.len()
                )));
            }
            name => svc
                .config
                .interfaces
                .iter()
                .find(|i| i.name == name)
                .ok_or_else(|| {
                    EngineError::InvalidArgument(format!(
                        "service {service} has no interface named {name:?}"
                    ))
                })?,
        };
        self.bus.emit(
            &svc.name,
            EventKind::StepSent {
                interface: iface.name.clone(),
                summary: step::summary(&request),
            },
        );
        let outcome = step::run(&iface.addr(), &request, timeout).await;
        self.bus.emit(
            &svc.name,
            EventKind::StepAnswered {
                ok: outcome.ok,
                status: outcome.status,
                error: outcome.error.clone(),
                duration: outcome.duration,
            },
        );
        Ok(outcome)
    }

    /// Stops every service (dependents first), removes every fault and closes the trace. Idempotent.
    pub async fn stop(&self) -> SessionSummary {
        let first = !self.stopped.swap(true, Ordering::SeqCst);
        if first {
            let faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            for service in &self.services {
                service.rules.store(Arc::default());
                // Detaches its programs after adding their last hits to the rules.
                service.backends.clear();
            }
            drop(faults);
            // Removes the crash entries (adding their hits to the rules, delivering their events)
            // and detaches the tracer if nothing else uses it.
            let id = self.id.clone();
            let _ = tokio::task::spawn_blocking(move || Tracer::global().clear_crash(&id)).await;
            for service in self.services.iter().rev() {
                stop_service(service).await;
            }
            if self.trace_all {
                // The ring wakes its reader only every 64 KiB: deliver what is pending before the
                // bus closes, then stop tracing (detaching when no other session traces).
                let id = self.id.clone();
                let _ = tokio::task::spawn_blocking(move || Tracer::global().unregister(&id)).await;
            }
            self.bus.close();
        }
        let history = self
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .history
            .clone();
        SessionSummary {
            rules: history,
            services: self.services.iter().map(service_summary).collect(),
            events_total: self.bus.total(),
        }
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

    fn service(&self, name: &str) -> Result<&Service, EngineError> {
        self.services
            .iter()
            .find(|s| &*s.name == name)
            .ok_or_else(|| {
                EngineError::InvalidArgument(format!(
                    "the session has no service named {name:?} (services: {})",
                    self.services
                        .iter()
                        .map(|s| &*s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

// ------------------------------------------------------------------------------ ebpf-cgroup wiring

/// A network partition between two services, for the length of a fault set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// The service whose connects fail.
    pub from: String,
    /// The service whose interface ports it can no longer reach.
    pub to: String,
    /// Also cut `to` -> `from`.
    pub both_directions: bool,
    /// Shown in the trace.
    pub label: Option<String>,
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

fn service_summary(s: &Service) -> ServiceSummary {
    let tail = |t: &Tail| {
        t.lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    };
    ServiceSummary {
        name: s.name.to_string(),
        exit: *s.exit.borrow(),
        stopped_by_faultd: s.stopping.load(Ordering::Relaxed),
        stdout_tail: tail(&s.stdout_tail),
        stderr_tail: tail(&s.stderr_tail),
    }
}

/// The expanded syscalls a service's filter must intercept: its intercept list and its ops' syscalls.
/// An attached service has none: no seccomp filter without a launch (its ops' names are still checked).
fn intercept_set(svc: &ServiceConfig) -> Result<Vec<&'static Syscall>, EngineError> {
    if svc.attach_cgroup.is_some() && !svc.intercept.is_empty() {
        return Err(EngineError::InvalidArgument(format!(
            "service {} is attached by cgroup, so it takes no intercept_syscalls: faultd does not \
             launch it and cannot install a seccomp filter in it",
            svc.name
        )));
    }
    let mut out: Vec<&'static Syscall> = Vec::new();
    let names = svc
        .intercept
        .iter()
        .chain(svc.ops.iter().flat_map(|o| o.syscalls.iter()));
    for name in names {
        let expanded = syscalls::expand(name).ok_or_else(|| {
            EngineError::InvalidArgument(format!(
                "service {}: unknown syscall or family {name:?}",
                svc.name
            ))
        })?;
        for sc in expanded {
            if !out.iter().any(|s| s.nr == sc.nr) {
                out.push(sc);
            }
        }
    }
    if svc.attach_cgroup.is_some() {
        out.clear();
    }
    Ok(out)
}

/// Indexes of `services` in an order where every service comes after its dependencies.
fn start_order(services: &[ServiceConfig]) -> Result<Vec<usize>, EngineError> {
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    if index.len() != services.len() {
        return Err(EngineError::InvalidArgument(
            "two services have the same name".into(),
        ));
    }
    // 0 = unvisited, 1 = on the current path, 2 = placed.
    let mut state = vec![0u8; services.len()];
    let mut order = Vec::with_capacity(services.len());
    fn visit(
        i: usize,
        services: &[ServiceConfig],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        order: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<(), EngineError> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                let start = path.iter().position(|p| *p == i).unwrap_or(0);
                let cycle: Vec<&str> = path[start..]
                    .iter()
                    .chain(std::iter::once(&i))
                    .map(|p| services[*p].name.as_str())
                    .collect();
                return Err(EngineError::InvalidArgument(format!(
                    "depends_on cycle: {}",
                    cycle.join(" -> ")
                )));
            }
            _ => {}
        }
        state[i] = 1;
        path.push(i);
        for dep in &services[i].depends_on {
            let &d = index.get(dep.as_str()).ok_or_else(|| {
                EngineError::InvalidArgument(format!(
                    "service {} depends on unknown service {dep:?}",
                    services[i].name
                ))
            })?;
            visit(d, services, index, state, order, path)?;
        }
        path.pop();
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..services.len() {
        visit(i, services, &index, &mut state, &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

async fn start_service(
    session_id: &str,
    config: ServiceConfig,
    intercepted: Vec<&'static Syscall>,
    cgroups: Option<&CgroupTree>,
    bus: &Arc<EventBus>,
    trace_all: bool,
) -> Result<Service, EngineError> {
    let name: Arc<str> = config.name.as_str().into();
    if let Some(dir) = &config.attach_cgroup {
        let root = crate::probe::cgroup_v2_root();
        let cgroup = Cgroup::existing(dir, root.as_deref())
            .map_err(|e| EngineError::FailedPrecondition(format!("service {name}: {e}")))?;
        return attach_service(session_id, config, cgroup, bus, trace_all).await;
    }
    let cgroup =
        match cgroups {
            Some(tree) => Some(tree.service(session_id, &config.name).map_err(|e| {
                EngineError::Start(format!("cannot create the cgroup of {name}: {e}"))
            })?),
            None => None,
        };
    let procs = cgroup
        .as_ref()
        .map(Cgroup::procs_file)
        .transpose()
        .map_err(|e| EngineError::Start(format!("cannot open the cgroup of {name}: {e}")))?;
    if trace_all {
        // Registered before launch, so the trace starts with the service's first syscall.
        let traced = match &cgroup {
            Some(cg) => match std::fs::metadata(cg.path()) {
                Ok(meta) => {
                    // Loading and attaching the programs takes a while: off the async workers.
                    let (session, service, bus) =
                        (session_id.to_owned(), name.clone(), bus.clone());
                    tokio::task::spawn_blocking(move || {
                        Tracer::global().register(&session, meta.ino(), service, bus)
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                }
                Err(e) => Err(e.to_string()),
            },
            None => Err("services run without cgroups here".to_owned()),
        };
        if let Err(e) = traced {
            if let Some(cg) = &cgroup {
                let _ = cg.remove();
            }
            return Err(EngineError::FailedPrecondition(format!(
                "cannot trace every syscall of {name} (ebpf-trace): {e}"
            )));
        }
    }
    let rules = Arc::new(RuleSlot::default());
    let interceptor = Interceptor {
        service: name.clone(),
        rules: rules.clone(),
        bus: bus.clone(),
    };
    let spawned_at = Instant::now();
    let launched = launch::launch(
        config.launch.clone(),
        procs,
        intercepted.clone(),
        interceptor,
    )
    .await
    .map_err(|e| {
        if let Some(cg) = &cgroup {
            let _ = cg.remove();
        }
        EngineError::Start(format!("service {name}: {e}"))
    })?;
    let pid = launched.pid;
    bus.emit(
        &name,
        EventKind::Started {
            pid: pid as u32,
            cgroup: cgroup.as_ref().map(|c| c.path().display().to_string()),
        },
    );

    let stdout_tail: Tail = Arc::default();
    let stderr_tail: Tail = Arc::default();
    let stdout_done =
        spawn_output_reader(launched.stdout, Stream::Stdout, &name, bus, &stdout_tail);
    let stderr_done =
        spawn_output_reader(launched.stderr, Stream::Stderr, &name, bus, &stderr_tail);

    let stopping = Arc::new(AtomicBool::new(false));
    let (exit_tx, exit_rx) = watch::channel(None);
    {
        let exited = Reaper::global().watch(pid);
        let bus = bus.clone();
        let name = name.clone();
        let stopping = stopping.clone();
        let drained = [stdout_done, stderr_done];
        tokio::spawn(async move {
            if let Ok(status) = exited.await {
                // The trace shows a service's last output before its exit. A grandchild may hold the
                // pipes open, so wait only briefly for them to drain.
                for mut done in drained {
                    let _ = tokio::time::timeout(OUTPUT_DRAIN, done.wait_for(|d| *d)).await;
                }
                let _ = exit_tx.send(Some(status));
                bus.emit(
                    &name,
                    EventKind::Exited {
                        status,
                        stopped_by_faultd: stopping.load(Ordering::Relaxed),
                    },
                );
            }
        });
    }

    let mut service = Service {
        name: name.clone(),
        pid,
        cgroup,
        attached: false,
        rules,
        intercepted,
        supervisor: Mutex::new(launched.supervisor),
        backends: BackendState::default(),
        exit: exit_rx,
        stopping,
        stdout_tail,
        stderr_tail,
        ready_after: Duration::ZERO,
        config,
    };

    if let Some((check, timeout, interval)) = service.config.healthcheck.clone() {
        let mut exit = service.exit.clone();
        let outcome = tokio::select! {
            ready = health::wait_ready(&check, timeout, interval) => ready.map_err(|e| {
                format!("service {name} did not become ready: {e}")
            }),
            status = async { exit.wait_for(Option::is_some).await.ok().and_then(|s| *s) } => {
                Err(format!(
                    "service {name} exited before it was ready ({}){}",
                    status.map_or("status unknown".to_string(), |s| s.to_string()),
                    stderr_excerpt(&service.stderr_tail)
                ))
            }
        };
        match outcome {
            Ok(_) => service.ready_after = spawned_at.elapsed(),
            Err(message) => {
                stop_service(&service).await;
                return Err(EngineError::Start(message));
            }
        }
    }
    bus.emit(
        &name,
        EventKind::Ready {
            after: service.ready_after,
        },
    );
    Ok(service)
}

/// A service faultd does not launch: the processes of an existing cgroup v2 directory. It has no pid,
/// exit or output; its healthcheck still decides when it is ready.
async fn attach_service(
    session_id: &str,
    config: ServiceConfig,
    cgroup: Cgroup,
    bus: &Arc<EventBus>,
    trace_all: bool,
) -> Result<Service, EngineError> {
    let name: Arc<str> = config.name.as_str().into();
    let attached_at = Instant::now();
    if trace_all {
        let meta = std::fs::metadata(cgroup.path()).map_err(|e| {
            EngineError::FailedPrecondition(format!(
                "cannot trace every syscall of {name} (ebpf-trace): {e}"
            ))
        })?;
        let (session, service, bus) = (session_id.to_owned(), name.clone(), bus.clone());
        tokio::task::spawn_blocking(move || {
            Tracer::global().register(&session, meta.ino(), service, bus)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| {
            EngineError::FailedPrecondition(format!(
                "cannot trace every syscall of {name} (ebpf-trace): {e}"
            ))
        })?;
    }
    bus.emit(
        &name,
        EventKind::Started {
            pid: 0,
            cgroup: Some(cgroup.path().display().to_string()),
        },
    );
    // Never sent: faultd does not see an attached service exit.
    let (_exit_tx, exit_rx) = watch::channel(None);
    let mut service = Service {
        name: name.clone(),
        pid: 0,
        cgroup: Some(cgroup),
        attached: true,
        rules: Arc::new(RuleSlot::default()),
        intercepted: Vec::new(),
        supervisor: Mutex::new(None),
        backends: BackendState::default(),
        exit: exit_rx,
        stopping: Arc::new(AtomicBool::new(false)),
        stdout_tail: Arc::default(),
        stderr_tail: Arc::default(),
        ready_after: Duration::ZERO,
        config,
    };
    if let Some((check, timeout, interval)) = service.config.healthcheck.clone() {
        health::wait_ready(&check, timeout, interval)
            .await
            .map_err(|e| EngineError::Start(format!("service {name} did not become ready: {e}")))?;
        service.ready_after = attached_at.elapsed();
    }
    bus.emit(
        &name,
        EventKind::Ready {
            after: service.ready_after,
        },
    );
    Ok(service)
}

fn stderr_excerpt(tail: &Tail) -> String {
    let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    if tail.is_empty() {
        return String::new();
    }
    let last: Vec<&str> = tail
        .iter()
        .rev()
        .take(10)
        .rev()
        .map(String::as_str)
        .collect();
    format!("; last lines of its stderr:\n  {}", last.join("\n  "))
}

fn spawn_output_reader(
    fd: OwnedFd,
    stream: Stream,
    service: &Arc<str>,
    bus: &Arc<EventBus>,
    tail: &Tail,
) -> watch::Receiver<bool> {
    let (done, drained) = watch::channel(false);
    let service = service.clone();
    let bus = bus.clone();
    let tail = tail.clone();
    // SAFETY: fcntl on an fd we own, with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    tokio::spawn(async move {
        if let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            let mut reader = tokio::io::BufReader::new(pipe);
            let mut buf = Vec::with_capacity(256);
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(buf.strip_suffix(b"\n").unwrap_or(&buf))
                            .into_owned();
                        {
                            let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                            if tail.len() == TAIL_LINES {
                                tail.pop_front();
                            }
                            tail.push_back(line.clone());
                        }
                        bus.emit(&service, EventKind::Output { stream, line });
                    }
                }
            }
        }
        let _ = done.send(true);
    });
    drained
}

/// SIGTERM to every process of the service, SIGKILL after the grace period, then removes its cgroup
/// and stops answering its notifications. An attached service is left alone.
async fn stop_service(service: &Service) {
    if service.attached {
        // Not ours to stop: its programs were detached with its rules.
        return;
    }
    service.stopping.store(true, Ordering::Relaxed);
    let grace = service.config.stop_grace;
    match &service.cgroup {
        Some(cgroup) => {
            cgroup.signal(libc::SIGTERM);
            if !cgroup.wait_empty(grace).await {
                tracing::debug!(service = %service.name, "still running after SIGTERM; SIGKILL");
                cgroup.signal(libc::SIGKILL);
                if !cgroup.wait_empty(Duration::from_secs(5)).await {
                    tracing::warn!(service = %service.name, "processes survive SIGKILL");
                }
            }
            if let Err(e) = cgroup.remove() {
                tracing::warn!(service = %service.name, "cannot remove its cgroup: {e}");
            }
        }
        None => {
            // Process-group fallback: reaches every process that did not leave the group.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(-service.pid, libc::SIGTERM) };
            let mut exit = service.exit.clone();
            if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                // SAFETY: as above.
                unsafe { libc::kill(-service.pid, libc::SIGKILL) };
            }
            // SAFETY: as above; the group may still hold children of an exited leader.
            unsafe { libc::kill(-service.pid, libc::SIGKILL) };
        }
    }
    let mut exit = service.exit.clone();
    let _ = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(Option::is_some)).await;
    if let Some(supervisor) = service
        .supervisor
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        supervisor.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, deps: &[&str]) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            launch: LaunchSpec {
                argv: vec!["true".into()],
                env: vec![],
                clear_env: false,
                cwd: None,
            },
            interfaces: vec![],
            healthcheck: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ops: vec![],
            intercept: vec![],
            stop_grace: Duration::from_secs(1),
            attach_cgroup: None,
        }
    }

    #[test]
    fn services_start_after_their_dependencies() {
        let services = [
            svc("orders", &["inventory"]),
            svc("inventory", &[]),
            svc("web", &["orders"]),
        ];
        let order: Vec<_> = start_order(&services)
            .unwrap()
            .into_iter()
            .map(|i| services[i].name.as_str())
            .collect();
        assert_eq!(order, ["inventory", "orders", "web"]);
    }

    #[test]
    fn cycles_and_unknown_dependencies_are_refused() {
        let err = start_order(&[svc("a", &["b"]), svc("b", &["a"])]).unwrap_err();
        assert_eq!(err.to_string(), "depends_on cycle: a -> b -> a");
        let err = start_order(&[svc("a", &["ghost"])]).unwrap_err();
        assert!(
            err.to_string().contains("unknown service \"ghost\""),
            "{err}"
        );
        assert!(start_order(&[svc("a", &[]), svc("a", &[])]).is_err());
    }

    #[test]
    fn intercept_sets_expand_families_and_ops() {
        let mut s = svc("inventory", &[]);
        s.intercept = vec!["fsync".into()];
        s.ops = vec![OpConfig {
            name: "persist".into(),
            syscalls: vec!["write".into(), "fsync".into()],
            path_glob: None,
        }];
        let names: Vec<_> = intercept_set(&s).unwrap().iter().map(|s| s.name).collect();
        assert_eq!(names, ["fsync", "fdatasync", "write", "writev", "pwrite64"]);
        s.intercept = vec!["fsynk".into()];
        assert!(intercept_set(&s).is_err());
    }
}
