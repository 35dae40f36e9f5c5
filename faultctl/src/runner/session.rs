//! One test's session: create it (with its services), watch its trace, apply the test's fault sets,
//! run its body, clear the sets, delete it, and turn all of it into a [`TestReport`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::DaemonClient;
use faultd_proto::v1 as pb;
use tokio::time::timeout_at;

use crate::collect::Collected;
use crate::report::model::{Outcome, TestReport};
use crate::spec::{SpecRuntime, wire};

use super::RunOptions;
use super::body::{Failure, Intercepted, Limit, Printed, body};
use super::errors::{RunError, Stop, Teardown, TornDown, daemon_error};
use super::outcome::{rule_report, start_failure, with_exits};
use super::teardown::{TEARDOWN_TIMEOUT, teardown};

/// How long the trace stream gets to deliver its last events after the session is deleted.
const TRACE_DRAIN: Duration = Duration::from_secs(5);

pub(super) async fn run_test(
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
        printed: Vec::new(),
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
    let printed = Printed::default();
    let intercepted: Intercepted = Arc::new(
        created
            .services
            .into_iter()
            .map(|s| (s.name, s.intercepted.into_iter().collect()))
            .collect(),
    );
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
        (intercepted, &printed),
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
    report.printed = std::mem::take(&mut *printed.lock().unwrap_or_else(|e| e.into_inner()));
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

fn fail(mut report: TestReport, reason: String, start: Instant) -> TestReport {
    report.result = Outcome::Fail;
    report.reason = Some(reason);
    report.duration_ms = elapsed_ms(start);
    report
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
