//! A session: the services of one test, their fault sets, steps, lease and teardown.
//!
//! Each service starts once every service it `depends_on` is ready ([`order`], [`start`]),
//! independent services at once, each waiting for its healthcheck (raced against its exit)
//! ([`lifecycle`]). Fault sets are compiled, routed to backends and
//! installed on every service ([`faults`]). Stopping stops every service at once: SIGTERM to every
//! process of the service, SIGKILL to whatever is left after the grace period. A session ends when a client
//! deletes it, when its lease runs out (no open follow stream and no RPC for the lease time), or when
//! faultd shuts down.
//!
//! - [`config`]: what a client asks for (services, interfaces, ops, partitions).
//! - [`order`]: the order services start in.
//! - [`start`]: starting them, independent services at once.
//! - [`lifecycle`]: starting, attaching, reading the output of and stopping one service.
//! - [`faults`]: applying and clearing fault sets.
//! - [`network`]: the session's network namespace, or the host's network with its port checks.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cgroup::CgroupTree;
use crate::enforce::ebpf::trace::Tracer;
use crate::engine::EngineError;
use crate::netns::Net;
use crate::proxy::ProxyRule;
use crate::rules::Rule;
use crate::step::{self, StepOutcome, StepRequest};
use crate::trace::{EventBus, EventKind, ExitStatus};

mod config;
mod control;
mod faults;
mod lifecycle;
mod network;
mod order;
mod output;
mod power;
mod proxies;
mod start;

pub use config::Protocol;
pub(crate) use config::{InterfaceConfig, OpConfig, PartitionSpec, ServiceConfig, SessionConfig};

pub(crate) use faults::AppliedRules;
use faults::Faults;
use lifecycle::Service;

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
    /// Every protocol rule the session had.
    pub proxy_rules: Vec<Arc<ProxyRule>>,
    /// Every service.
    pub services: Vec<ServiceSummary>,
    /// Events emitted.
    pub events_total: u64,
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
    /// The active fault sets. Held while backends install rules (blocking work), so only ever locked
    /// on blocking threads.
    faults: Mutex<Faults>,
    /// Every rule the session had, for its summary; locked only briefly.
    history: Mutex<Vec<Arc<Rule>>>,
    /// Every protocol rule the session had.
    proxy_history: Mutex<Vec<Arc<ProxyRule>>>,
    /// Protocol proxies in front of interfaces; closed when the session is dropped or stopped.
    proxies: Vec<proxies::SessionProxy>,
    lease: Duration,
    last_touch: Mutex<Instant>,
    holders: AtomicUsize,
    stopped: AtomicBool,
    trace_all: bool,
    /// Its network: a namespace of its own, or the host's. Steps run in it.
    net: Net,
    /// The span its work and logs run in (id, name, owner).
    pub span: tracing::Span,
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
        span: tracing::Span,
    ) -> Result<Arc<Session>, EngineError> {
        let order = order::start_order(&config.services)?;
        let intercepts = config
            .services
            .iter()
            .map(config::intercept_set)
            .collect::<Result<Vec<_>, _>>()?;
        let bus = Arc::new(EventBus::new(crate::trace::DEFAULT_CAPACITY));
        let net = network::for_session(&config).await;
        // Listening before any service starts: consumers may connect while starting.
        let proxies = proxies::start(&config.services, &bus, &net).await?;
        let mut session = Session {
            id: id.clone(),
            name: config.name.clone(),
            bus: bus.clone(),
            services: Vec::with_capacity(order.len()),
            faults: Mutex::default(),
            history: Mutex::default(),
            proxy_history: Mutex::default(),
            proxies,
            lease: config.lease,
            last_touch: Mutex::new(Instant::now()),
            holders: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            trace_all: config.trace_all,
            net: net.clone(),
            span,
        };
        let plan = start::Plan {
            session_id: &id,
            services: &config.services,
            order: &order,
            intercepts: &intercepts,
            cgroups,
            bus: &bus,
            trace_all: config.trace_all,
            net: &net,
        };
        let (services, error) = start::start_all(&plan).await;
        session.services = services;
        if let Some(e) = error {
            Arc::new(session).stop().await;
            return Err(e);
        }
        Ok(Arc::new(session))
    }

    /// The started services, in start order.
    pub fn services(&self) -> Vec<ServiceInfo> {
        self.services.iter().map(Service::info).collect()
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
        // Through the proxy when there is one, so step traffic can be faulted too.
        let outcome = self
            .net
            .scope(step::run(&iface.public_addr(), &request, timeout))
            .await;
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

    /// Stops every service (all at once), removes every fault and closes the trace. Idempotent.
    pub async fn stop(self: &Arc<Self>) -> SessionSummary {
        let first = !self.stopped.swap(true, Ordering::SeqCst);
        if first {
            // Detaching programs and removing the crash entries is kernel work: off the async workers,
            // like everything done under the fault-set lock.
            let session = self.clone();
            let _ = crate::engine::blocking(move || {
                let faults = session.faults.lock().unwrap_or_else(|e| e.into_inner());
                for service in &session.services {
                    service.rules.store(Arc::default());
                    // Detaches its programs after adding their last hits to the rules.
                    service.backends.clear();
                }
                drop(faults);
                // Removes the crash entries (adding their hits to the rules, delivering their events)
                // and detaches the tracer if nothing else uses it.
                Tracer::global().clear_crash(&session.id);
            })
            .await;
            futures_util::future::join_all(self.services.iter().map(lifecycle::stop_service)).await;
            if self.trace_all {
                // The ring wakes its reader only every 64 KiB: deliver what is pending before the
                // bus closes, then stop tracing (detaching when no other session traces).
                let id = self.id.clone();
                let _ = crate::engine::blocking(move || Tracer::global().unregister(&id)).await;
            }
            for proxy in &self.proxies {
                proxy.close();
            }
            self.bus.close();
        }
        let history = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        SessionSummary {
            rules: history,
            proxy_rules: self
                .proxy_history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            services: self.services.iter().map(Service::summary).collect(),
            events_total: self.bus.total(),
        }
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
