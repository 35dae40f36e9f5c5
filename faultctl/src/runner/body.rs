//! A test's body inside its session: apply the test's fault sets, run the body on the Starlark
//! thread (bounded by the test's limit, stopped by a [`Stop`]), clear the sets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::client::DaemonClient;
use faultd_proto::v1 as pb;
use tokio::sync::watch;
use tokio::time::timeout_at;

use crate::spec::{SpecRuntime, TestSession, wire};

use super::RunOptions;
use super::errors::{DaemonError, Stop, daemon_error};
use super::teardown::TEARDOWN_TIMEOUT;

/// Syscalls each service intercepts, as faultd reported them.
pub(super) type Intercepted = Arc<BTreeMap<String, BTreeSet<String>>>;
/// Lines the test's body printed.
pub(super) type Printed = Arc<std::sync::Mutex<Vec<String>>>;

/// Why a test's body did not pass.
pub(super) enum Failure {
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
#[allow(clippy::too_many_arguments)] // the session's parts, each used once
pub(super) async fn body(
    runtime: &SpecRuntime,
    client: &mut DaemonClient,
    index: usize,
    session_id: &str,
    (intercepted, printed): (Intercepted, &Printed),
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
            intercepted,
            started: Arc::default(),
            printed: printed.clone(),
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
pub(super) struct Limit {
    pub(super) deadline: tokio::time::Instant,
    pub(super) limit: Duration,
}

impl Limit {
    pub(super) fn timed_out(&self, during: &str) -> String {
        format!(
            "timed out after {} {during} (per-test limit; raise it with --timeout)",
            human(self.limit)
        )
    }
}

fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
