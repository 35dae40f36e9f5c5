//! The `faultd.v1` gRPC service: translates protobuf to engine types and back, nothing else.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use faultd_proto::v1 as pb;

use crate::enforce::BackendKind;
use faultd_proto::v1::faultd_server::Faultd;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::engine::{Engine, EngineError};
use crate::probe::CgroupMode;
use crate::session::{PartitionSpec, SessionConfig};
use crate::step::StepRequest;
use crate::trace;

mod convert;
mod mock;
mod proxy;

pub use convert::event_message;
use convert::{exit_message, resolved_rule, rule_spec, rule_summaries, service_config, sorted};

mod validate;

/// Events sent to one watcher per batch; the gRPC stream's own buffer is small on purpose.
const WATCH_BATCH: usize = 256;
/// Most events per [`pb::EventBatch`] (and per read of the bus).
const WATCH_BATCH_MAX: usize = 1024;
/// Lease of a session whose client gave none.
const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The gRPC face of an [`Engine`].
#[derive(Clone)]
pub(crate) struct FaultdApi {
    engine: Arc<Engine>,
}

impl FaultdApi {
    /// Serves `engine`.
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
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
            EngineError::ResourceExhausted(_) => Status::resource_exhausted(message),
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
        request: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        Caller::of(&request)?;
        let caps = &self.engine.probed().await?;
        Ok(Response::new(pb::ProbeResponse {
            kernel_release: caps.kernel_release.clone(),
            arch: caps.arch.clone(),
            cgroup_mode: match caps.cgroup {
                CgroupMode::Unified => pb::CgroupMode::Unified,
                CgroupMode::Hybrid => pb::CgroupMode::Hybrid,
                CgroupMode::None => pb::CgroupMode::None,
            } as i32,
            network: Some(pb::NetworkIsolation {
                available: caps.network.available,
                reason: caps.network.reason.clone(),
            }),
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
            faultd_version: crate::VERSION.to_string(),
        }))
    }

    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        validate::create_session(&req)?;
        let config = SessionConfig {
            name: req.name,
            services: req
                .services
                .into_iter()
                .map(|s| service_config(s, &caller))
                .collect::<Result<_, _>>()?,
            lease: match req.lease_ms {
                0 => DEFAULT_LEASE,
                ms => Duration::from_millis(ms.into()),
            },
            trace_all: req.trace == pb::TraceMode::All as i32,
        };
        let session = self.engine.create_session(config, caller).await?;
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
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let session = self.engine.session(&req.session_id, &caller)?;
        // Refused before anything is compiled; the engine checks again against the active rules.
        let max = self.engine.limits().max_rules;
        let asked = req.rules.len() + req.partitions.len() + req.proxy_rules.len();
        if asked > max {
            return Err(Status::resource_exhausted(format!(
                "a session may have at most {max} active rules, and this request adds {asked}"
            )));
        }
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
        let proxy_specs = req
            .proxy_rules
            .into_iter()
            .map(proxy::proxy_rule_spec)
            .collect::<Result<_, _>>()?;
        let (id, applied) = self
            .engine
            .apply_faults(&session, specs, partitions, proxy_specs, req.seed)
            .await?;
        Ok(Response::new(pb::ApplyFaultsResponse {
            fault_set_id: id.to_string(),
            rules: applied.rules.iter().map(|r| resolved_rule(r)).collect(),
        }))
    }

    async fn clear_faults(
        &self,
        request: Request<pb::ClearFaultsRequest>,
    ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let session = self.engine.session(&req.session_id, &caller)?;
        let applied = self
            .engine
            .clear_faults(&session, &req.fault_set_id)
            .await?;
        Ok(Response::new(pb::ClearFaultsResponse {
            rules: rule_summaries(&applied.rules)
                .into_iter()
                .chain(applied.proxy_rules.iter().map(|r| proxy::proxy_summary(r)))
                .collect(),
        }))
    }

    async fn step(
        &self,
        request: Request<pb::StepRequest>,
    ) -> Result<Response<pb::StepResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let session = self.engine.session(&req.session_id, &caller)?;
        let step = match req.request {
            Some(pb::step_request::Request::Http(h)) => StepRequest::Http {
                method: h.method,
                path: h.path,
                headers: sorted(h.headers),
                body: h.body,
            },
            Some(pb::step_request::Request::Tcp(t)) => StepRequest::Tcp { line: t.line },
            Some(pb::step_request::Request::Redis(r)) => StepRequest::Redis {
                args: proxy::redis_args(r)?,
            },
            Some(pb::step_request::Request::Postgres(p)) => {
                proxy::postgres_sql(&p.sql)?;
                StepRequest::Postgres {
                    sql: p.sql,
                    login: crate::step::PgLogin {
                        user: p.user,
                        database: p.database,
                        password: p.password,
                    },
                }
            }
            Some(pb::step_request::Request::PowerLoss(p)) => {
                let mode = convert::power_loss_mode(&p.mode)?;
                let start = std::time::Instant::now();
                let done = session
                    .power_loss(&req.service, mode, p.seed.unwrap_or(0))
                    .await?;
                session.touch();
                return Ok(Response::new(pb::StepResponse {
                    ok: true,
                    body: done.into_bytes(),
                    duration_us: start.elapsed().as_micros() as u64,
                    ..Default::default()
                }));
            }
            Some(pb::step_request::Request::Restart(_)) => {
                session.restart(&req.service).await?;
                return Ok(Response::new(process_step_done(&session)));
            }
            Some(pb::step_request::Request::Stop(_)) => {
                session.stop_service(&req.service).await?;
                return Ok(Response::new(process_step_done(&session)));
            }
            Some(pb::step_request::Request::Kill(k)) => {
                let name = if k.signal.is_empty() {
                    "SIGKILL"
                } else {
                    &k.signal
                };
                let signal = crate::syscalls::signal(name).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown signal {name:?}; known: {}",
                        crate::syscalls::signal_names()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                session.kill(&req.service, signal)?;
                return Ok(Response::new(process_step_done(&session)));
            }
            None => {
                return Err(Status::invalid_argument(
                    "a step needs a request: http, tcp, redis, postgres, power_loss, restart, stop or kill",
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
            redis: outcome.redis.as_ref().map(proxy::redis_value),
            postgres: outcome.postgres.as_ref().map(proxy::postgres_result),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BATCH);
        self.watch(&caller, req, tx, |events| {
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
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        self.watch(&caller, req, tx, |events| {
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
        let caller = Caller::of(&request)?;
        self.engine
            .session(&request.into_inner().session_id, &caller)?;
        Ok(Response::new(pb::KeepAliveResponse {}))
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let summary = self
            .engine
            .delete_session(&request.into_inner().session_id, &caller)
            .await?;
        let rules: Vec<pb::RuleSummary> = rule_summaries(&summary.rules)
            .into_iter()
            .chain(summary.proxy_rules.iter().map(|r| proxy::proxy_summary(r)))
            .collect();
        Ok(Response::new(pb::DeleteSessionResponse {
            never_fired: rules
                .iter()
                .filter(|r| r.hits == 0)
                .map(|r| r.rule_id)
                .collect(),
            rules,
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

impl FaultdApi {
    /// Feeds `tx` with a session's events, read in batches of up to [`WATCH_BATCH_MAX`] and turned into
    /// messages by `encode`, until the bus ends (`follow`) or the backlog is sent.
    fn watch<M: Send + 'static>(
        &self,
        caller: &Caller,
        req: pb::WatchEventsRequest,
        tx: tokio::sync::mpsc::Sender<Result<M, Status>>,
        encode: impl Fn(&[Arc<trace::Event>]) -> Vec<Result<M, Status>> + Send + 'static,
    ) -> Result<(), Status> {
        let session = self.engine.session(&req.session_id, caller)?;
        let mut subscriber = session.bus.subscribe(req.from_seq);
        let lease = req.follow.then(|| session.hold());
        let mut pace = trace::Pace::new(self.engine.limits().max_events_per_second);
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
                pace.take(batch.len()).await;
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

/// The answer to a step on a service's processes (restart, stop, kill): done.
fn process_step_done(session: &crate::session::Session) -> pb::StepResponse {
    session.touch();
    pb::StepResponse {
        ok: true,
        ..Default::default()
    }
}
