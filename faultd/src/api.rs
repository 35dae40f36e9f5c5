//! The `faultd.v1` gRPC service: translates protobuf to engine types and back, nothing else.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use faultd_proto::v1 as pb;

use crate::enforce::BackendKind;
use faultd_proto::v1::faultd_server::Faultd;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, EngineError};
use crate::health::HealthCheck;
use crate::launch::LaunchSpec;
use crate::probe::CgroupMode;
use crate::rules::{Action, Rule, RuleSpec};
use crate::session::{
    InterfaceConfig, OpConfig, PartitionSpec, Protocol, ServiceConfig, SessionConfig,
};
use crate::step::StepRequest;
use crate::syscalls;
use crate::trace::{self, Decision, EventKind};

/// Events sent to one watcher per batch; the gRPC stream's own buffer is small on purpose.
const WATCH_BATCH: usize = 256;
/// Most events per [`pb::EventBatch`] (and per read of the bus).
const WATCH_BATCH_MAX: usize = 1024;
/// Lease of a session whose client gave none.
const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The gRPC face of an [`Engine`].
#[derive(Clone)]
pub struct FaultdApi {
    engine: Arc<Engine>,
}

impl FaultdApi {
    /// Serves `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        FaultdApi { engine }
    }
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Status {
        let message = e.to_string();
        match e {
            EngineError::NotFound(_) => Status::not_found(message),
            EngineError::InvalidArgument(_) => Status::invalid_argument(message),
            EngineError::FailedPrecondition(_) | EngineError::Start(_) => {
                Status::failed_precondition(message)
            }
            EngineError::Io(_) => Status::internal(message),
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;
type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::EventBatch, Status>> + Send>>;

#[tonic::async_trait]
impl Faultd for FaultdApi {
    async fn probe(
        &self,
        _: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let caps = self.engine.capabilities();
        Ok(Response::new(pb::ProbeResponse {
            kernel_release: caps.kernel_release.clone(),
            arch: caps.arch.clone(),
            cgroup_mode: match caps.cgroup {
                CgroupMode::Unified => pb::CgroupMode::Unified,
                CgroupMode::Hybrid => pb::CgroupMode::Hybrid,
                CgroupMode::None => pb::CgroupMode::None,
            } as i32,
            cgroup_root: caps
                .cgroup_root
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            backends: caps
                .backends
                .iter()
                .map(|b| pb::BackendCapability {
                    name: b.name.to_string(),
                    available: b.available,
                    reason: b.reason.clone(),
                    actions: b.available_actions().map(str::to_string).collect(),
                    action_details: b
                        .actions
                        .iter()
                        .map(|a| pb::ActionCapability {
                            action: a.action.to_string(),
                            available: a.available,
                            reason: a.reason.clone(),
                        })
                        .collect(),
                })
                .collect(),
            faultd_version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let req = request.into_inner();
        let config = SessionConfig {
            name: req.name,
            services: req
                .services
                .into_iter()
                .map(service_config)
                .collect::<Result<_, _>>()?,
            lease: match req.lease_ms {
                0 => DEFAULT_LEASE,
                ms => Duration::from_millis(ms.into()),
            },
            trace_all: req.trace == pb::TraceMode::All as i32,
        };
        let session = self.engine.create_session(config).await?;
        Ok(Response::new(pb::CreateSessionResponse {
            session_id: session.id.clone(),
            services: session
                .services()
                .into_iter()
                .map(|s| pb::ServiceStatus {
                    name: s.name,
                    pid: s.pid,
                    cgroup: s.cgroup.unwrap_or_default(),
                    ready_ms: s.ready_after.as_millis() as u64,
                    intercepted: s.intercepted.iter().map(|n| n.to_string()).collect(),
                })
                .collect(),
        }))
    }

    async fn apply_faults(
        &self,
        request: Request<pb::ApplyFaultsRequest>,
    ) -> Result<Response<pb::ApplyFaultsResponse>, Status> {
        let req = request.into_inner();
        let session = self.engine.session(&req.session_id)?;
        let specs = req
            .rules
            .into_iter()
            .map(|r| {
                let backend = match r.backend.as_str() {
                    "" => None,
                    name => Some(name.parse::<BackendKind>().map_err(|e| {
                        Status::invalid_argument(format!("rule on {}: {e}", r.service))
                    })?),
                };
                rule_spec(r).map(|spec| (spec, backend))
            })
            .collect::<Result<_, _>>()?;
        let partitions: Vec<PartitionSpec> = req
            .partitions
            .into_iter()
            .map(|p| PartitionSpec {
                from: p.from_service,
                to: p.to_service,
                both_directions: p.both_directions,
                label: (!p.label.is_empty()).then_some(p.label),
            })
            .collect();
        let (id, rules) = session.apply_fault_set(specs, &partitions, req.seed)?;
        Ok(Response::new(pb::ApplyFaultsResponse {
            fault_set_id: id.to_string(),
            rules: rules.iter().map(|r| resolved_rule(r)).collect(),
        }))
    }

    async fn clear_faults(
        &self,
        request: Request<pb::ClearFaultsRequest>,
    ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
        let req = request.into_inner();
        let session = self.engine.session(&req.session_id)?;
        let rules = session.clear_faults(&req.fault_set_id)?;
        Ok(Response::new(pb::ClearFaultsResponse {
            rules: rules.iter().map(|r| rule_summary(r)).collect(),
        }))
    }

    async fn step(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResponse>, Status> {
        let req = request.into_inner();
        let session = self.engine.session(&req.session_id)?;
        let step = match req.request {
            Some(pb::step_request::Request::Http(h)) => StepRequest::Http {
                method: h.method,
                path: h.path,
                headers: sorted(h.headers),
                body: h.body,
            },
            Some(pb::step_request::Request::Tcp(t)) => StepRequest::Tcp { line: t.line },
            None => {
                return Err(Status::invalid_argument(
                    "a step needs an http or tcp request",
                ));
            }
        };
        let timeout = match req.timeout_ms {
            0 => Duration::from_secs(30),
            ms => Duration::from_millis(ms.into()),
        };
        let outcome = session
            .step(&req.service, &req.interface, step, timeout)
            .await?;
        session.touch();
        Ok(Response::new(pb::StepResponse {
            ok: outcome.ok,
            error: outcome.error,
            status: outcome.status.into(),
            // Header names are case-insensitive: they are reported lower-cased, as HTTP/2 does.
            headers: outcome
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            body: outcome.body,
            duration_us: outcome.duration.as_micros() as u64,
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let req = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BATCH);
        self.watch(req, tx, |events| {
            events.iter().map(|e| Ok(event_message(e))).collect()
        })?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type WatchEventBatchesStream = BatchStream;

    async fn watch_event_batches(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        let req = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        self.watch(req, tx, |events| {
            vec![Ok(pb::EventBatch {
                events: events.iter().map(|e| event_message(e)).collect(),
            })]
        })?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn keep_alive(
        &self,
        request: Request<pb::KeepAliveRequest>,
    ) -> Result<Response<pb::KeepAliveResponse>, Status> {
        self.engine.session(&request.into_inner().session_id)?;
        Ok(Response::new(pb::KeepAliveResponse {}))
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let summary = self
            .engine
            .delete_session(&request.into_inner().session_id)
            .await?;
        Ok(Response::new(pb::DeleteSessionResponse {
            never_fired: summary
                .rules
                .iter()
                .filter(|r| r.hits() == 0)
                .map(|r| r.id)
                .collect(),
            rules: summary.rules.iter().map(|r| rule_summary(r)).collect(),
            services: summary
                .services
                .into_iter()
                .map(|s| pb::ServiceSummary {
                    name: s.name,
                    exit: s
                        .exit
                        .map(|status| exit_message(status, s.stopped_by_faultd)),
                    stdout_tail: s.stdout_tail,
                    stderr_tail: s.stderr_tail,
                })
                .collect(),
            events_total: summary.events_total,
        }))
    }
}

fn sorted(map: std::collections::HashMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort();
    pairs
}

fn service_config(s: pb::ServiceSpec) -> Result<ServiceConfig, Status> {
    let attach_cgroup = (!s.attach_cgroup.is_empty()).then(|| PathBuf::from(&s.attach_cgroup));
    if let Some(dir) = &attach_cgroup {
        if !s.argv.is_empty() {
            return Err(Status::invalid_argument(format!(
                "service {} sets both argv and attach_cgroup; an attached service is not launched, \
                 so leave argv empty",
                s.name
            )));
        }
        if !s.intercept_syscalls.is_empty() {
            return Err(Status::invalid_argument(format!(
                "service {} is attached by cgroup, so it takes no intercept_syscalls: faultd does \
                 not launch it and cannot install a seccomp filter in it",
                s.name
            )));
        }
        if !dir.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "service {}: attach_cgroup {:?} is not an absolute path to a cgroup v2 directory",
                s.name, s.attach_cgroup
            )));
        }
    }
    let healthcheck = match s.healthcheck {
        None => None,
        Some(h) => {
            let check = match h.check {
                Some(pb::healthcheck::Check::Tcp(t)) => HealthCheck::Tcp { address: t.address },
                Some(pb::healthcheck::Check::Http(u)) => HealthCheck::Http { url: u.url },
                None => {
                    return Err(Status::invalid_argument(format!(
                        "service {}: a healthcheck needs tcp or http",
                        s.name
                    )));
                }
            };
            check.validate().map_err(|e| {
                Status::invalid_argument(format!("service {}: healthcheck: {e}", s.name))
            })?;
            let ms = |v: u32, default: u64| {
                Duration::from_millis(if v == 0 { default } else { v.into() })
            };
            Some((check, ms(h.timeout_ms, 10_000), ms(h.interval_ms, 50)))
        }
    };
    let interfaces = s
        .interfaces
        .into_iter()
        .map(|i| {
            let protocol = match pb::Protocol::try_from(i.protocol) {
                Ok(pb::Protocol::Http) => Protocol::Http,
                Ok(pb::Protocol::Tcp) => Protocol::Tcp,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "service {}: interface {} needs a protocol (tcp or http)",
                        s.name, i.name
                    )));
                }
            };
            let port = u16::try_from(i.port).map_err(|_| {
                Status::invalid_argument(format!(
                    "interface {}: port {} is out of range",
                    i.name, i.port
                ))
            })?;
            Ok(InterfaceConfig {
                name: i.name,
                protocol,
                host: i.host,
                port,
            })
        })
        .collect::<Result<_, Status>>()?;
    Ok(ServiceConfig {
        launch: LaunchSpec {
            argv: s.argv,
            env: sorted(s.env),
            clear_env: s.clear_env,
            cwd: (!s.cwd.is_empty()).then(|| s.cwd.into()),
        },
        interfaces,
        healthcheck,
        depends_on: s.depends_on,
        ops: s
            .ops
            .into_iter()
            .map(|o| OpConfig {
                name: o.name,
                syscalls: o.syscalls,
                path_glob: (!o.path_glob.is_empty()).then_some(o.path_glob),
            })
            .collect(),
        intercept: s.intercept_syscalls,
        attach_cgroup,
        stop_grace: Duration::from_millis(match s.stop_grace_ms {
            0 => 2000,
            ms => ms.into(),
        }),
        name: s.name,
    })
}

fn rule_spec(r: pb::FaultRule) -> Result<RuleSpec, Status> {
    let action = match r.action {
        Some(pb::fault_rule::Action::Deny(d)) => Action::Deny {
            errno: syscalls::errno(&d.errno).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown errno {:?}; known: {}",
                    d.errno,
                    syscalls::errno_names().collect::<Vec<_>>().join(", ")
                ))
            })?,
        },
        Some(pb::fault_rule::Action::Delay(d)) => {
            Action::Delay(Duration::from_micros(d.duration_us))
        }
        Some(pb::fault_rule::Action::Allow(_)) => Action::Allow,
        Some(pb::fault_rule::Action::Crash(c)) => {
            let name = if c.signal.is_empty() {
                "SIGKILL"
            } else {
                &c.signal
            };
            Action::Crash {
                signal: syscalls::signal(name).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown signal {name:?}; known: {}",
                        syscalls::signal_names().collect::<Vec<_>>().join(", ")
                    ))
                })?,
            }
        }
        None => {
            return Err(Status::invalid_argument(
                "a fault rule needs an action: deny, delay or allow",
            ));
        }
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(RuleSpec {
        service: r.service,
        op: non_empty(r.op),
        syscalls: r.syscalls,
        path_glob: non_empty(r.path_glob),
        destination: non_empty(r.destination),
        action,
        probability: r.probability.unwrap_or(1.0),
        label: non_empty(r.label),
    })
}

fn resolved_rule(r: &Rule) -> pb::ResolvedRule {
    pb::ResolvedRule {
        rule_id: r.id,
        service: r.service.to_string(),
        op: r.op.as_deref().unwrap_or_default().to_string(),
        syscalls: r.syscalls.iter().map(|s| s.name.to_string()).collect(),
        path_glob: r.path_glob.clone().unwrap_or_default(),
        backend: r.backend.to_string(),
    }
}

fn rule_summary(r: &Rule) -> pb::RuleSummary {
    pb::RuleSummary {
        rule_id: r.id,
        fault_set_id: r.fault_set.to_string(),
        service: r.service.to_string(),
        op: r.op.as_deref().unwrap_or_default().to_string(),
        syscalls: r.syscalls.iter().map(|s| s.name.to_string()).collect(),
        path_glob: r.path_glob.clone().unwrap_or_default(),
        destination: r.destination.clone().unwrap_or_default(),
        action: Some(summary_action(&r.action)),
        label: r.label.as_deref().unwrap_or_default().to_string(),
        hits: r.hits(),
        backend: r.backend.to_string(),
        matches: r.matches_count(),
    }
}

/// An action as the wire's `RuleSummary.action`: the same messages `FaultRule` takes.
fn summary_action(action: &Action) -> pb::rule_summary::Action {
    use pb::rule_summary::Action as A;
    match *action {
        Action::Deny { errno } => A::Deny(pb::Deny {
            errno: syscalls::errno_name(errno).map_or_else(|| errno.to_string(), str::to_owned),
        }),
        Action::Delay(d) => A::Delay(pb::Delay {
            duration_us: u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        }),
        Action::Allow => A::Allow(pb::Allow {}),
        Action::Crash { signal } => A::Crash(pb::Crash {
            signal: syscalls::signal_name(signal).map_or_else(|| signal.to_string(), str::to_owned),
        }),
    }
}

fn exit_message(status: trace::ExitStatus, stopped_by_faultd: bool) -> pb::ServiceExited {
    let (code, signal) = match status {
        trace::ExitStatus::Code(c) => (c, 0),
        trace::ExitStatus::Signal(s) => (-1, s),
    };
    pb::ServiceExited {
        code,
        signal,
        stopped_by_faultd,
    }
}

impl FaultdApi {
    /// Feeds `tx` with a session's events, read in batches of up to [`WATCH_BATCH_MAX`] and turned into
    /// messages by `encode`, until the bus ends (`follow`) or the backlog is sent.
    fn watch<M: Send + 'static>(
        &self,
        req: pb::WatchEventsRequest,
        tx: tokio::sync::mpsc::Sender<Result<M, Status>>,
        encode: impl Fn(&[Arc<trace::Event>]) -> Vec<Result<M, Status>> + Send + 'static,
    ) -> Result<(), Status> {
        let session = self.engine.session(&req.session_id)?;
        let mut subscriber = session.bus.subscribe(req.from_seq);
        let lease = req.follow.then(|| session.hold());
        tokio::spawn(async move {
            let _lease = lease;
            loop {
                let batch = if req.follow {
                    tokio::select! {
                        batch = subscriber.next(WATCH_BATCH_MAX) => batch,
                        // The client went away: stop holding the lease.
                        () = tx.closed() => return,
                    }
                } else {
                    match subscriber.poll(WATCH_BATCH_MAX) {
                        trace::Batch::Events(events) => Some(events),
                        trace::Batch::Empty | trace::Batch::End => None,
                    }
                };
                let Some(batch) = batch else { return };
                for message in encode(&batch) {
                    if tx.send(message).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(())
    }
}

/// The protobuf form of an engine event.
pub fn event_message(e: &trace::Event) -> pb::Event {
    use pb::event::Kind;
    let kind = match &e.kind {
        EventKind::Syscall(s) => Kind::Syscall(pb::SyscallEvent {
            pid: s.pid,
            tid: s.tid,
            syscall: s.syscall.to_string(),
            nr: s.nr as i32,
            op: s.op.as_deref().unwrap_or_default().to_string(),
            path: s.path.clone().unwrap_or_default(),
            decision: match s.decision {
                Decision::Allow => pb::Decision::Allow,
                Decision::Deny => pb::Decision::Deny,
                Decision::Delay => pb::Decision::Delay,
                Decision::Crash => pb::Decision::Crash,
                Decision::Observed => pb::Decision::Observed,
            } as i32,
            errno: s.errno,
            errno_name: syscalls::errno_name(s.errno)
                .unwrap_or_default()
                .to_string(),
            delay_us: s.delay.as_micros() as u64,
            label: s.label.as_deref().unwrap_or_default().to_string(),
            rule_id: s.rule_id,
            backend: s.backend.to_string(),
            signal: s.signal,
            retval: s.retval.unwrap_or_default(),
            has_retval: s.retval.is_some(),
            latency_ns: s.latency.as_nanos() as u64,
        }),
        EventKind::Started { pid, cgroup } => Kind::Started(pb::ServiceStarted {
            pid: *pid,
            cgroup: cgroup.clone().unwrap_or_default(),
        }),
        EventKind::Ready { after } => Kind::Ready(pb::ServiceReady {
            ready_ms: after.as_millis() as u64,
        }),
        EventKind::Exited {
            status,
            stopped_by_faultd,
        } => Kind::Exited(exit_message(*status, *stopped_by_faultd)),
        EventKind::Output { stream, line } => Kind::Output(pb::ServiceOutput {
            stream: match stream {
                trace::Stream::Stdout => pb::OutputStream::Stdout,
                trace::Stream::Stderr => pb::OutputStream::Stderr,
            } as i32,
            line: line.clone(),
        }),
        EventKind::FaultsApplied {
            fault_set,
            rules,
            seed,
        } => Kind::FaultsApplied(pb::FaultsApplied {
            fault_set_id: fault_set.to_string(),
            rules: rules
                .iter()
                .map(|r| pb::ResolvedRule {
                    rule_id: r.id,
                    service: r.service.to_string(),
                    op: r.op.as_deref().unwrap_or_default().to_string(),
                    syscalls: r.syscalls.iter().map(|s| s.to_string()).collect(),
                    path_glob: r.path_glob.clone().unwrap_or_default(),
                    backend: r.backend.to_string(),
                })
                .collect(),
            seed: *seed,
        }),
        EventKind::FaultsCleared { fault_set } => Kind::FaultsCleared(pb::FaultsCleared {
            fault_set_id: fault_set.to_string(),
        }),
        EventKind::StepSent { interface, summary } => Kind::StepSent(pb::StepSent {
            interface: interface.clone(),
            summary: summary.clone(),
        }),
        EventKind::StepAnswered {
            ok,
            status,
            error,
            duration,
        } => Kind::StepAnswered(pb::StepAnswered {
            ok: *ok,
            status: (*status).into(),
            error: error.clone(),
            duration_us: duration.as_micros() as u64,
        }),
        EventKind::Dropped { count } => Kind::Dropped(pb::EventsDropped { count: *count }),
    };
    pb::Event {
        seq: e.seq,
        time_unix_ns: e
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        service: e.service.as_deref().unwrap_or_default().to_string(),
        time_ns: e.time_ns,
        kind: Some(kind),
    }
}
