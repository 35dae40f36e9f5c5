//! Runs a spec's tests through faultd, each in its own session with fresh services:
//! `CreateSession` → `WatchEvents(follow)` (the trace, and the session's lease) → `ApplyFaults` (one
//! fault set per assumption, seeded) → the body (scenario, then `expect(result)` while the faults
//! are still active) → `ClearFaults` → `DeleteSession` (rule hits) → a [`TestReport`].
//!
//! Tests run one after another in source order (see [`crate::spec`]). A test fails when its body
//! raises, when its services do not start (faultd's error: exit status and stderr tail), or when
//! it exceeds its timeout (`--timeout`, default 60 s, or `fault_scenario(timeout=)`), which covers
//! service start-up, faults and body.
//!
//! When faultd itself fails — its connection drops (a crash), it answers with a transport or internal
//! error, or it does not know a method (another protocol version) — the run stops with a
//! [`DaemonError`]: an error of the run (exit 1), not a failure of the test (exit 2).
//!
//! A [`Stop`] (faultctl's Ctrl-C and SIGTERM) interrupts the run: no further test starts, the test in
//! flight is cancelled, and its session is deleted (its services stopped, its faults removed) within
//! [`TEARDOWN_TIMEOUT`]; the run ends with [`RunError::Interrupted`] naming what was torn down.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::DaemonClient;
use faultd_proto::v1 as pb;
use tokio::sync::watch;
use tokio::time::timeout_at;
use tonic::{Code, Status};

use crate::report::model::{
    ActionKind, ExitReport, MatrixCell, MatrixReport, Outcome, RuleReport, RunReport, TestReport,
};
use crate::spec::model::Spec;
use crate::spec::{SpecRuntime, TestSession, wire};

/// How long the trace stream gets to deliver its last events after the session is deleted.
const TRACE_DRAIN: Duration = Duration::from_secs(5);

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Seed of every fault set of the run.
    pub seed: u64,
    /// Per-test time limit unless the spec sets one.
    pub timeout: Duration,
    /// Trace every syscall of the services (ebpf-trace), not only the intercepted ones.
    pub trace_all: bool,
    /// Force every rule onto this backend (`seccomp`, `ebpf-cgroup`); faultd chooses when `None`.
    pub backend: Option<String>,
    /// Most syscall events kept per test; the others are counted in `dropped_events`.
    pub max_events: usize,
}

/// How long faultd gets to answer `Probe` after a failed test before it counts as gone.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an interrupted run waits for its session in flight to be created (when it was being
/// created) and then deleted.
pub const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks a run to stop (faultctl's signal handler holds the sender): see [`Stop::channel`].
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A stop and its trigger: sending `true` interrupts the run.
    pub fn channel() -> (watch::Sender<bool>, Stop) {
        let (tx, rx) = watch::channel(false);
        (tx, Stop(rx))
    }

    /// A stop that never comes.
    pub fn never() -> Stop {
        Stop(watch::channel(false).1)
    }

    /// Whether the run was asked to stop.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the run is asked to stop (never, when the trigger is dropped first).
    pub async fn stopped(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Why a run ended without a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// faultd failed.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The run was interrupted ([`Stop`]); what was torn down.
    #[error("interrupted")]
    Interrupted(Vec<TornDown>),
}

/// A session an interrupted run tore down (or tried to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornDown {
    /// The test it was created for.
    pub test: String,
    /// Its id; empty when it was being created and was not.
    pub session_id: String,
    /// What became of it.
    pub outcome: Teardown,
}

/// What became of an interrupted test's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// DeleteSession returned: services stopped, faults removed.
    Deleted,
    /// It was being created and its creation failed: faultd stopped what it had started.
    NotCreated(String),
    /// The teardown may be incomplete: why.
    Failed(String),
}

impl std::fmt::Display for TornDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (test, id) = (&self.test, &self.session_id);
        match &self.outcome {
            Teardown::Deleted => write!(
                f,
                "deleted session {id} of test `{test}` (services stopped, faults removed)"
            ),
            Teardown::NotCreated(why) => write!(
                f,
                "the session of test `{test}` did not start ({why}); faultd stopped its services"
            ),
            Teardown::Failed(why) if id.is_empty() => {
                write!(f, "the session of test `{test}` was not torn down: {why}")
            }
            Teardown::Failed(why) => {
                write!(f, "session {id} of test `{test}` was not torn down: {why}")
            }
        }
    }
}

/// faultd failed, rather than a test: it crashed or became unreachable, failed internally, or speaks
/// another version of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DaemonError(pub String);

/// The [`DaemonError`] a status means, if it is one: transport and internal failures and unknown
/// methods; faultd's own refusals (invalid argument, failed precondition, not found...) are not.
pub fn daemon_error(during: &str, status: &Status) -> Option<DaemonError> {
    let message = status.message();
    let what = match status.code() {
        Code::Unimplemented => format!(
            "faultd does not implement the call {during} ({message}): it speaks another version of \
             the faultd.v1 protocol than this faultctl; install matching versions"
        ),
        Code::Internal if is_protocol_error(message) => format!(
            "faultd's answer {during} could not be decoded ({message}): it speaks another version of \
             the faultd.v1 protocol than this faultctl; install matching versions"
        ),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DataLoss => format!(
            "lost faultd {during} ({message}): the daemon crashed, stopped or became unreachable"
        ),
        Code::Internal => format!("faultd failed internally {during}: {message}"),
        _ => return None,
    };
    Some(DaemonError(what))
}

fn is_protocol_error(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("protocol error") || m.contains("decode") || m.contains("content-type")
}

use crate::collect::Collected;
pub use crate::collect::DEFAULT_MAX_EVENTS;

/// Indices of the tests `filter` selects, in run order; an error lists the test names when nothing
/// matches.
pub fn select(spec: &Spec, filter: Option<&str>) -> Result<Vec<usize>, String> {
    let selected: Vec<usize> = (0..spec.tests.len())
        .filter(|&i| filter.is_none_or(|f| glob_match(f, &spec.tests[i].name)))
        .collect();
    if selected.is_empty() {
        let names: Vec<&str> = spec.tests.iter().map(|t| t.name.as_str()).collect();
        return Err(match filter {
            Some(f) => format!("no test matches `{f}`; tests: {}", names.join(", ")),
            None => {
                "the spec declares no tests (def test_*, scenario, fault_scenario, fault_matrix)"
                    .into()
            }
        });
    }
    Ok(selected)
}

/// Runs the `selected` tests; `progress(done, total, report)` is called after each. Stops at the
/// first [`DaemonError`], or when `stop` comes (after tearing down the session in flight).
pub async fn run(
    runtime: &SpecRuntime,
    client: &DaemonClient,
    selected: &[usize],
    options: &RunOptions,
    stop: &Stop,
    mut progress: impl FnMut(usize, usize, &TestReport),
) -> Result<RunReport, RunError> {
    let spec = runtime.spec();
    let mut tests = Vec::with_capacity(selected.len());
    for (done, &index) in selected.iter().enumerate() {
        if stop.is_stopped() {
            return Err(RunError::Interrupted(Vec::new()));
        }
        let report = run_test(runtime, client.clone(), index, options, stop).await?;
        if report.result == Outcome::Fail {
            // A failed step may be faultd gone: that is the run's error, not the test's.
            alive(client, &spec.tests[index].name).await?;
        }
        progress(done + 1, selected.len(), &report);
        tests.push((index, report));
    }
    let matrices = matrix_reports(spec, &tests);
    let tests: Vec<TestReport> = tests.into_iter().map(|(_, r)| r).collect();
    let passed = tests.iter().filter(|t| t.result == Outcome::Pass).count();
    Ok(RunReport {
        spec: spec.path.display().to_string(),
        seed: options.seed,
        passed,
        failed: tests.len() - passed,
        tests,
        matrices,
    })
}

/// Whether faultd still answers after test `test` failed.
async fn alive(client: &DaemonClient, test: &str) -> Result<(), DaemonError> {
    let during = format!("after test `{test}` failed");
    match tokio::time::timeout(ALIVE_TIMEOUT, client.clone().probe(pb::ProbeRequest {})).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => match daemon_error(&during, &status) {
            Some(e) => Err(e),
            None => Ok(()),
        },
        Err(_) => Err(DaemonError(format!(
            "faultd did not answer within {}s {during}: the daemon hangs or became unreachable",
            ALIVE_TIMEOUT.as_secs()
        ))),
    }
}

/// A seed for a run without `--seed`.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    // Keep seeds short enough to retype.
    h.finish() % 1_000_000_000
}

async fn run_test(
    runtime: &SpecRuntime,
    mut client: DaemonClient,
    index: usize,
    options: &RunOptions,
    stop: &Stop,
) -> Result<TestReport, RunError> {
    let test = &runtime.spec().tests[index];
    let limit = test.timeout.unwrap_or(options.timeout);
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + limit);
    let limit = Limit { deadline, limit };
    let mut report = TestReport {
        name: test.name.clone(),
        kind: test.kind,
        scenario: test.scenario.clone(),
        fault: test.fault.clone(),
        result: Outcome::Pass,
        reason: None,
        duration_ms: 0,
        seed: options.seed,
        rules: Vec::new(),
        events: Vec::new(),
        dropped_events: 0,
        exits: Vec::new(),
    };

    let request = pb::CreateSessionRequest {
        name: crate::spec::wire::session_name(&test.name),
        services: runtime.spec().services.iter().map(wire::service).collect(),
        lease_ms: 0,
        trace: if options.trace_all {
            pb::TraceMode::All
        } else {
            pb::TraceMode::Intercepted
        } as i32,
    };
    let mut creator = client.clone();
    let creating = timeout_at(deadline, creator.create_session(request));
    tokio::pin!(creating);
    let created = tokio::select! {
        created = &mut creating => created,
        () = stop.stopped() => {
            // The session may be half-created: let its creation finish (bounded), then delete it.
            let torn_down = match tokio::time::timeout(TEARDOWN_TIMEOUT, creating).await {
                Ok(Ok(Ok(r))) => {
                    let session_id = r.into_inner().session_id;
                    teardown(&mut client, &test.name, session_id).await
                }
                Ok(Ok(Err(status))) => TornDown {
                    test: test.name.clone(),
                    session_id: String::new(),
                    outcome: Teardown::NotCreated(status.message().to_owned()),
                },
                Ok(Err(_)) | Err(_) => TornDown {
                    test: test.name.clone(),
                    session_id: String::new(),
                    outcome: Teardown::Failed(format!(
                        "it was still starting after {}s",
                        TEARDOWN_TIMEOUT.as_secs()
                    )),
                },
            };
            return Err(RunError::Interrupted(vec![torn_down]));
        }
    };
    let created = match created {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => {
            if let Some(e) = daemon_error("while starting services", &status) {
                return Err(e.into());
            }
            return Ok(fail(report, start_failure(status.message()), start));
        }
        Err(_) => {
            return Ok(fail(
                report,
                limit.timed_out("while starting services"),
                start,
            ));
        }
    };
    let session_id = created.session_id;
    let collected = Arc::new(Mutex::new(Collected::default()));
    let watch_request = pb::WatchEventsRequest {
        session_id: session_id.clone(),
        from_seq: 0,
        follow: true,
    };
    let watcher = match client.watch_event_batches(watch_request).await {
        Ok(stream) => {
            let mut stream = stream.into_inner();
            let collected = collected.clone();
            let max_events = options.max_events;
            Some(tokio::spawn(async move {
                while let Ok(Some(batch)) = stream.message().await {
                    let mut c = collected.lock().unwrap_or_else(|e| e.into_inner());
                    for event in &batch.events {
                        c.add(event, max_events);
                    }
                }
            }))
        }
        Err(status) => {
            if let Some(e) = daemon_error("while watching the session's events", &status) {
                return Err(e.into());
            }
            tracing::warn!(test = %test.name, "cannot watch the session's events: {}", status.message());
            None
        }
    };

    let outcome = body(
        runtime,
        &mut client,
        index,
        &session_id,
        options,
        &limit,
        stop,
    )
    .await;

    if let Err(Failure::Interrupted) = outcome {
        let torn_down = teardown(&mut client, &test.name, session_id).await;
        if let Some(w) = watcher {
            w.abort();
        }
        return Err(RunError::Interrupted(vec![torn_down]));
    }
    let deleted = client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session_id.clone(),
        })
        .await;
    if let Some(mut w) = watcher {
        // The stream ends when the session's trace closes; give it a bounded time to get there.
        if timeout_at(tokio::time::Instant::now() + TRACE_DRAIN, &mut w)
            .await
            .is_err()
        {
            w.abort();
        }
    }
    match deleted {
        Ok(summary) => report.rules = summary.into_inner().rules.iter().map(rule_report).collect(),
        Err(status) => {
            if let Some(e) = daemon_error("while deleting the session", &status) {
                return Err(e.into());
            }
            tracing::warn!(test = %test.name, "DeleteSession failed: {}", status.message())
        }
    }
    let collected = std::mem::take(&mut *collected.lock().unwrap_or_else(|e| e.into_inner()));
    report.events = collected.events;
    report.exits = collected.exits;
    report.dropped_events = collected.dropped;
    match outcome {
        Ok(()) => {
            report.duration_ms = elapsed_ms(start);
            Ok(report)
        }
        Err(Failure::Daemon(e)) => Err(e.into()),
        Err(Failure::Test(reason)) => {
            let reason = with_exits(reason, &report.exits);
            Ok(fail(report, reason, start))
        }
        Err(Failure::Interrupted) => unreachable!("handled above"),
    }
}

/// Deletes the session of an interrupted test, waiting at most [`TEARDOWN_TIMEOUT`].
async fn teardown(client: &mut DaemonClient, test: &str, session_id: String) -> TornDown {
    let request = pb::DeleteSessionRequest {
        session_id: session_id.clone(),
    };
    let outcome = match tokio::time::timeout(TEARDOWN_TIMEOUT, client.delete_session(request)).await
    {
        Ok(Ok(_)) => Teardown::Deleted,
        Ok(Err(status)) => Teardown::Failed(format!("DeleteSession failed: {}", status.message())),
        Err(_) => Teardown::Failed(format!(
            "DeleteSession did not return within {}s",
            TEARDOWN_TIMEOUT.as_secs()
        )),
    };
    TornDown {
        test: test.to_owned(),
        session_id,
        outcome,
    }
}

/// Why a test's body did not pass.
enum Failure {
    /// The test failed.
    Test(String),
    /// faultd failed.
    Daemon(DaemonError),
    /// The run was asked to stop.
    Interrupted,
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure::Test(reason)
    }
}

/// Applies the test's fault sets, runs its body, clears the sets.
async fn body(
    runtime: &SpecRuntime,
    client: &mut DaemonClient,
    index: usize,
    session_id: &str,
    options: &RunOptions,
    limit: &Limit,
    stop: &Stop,
) -> Result<(), Failure> {
    let (seed, backend) = (options.seed, options.backend.as_deref());
    let test = &runtime.spec().tests[index];
    let deadline = limit.deadline;
    let mut applied = Vec::new();
    let mut result: Result<(), Failure> = Ok(());
    for set in &test.faults {
        let applying = timeout_at(
            deadline,
            client.apply_faults(wire::apply_request(session_id, set, seed, backend)),
        );
        let applied_or_stopped = tokio::select! {
            r = applying => Some(r),
            () = stop.stopped() => None,
        };
        let Some(answer) = applied_or_stopped else {
            // DeleteSession removes whatever was applied.
            return Err(Failure::Interrupted);
        };
        match answer {
            Ok(Ok(r)) => applied.push(r.into_inner().fault_set_id),
            Ok(Err(status)) => {
                result = Err(match daemon_error("while applying faults", &status) {
                    Some(e) => Failure::Daemon(e),
                    None => Failure::Test(format!(
                        "cannot apply fault_assumption `{}`: {}",
                        set.name,
                        status.message()
                    )),
                });
                break;
            }
            Err(_) => {
                result = Err(limit.timed_out("while applying faults").into());
                break;
            }
        }
    }
    if result.is_ok() {
        let (cancel_tx, cancel) = watch::channel(false);
        let session = TestSession {
            runtime: tokio::runtime::Handle::current(),
            client: client.clone(),
            session_id: session_id.to_owned(),
            seed,
            backend: backend.map(str::to_owned),
            cancel,
        };
        let running = runtime.run_body(index, session);
        tokio::pin!(running);
        let finished = tokio::select! {
            r = timeout_at(deadline, &mut running) => Some(r),
            () = stop.stopped() => None,
        };
        result = match finished {
            Some(Ok(r)) => r.map_err(Failure::Test),
            Some(Err(_)) => {
                let _ = cancel_tx.send(true);
                let _ = running.await;
                Err(limit.timed_out("while running the test").into())
            }
            None => {
                // Steps and evaluation stop at the cancel; DeleteSession removes the faults.
                let _ = cancel_tx.send(true);
                let _ = tokio::time::timeout(TEARDOWN_TIMEOUT, running).await;
                return Err(Failure::Interrupted);
            }
        };
    }
    for fault_set_id in applied {
        let request = pb::ClearFaultsRequest {
            session_id: session_id.to_owned(),
            fault_set_id,
        };
        if let Err(status) = client.clear_faults(request).await {
            tracing::warn!(test = %test.name, "ClearFaults failed: {}", status.message());
        }
    }
    result
}

/// A test's time limit.
struct Limit {
    deadline: tokio::time::Instant,
    limit: Duration,
}

impl Limit {
    fn timed_out(&self, during: &str) -> String {
        format!(
            "timed out after {} {during} (per-test limit; raise it with --timeout)",
            human(self.limit)
        )
    }
}

fn fail(mut report: TestReport, reason: String, start: Instant) -> TestReport {
    report.result = Outcome::Fail;
    report.reason = Some(reason);
    report.duration_ms = elapsed_ms(start);
    report
}

/// faultd's reason for a session that did not start, prefixed once with `failed to start services`.
fn start_failure(message: &str) -> String {
    const PREFIX: &str = "failed to start services";
    if message.starts_with(PREFIX) {
        message.to_owned()
    } else {
        format!("{PREFIX}: {message}")
    }
}

/// Adds services that exited on their own during the test to a failure reason.
fn with_exits(mut reason: String, exits: &[ExitReport]) -> String {
    for x in exits {
        let how = match (&x.signal, x.code) {
            (Some(signal), _) => format!("was killed by {signal}"),
            (None, code) => format!("exited with code {}", code.unwrap_or_default()),
        };
        reason.push_str(&format!("; service `{}` {how} during the test", x.service));
    }
    reason
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// faultd's rule summary as a report row.
fn rule_report(r: &pb::RuleSummary) -> RuleReport {
    use pb::rule_summary::Action as A;
    if let Some(p) = &r.proxy {
        return crate::report::proxy_rule_report(r, p);
    }
    let (action, errno, delay_ms) = match &r.action {
        Some(A::Deny(d)) => (ActionKind::Deny, Some(d.errno.clone()), None),
        Some(A::Delay(d)) => (ActionKind::Delay, None, Some(d.duration_us / 1000)),
        Some(A::Crash(c)) => (ActionKind::Crash, Some(c.signal.clone()), None),
        Some(A::Allow(_)) | None => (ActionKind::Allow, None, None),
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    RuleReport {
        service: r.service.clone(),
        op: non_empty(&r.op),
        syscalls: r.syscalls.clone(),
        path: non_empty(&r.path_glob),
        errno,
        delay_ms,
        action,
        label: non_empty(&r.label),
        hits: r.hits,
        backend: non_empty(&r.backend),
        interface: None,
        request: None,
    }
}

fn matrix_reports(spec: &Spec, tests: &[(usize, TestReport)]) -> Vec<MatrixReport> {
    let mut out = Vec::new();
    for (m, matrix) in spec.matrices.iter().enumerate() {
        let mut cells = vec![vec![None; matrix.faults.len()]; matrix.scenarios.len()];
        let mut any = false;
        for (index, report) in tests {
            if let Some((mi, row, col)) = spec.tests[*index].cell
                && mi == m
            {
                cells[row][col] = Some(MatrixCell {
                    result: report.result,
                    duration_ms: report.duration_ms,
                    reason: report.reason.clone(),
                });
                any = true;
            }
        }
        if any {
            out.push(MatrixReport {
                scenarios: matrix.scenarios.clone(),
                faults: matrix.faults.clone(),
                cells,
            });
        }
    }
    out
}

/// `*` matches any run of characters, `?` one character; everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ni));
            pi += 1;
        } else if let Some((bp, bn)) = backtrack {
            pi = bp + 1;
            ni = bn + 1;
            backtrack = Some((bp, bn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_and_protocol_failures_are_daemon_errors() {
        let e = daemon_error(
            "while starting services",
            &Status::unavailable("connection reset"),
        )
        .unwrap();
        assert!(
            e.0.starts_with(
                "lost faultd while starting services (connection reset): the daemon crashed"
            ),
            "{e}"
        );
        let e = daemon_error("while applying faults", &Status::unimplemented("")).unwrap();
        assert!(
            e.0.contains("another version of the faultd.v1 protocol"),
            "{e}"
        );
        let e = daemon_error(
            "while starting services",
            &Status::internal("protocol error: failed to decode Protobuf message"),
        )
        .unwrap();
        assert!(
            e.0.contains("another version of the faultd.v1 protocol"),
            "{e}"
        );
        assert!(daemon_error("x", &Status::unknown("h2 protocol error")).is_some());
        // faultd's own answers about the request are the test's business.
        for status in [
            Status::invalid_argument("service name \"../x\" is not allowed"),
            Status::failed_precondition("service `db` exited with code 1"),
            Status::not_found("no session"),
            Status::resource_exhausted("too many rules"),
        ] {
            assert!(daemon_error("x", &status).is_none(), "{status:?}");
        }
    }

    /// A daemon whose connections drop (as when it crashes) stops the run with a DaemonError: exit 1,
    /// not a failed test.
    #[tokio::test]
    async fn a_daemon_that_drops_connections_is_an_error_of_the_run() {
        let dir = std::env::temp_dir().join(format!("faultctl-crash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec_path = dir.join("spec.star");
        std::fs::write(
            &spec_path,
            "s = service(\"s\", \"/bin/true\")\ndef test_one():\n    pass\n",
        )
        .unwrap();
        let rt = crate::spec::load(&spec_path).unwrap();
        let socket = dir.join("faultd.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        });
        let path = socket.clone();
        let channel = tonic::transport::Endpoint::from_static("http://faultd.local")
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        let client = crate::client::daemon_client(channel, Default::default());
        let options = RunOptions {
            seed: 1,
            timeout: Duration::from_secs(10),
            trace_all: false,
            backend: None,
            max_events: DEFAULT_MAX_EVENTS,
        };
        let e = run(&rt, &client, &[0], &options, &Stop::never(), |_, _, _| {})
            .await
            .unwrap_err();
        let RunError::Daemon(e) = e else {
            panic!("{e:?}")
        };
        assert!(
            e.0.starts_with("lost faultd while starting services"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn globs() {
        assert!(glob_match("matrix_*", "matrix_place_order_wal_broken"));
        assert!(glob_match("*wal*", "matrix_place_order_wal_broken"));
        assert!(glob_match("place_order", "place_order"));
        assert!(!glob_match("place_order", "place_order2"));
        assert!(glob_match("test_?", "test_a"));
        assert!(!glob_match("test_?", "test_ab"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn rule_summaries_become_report_rows() {
        let r = rule_report(&pb::RuleSummary {
            service: "inventory".into(),
            op: "wal_write".into(),
            syscalls: vec!["write".into(), "writev".into()],
            path_glob: "/tmp/*.wal".into(),
            action: Some(pb::rule_summary::Action::Deny(pb::Deny {
                errno: "EIO".into(),
            })),
            label: "WAL broken".into(),
            hits: 0,
            ..Default::default()
        });
        assert_eq!(
            (r.action.as_str(), r.errno.as_deref(), r.delay_ms),
            ("deny", Some("EIO"), None)
        );
        assert_eq!(r.op.as_deref(), Some("wal_write"));
        assert_eq!(r.path.as_deref(), Some("/tmp/*.wal"));
        let r = rule_report(&pb::RuleSummary {
            action: Some(pb::rule_summary::Action::Delay(pb::Delay {
                duration_us: 500_000,
            })),
            ..Default::default()
        });
        assert_eq!(
            (r.action.as_str(), r.errno, r.delay_ms, r.op),
            ("delay", None, Some(500), None)
        );
        let r = rule_report(&pb::RuleSummary {
            action: Some(pb::rule_summary::Action::Allow(pb::Allow {})),
            ..Default::default()
        });
        assert_eq!(r.action, ActionKind::Allow);
    }

    #[test]
    fn start_failures_are_prefixed_once() {
        assert_eq!(
            start_failure("service bad exited"),
            "failed to start services: service bad exited"
        );
        assert_eq!(
            start_failure("failed to start services: x"),
            "failed to start services: x"
        );
    }

    #[test]
    fn exits_are_added_to_reasons() {
        let exited = |stopped| pb::Event {
            service: "inventory".into(),
            kind: Some(pb::event::Kind::Exited(pb::ServiceExited {
                code: 3,
                signal: 0,
                stopped_by_faultd: stopped,
            })),
            ..Default::default()
        };
        let mut collected = Collected::default();
        collected.add(&exited(true), 10);
        assert_eq!(with_exits("r".into(), &collected.exits), "r");
        collected.add(&exited(false), 10);
        assert_eq!(
            with_exits("r".into(), &collected.exits),
            "r; service `inventory` exited with code 3 during the test"
        );
    }
}
