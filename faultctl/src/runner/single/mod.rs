//! `faultctl run --fault SPEC ... -- program args`: one program under faults, without a spec, as
//! the peer's `faultbox run`. The program is a one-service session built as a spec's service is
//! ([`wire::service`], [`wire::apply_request`]): faultd launches it behind a [`gate`] (so nothing of
//! it runs before its faults), faultctl applies the `--fault` rules, opens the gate, streams the
//! program's output as it comes and waits for it to exit, then deletes the session and reports the
//! trace and the rules' hits as a test's.

pub mod fault_arg;
pub mod gate;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use faultd_proto::v1 as pb;

use crate::client::DaemonClient;
use crate::collect::Collected;
use crate::report::model::{ExitReport, Outcome, TestKind, TestReport};
use crate::spec::model::{Check, FaultSet, Healthcheck, Interface, Protocol, Service};
use crate::spec::wire;

use super::errors::{DaemonError, Stop, daemon_error};
use super::outcome::rule_report;
use super::teardown::TEARDOWN_TIMEOUT;

pub use fault_arg::FaultArgError;

/// How long the trace gets to deliver its last events after the session is deleted.
const TRACE_DRAIN: Duration = Duration::from_secs(5);
/// Most `--fault` values.
const MAX_FAULTS: usize = 64;

/// One program to run under faults.
#[derive(Debug, Clone)]
pub struct SingleRun {
    /// The service faultd runs: the gate, then the program.
    service: Service,
    /// The `--fault` rules.
    faults: FaultSet,
}

/// Why a single run ended without a report.
#[derive(Debug, thiserror::Error)]
pub enum SingleError {
    /// A `--fault` value does not parse.
    #[error(transparent)]
    Fault(#[from] FaultArgError),
    /// Too many `--fault` values, no program, or no way to find faultctl's own binary.
    #[error("{0}")]
    Usage(String),
    /// faultd failed.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// faultd refused or could not start the program, or apply its faults.
    #[error("{0}")]
    Start(String),
    /// Ctrl-C / SIGTERM: the session was deleted.
    #[error("interrupted: the program's session was deleted")]
    Interrupted,
}

/// How the program ended, and the report of its session.
#[derive(Debug)]
pub struct SingleOutcome {
    /// The session as a test's report (trace, rules and hits; the exit in `exits`).
    pub report: TestReport,
    /// The program's exit; `None` when it was still running at the time limit.
    pub exit: Option<ExitReport>,
}

impl SingleOutcome {
    /// faultctl's exit code: the program's, 128 + the signal that killed it, 124 when it outlived
    /// its time limit (as `timeout(1)`).
    pub fn exit_code(&self) -> u8 {
        match &self.exit {
            Some(ExitReport { code: Some(c), .. }) => u8::try_from(*c).unwrap_or(1),
            Some(ExitReport {
                signal: Some(s), ..
            }) => 128u8.saturating_add(signal_number(s)),
            _ => 124,
        }
    }
}

fn signal_number(name: &str) -> u8 {
    faultd_model::syscalls::signal(name)
        .or_else(|| name.parse().ok())
        .and_then(|n| u8::try_from(n).ok())
        .unwrap_or(0)
}

impl SingleRun {
    /// The run of `program` (`[path, args...]`) under `faults` (`--fault` values), from `cwd` with
    /// `env`; `gate_port` is a free port on 127.0.0.1 for the gate's readiness.
    pub fn new(
        faults: &[String],
        program: &[String],
        cwd: &std::path::Path,
        env: BTreeMap<String, String>,
        gate_port: u16,
    ) -> Result<SingleRun, SingleError> {
        let Some(first) = program.first() else {
            return Err(SingleError::Usage(
                "give the program to run after `--`: faultctl run --fault ... -- ./program args"
                    .into(),
            ));
        };
        if faults.len() > MAX_FAULTS {
            return Err(SingleError::Usage(format!(
                "{} --fault values; at most {MAX_FAULTS} are accepted",
                faults.len()
            )));
        }
        let name = std::path::Path::new(first)
            .file_name()
            .and_then(|n| wire::allowed_name(&n.to_string_lossy()))
            .unwrap_or_else(|| "program".into());
        let rules = faults
            .iter()
            .map(|f| fault_arg::parse(f, &name))
            .collect::<Result<Vec<_>, _>>()?;
        let exe = std::env::current_exe().map_err(|e| {
            SingleError::Usage(format!(
                "cannot find faultctl's own binary to start the program: {e}"
            ))
        })?;
        let mut argv = vec![
            exe.to_string_lossy().into_owned(),
            gate::GATE_COMMAND.to_owned(),
            gate_port.to_string(),
        ];
        argv.extend(program.iter().cloned());
        let service = Service {
            name: name.clone(),
            argv,
            mock: None,
            attach_cgroup: None,
            env,
            user: None,
            cwd: Some(cwd.to_string_lossy().into_owned()),
            interfaces: vec![Interface {
                name: "gate".into(),
                protocol: Protocol::Tcp,
                port: gate_port,
                proxy_port: None,
            }],
            healthcheck: Some(Healthcheck {
                check: Check::Tcp(format!("127.0.0.1:{gate_port}")),
                timeout: None,
            }),
            depends_on: Vec::new(),
            ops: Vec::new(),
            intercept: rules.iter().flat_map(|r| r.syscalls.clone()).collect(),
            resolve_paths: true,
            // The program is the user's own, expecting the host's network (a server it calls, a
            // port it serves), not a fresh namespace.
            host_network: true,
        };
        Ok(SingleRun {
            service,
            faults: FaultSet {
                name: "--fault".into(),
                rules,
                partitions: Vec::new(),
                proxy_rules: Vec::new(),
            },
        })
    }

    /// [`SingleRun::new`] from this process's directory and environment (variables that are not
    /// UTF-8 are left out), with a free port for the gate.
    pub fn here(faults: &[String], program: &[String]) -> Result<SingleRun, SingleError> {
        let io = |what: &str, e: std::io::Error| SingleError::Usage(format!("{what}: {e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| io("cannot find a free port for the program's gate", e))?
            .port();
        let cwd = std::env::current_dir().map_err(|e| io("no current directory", e))?;
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        SingleRun::new(faults, program, &cwd, env, port)
    }

    /// Runs the program: `output(stderr, line)` gets each line it writes as it comes.
    pub async fn run(
        &self,
        client: &DaemonClient,
        options: &super::RunOptions,
        stop: &Stop,
        mut output: impl FnMut(bool, &str),
    ) -> Result<SingleOutcome, SingleError> {
        let mut client = client.clone();
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + options.timeout);
        let name = self.service.name.clone();
        let request = pb::CreateSessionRequest {
            name: wire::session_name(&name),
            services: vec![wire::service(&self.service)],
            lease_ms: 0,
            trace: if options.trace_all {
                pb::TraceMode::All
            } else {
                pb::TraceMode::Intercepted
            } as i32,
        };
        let created = tokio::select! {
            r = client.create_session(request) => r,
            () = stop.stopped() => return Err(SingleError::Interrupted),
        };
        let session_id = match created {
            Ok(r) => r.into_inner().session_id,
            Err(status) => {
                return Err(match daemon_error("while starting the program", &status) {
                    Some(e) => e.into(),
                    None => SingleError::Start(format!(
                        "the program did not start: {}",
                        status.message()
                    )),
                });
            }
        };
        let result = self
            .gated(
                &mut client,
                &session_id,
                options,
                stop,
                deadline,
                &mut output,
            )
            .await;
        let deleting = client.delete_session(pb::DeleteSessionRequest {
            session_id: session_id.clone(),
        });
        let deleted = tokio::time::timeout(TEARDOWN_TIMEOUT, deleting).await;
        let (mut collected, mut stream, exit) = result?;
        // The stream ends once the session's trace closes: take the last events.
        let drain = tokio::time::Instant::now() + TRACE_DRAIN;
        while let Ok(Ok(Some(batch))) = tokio::time::timeout_at(drain, stream.message()).await {
            for e in &batch.events {
                take(e, &mut collected, options.max_events, &mut output);
            }
        }
        let rules = match deleted {
            Ok(Ok(summary)) => summary.into_inner().rules.iter().map(rule_report).collect(),
            Ok(Err(status)) => {
                if let Some(e) = daemon_error("while deleting the session", &status) {
                    return Err(e.into());
                }
                tracing::warn!("DeleteSession failed: {}", status.message());
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let exit = exit.or_else(|| collected.exits.iter().find(|x| x.service == name).cloned());
        let (result, reason) = match &exit {
            Some(ExitReport { code: Some(0), .. }) => (Outcome::Pass, None),
            Some(x) => (Outcome::Fail, Some(exit_text(x))),
            None => (
                Outcome::Fail,
                Some(format!(
                    "still running after {}s (raise the limit with --timeout); stopped",
                    options.timeout.as_secs()
                )),
            ),
        };
        let report = TestReport {
            name,
            kind: TestKind::Test,
            scenario: None,
            fault: None,
            result,
            reason,
            duration_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            seed: options.seed,
            rules,
            events: collected.events,
            dropped_events: collected.dropped,
            exits: collected.exits,
            printed: Vec::new(),
        };
        Ok(SingleOutcome { report, exit })
    }

    /// Watches the session, applies the faults, opens the gate and waits for the program's exit.
    async fn gated(
        &self,
        client: &mut DaemonClient,
        session_id: &str,
        options: &super::RunOptions,
        stop: &Stop,
        deadline: tokio::time::Instant,
        output: &mut impl FnMut(bool, &str),
    ) -> Result<
        (
            Collected,
            tonic::Streaming<pb::EventBatch>,
            Option<ExitReport>,
        ),
        SingleError,
    > {
        let fail = |during: &str, status: tonic::Status| match daemon_error(during, &status) {
            Some(e) => SingleError::Daemon(e),
            None => SingleError::Start(format!("{during}: {}", status.message())),
        };
        let mut stream = client
            .watch_event_batches(pb::WatchEventsRequest {
                session_id: session_id.to_owned(),
                from_seq: 0,
                follow: true,
            })
            .await
            .map_err(|s| fail("while watching the program's events", s))?
            .into_inner();
        let apply = wire::apply_request(
            session_id,
            &self.faults,
            options.seed,
            options.backend.as_deref(),
        );
        if !self.faults.rules.is_empty() {
            client
                .apply_faults(apply)
                .await
                .map_err(|s| fail("cannot apply the --fault rules", s))?;
        }
        client
            .step(pb::StepRequest {
                session_id: session_id.to_owned(),
                service: self.service.name.clone(),
                interface: "gate".into(),
                // The gate execs the program without answering: the step ends at its EOF.
                request: Some(pb::step_request::Request::Tcp(pb::TcpRequest {
                    line: gate::GATE_LINE.into(),
                })),
                timeout_ms: 0,
            })
            .await
            .map_err(|s| fail("cannot start the program", s))?;
        let mut collected = Collected::default();
        loop {
            let next = tokio::select! {
                m = stream.message() => m,
                () = stop.stopped() => return Err(SingleError::Interrupted),
                () = tokio::time::sleep_until(deadline) => return Ok((collected, stream, None)),
            };
            let Ok(Some(batch)) = next else {
                return Ok((collected, stream, None));
            };
            for e in &batch.events {
                take(e, &mut collected, options.max_events, output);
            }
            if let Some(x) = collected
                .exits
                .iter()
                .find(|x| x.service == self.service.name)
            {
                let x = x.clone();
                return Ok((collected, stream, Some(x)));
            }
        }
    }
}

/// One streamed event: output to `output`, the rest into `collected`.
fn take(
    e: &pb::Event,
    collected: &mut Collected,
    max_events: usize,
    output: &mut impl FnMut(bool, &str),
) {
    if let Some(pb::event::Kind::Output(o)) = &e.kind {
        output(o.stream == pb::OutputStream::Stderr as i32, &o.line);
    } else {
        collected.add(e, max_events);
    }
}

fn exit_text(x: &ExitReport) -> String {
    match (&x.signal, x.code) {
        (Some(s), _) => format!("killed by {s}"),
        (None, Some(c)) => format!("exited with code {c}"),
        (None, None) => "ended".into(),
    }
}

/// The trace block printed after the program's output: a header with how it ended, then the
/// syscall trace and the rules with their hits, as a spec's test shows them.
pub fn render(outcome: &SingleOutcome) -> String {
    let r = &outcome.report;
    let how = match &outcome.exit {
        Some(x) => exit_text(x),
        None => r.reason.clone().unwrap_or_default(),
    };
    let shown = TestReport {
        // As a passing test: the exit is in the header, there is no spec to replay.
        result: Outcome::Pass,
        exits: Vec::new(),
        ..r.clone()
    };
    format!(
        "--- {}: {how} ({}ms, seed={}) ---\n{}",
        r.name,
        r.duration_ms,
        r.seed,
        crate::report::text::test_details("", &shown)
    )
}
