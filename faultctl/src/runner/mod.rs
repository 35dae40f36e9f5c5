//! Runs a spec's tests through faultd, each in its own session with fresh services:
//! `CreateSession` → `WatchEvents(follow)` (the trace, and the session's lease) → `ApplyFaults` (one
//! fault set per assumption, seeded) → the body (scenario, then `expect(result)` while the faults
//! are still active) → `ClearFaults` → `DeleteSession` (rule hits) → a [`TestReport`].
//!
//! Tests start in source order (see [`crate::spec`]), up to `--jobs` at once, each in its own
//! session ([`jobs`] decides how many); the report lists them in source order whatever the order
//! they finish in. A test fails when its body raises, when its services do not start (faultd's
//! error: exit status and stderr tail), or when it exceeds its timeout (`--timeout`, default 60 s,
//! or `fault_scenario(timeout=)`), which covers service start-up, faults and body.
//!
//! When faultd itself fails — its connection drops (a crash), it answers with a transport or internal
//! error, or it does not know a method (another protocol version) — the run stops with a
//! [`DaemonError`]: an error of the run (exit 1), not a failure of the test (exit 2).
//!
//! A [`Stop`] (faultctl's Ctrl-C and SIGTERM) interrupts the run: no further test starts, the tests
//! in flight are cancelled, and their sessions are deleted (services stopped, faults removed) within
//! [`TEARDOWN_TIMEOUT`]; the run ends with [`RunError::Interrupted`] naming what was torn down.

mod body;
mod errors;
pub mod jobs;
mod outcome;
pub mod progress;
pub mod repeat;
mod select;
mod session;
pub mod single;
mod teardown;

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::client::DaemonClient;
use faultd_proto::v1 as pb;

use crate::report::model::{Outcome, RunReport, TestReport};
use crate::spec::SpecRuntime;

pub use crate::collect::DEFAULT_MAX_EVENTS;
pub use errors::{DaemonError, RunError, Stop, Teardown, TornDown, daemon_error};
pub use select::{glob_match, select};
pub use teardown::TEARDOWN_TIMEOUT;

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
    /// Most tests running at once, each in its own session (see [`jobs::effective`]).
    pub jobs: usize,
}

/// How long faultd gets to answer `Probe` after a failed test before it counts as gone.
const ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the `selected` tests, up to [`RunOptions::jobs`] at once (each in its own session), and
/// reports them in the order of `selected` whatever the order they finish in;
/// `progress(done, total, report)` is called as each finishes. Stops at the first [`DaemonError`],
/// or when `stop` comes (after tearing down every session in flight).
pub async fn run(
    runtime: &SpecRuntime,
    client: &DaemonClient,
    selected: &[usize],
    options: &RunOptions,
    stop: &Stop,
    mut progress: impl FnMut(usize, usize, &TestReport),
) -> Result<RunReport, RunError> {
    let spec = runtime.spec();
    let jobs = options.jobs.max(1);
    let mut reports: Vec<Option<TestReport>> = vec![None; selected.len()];
    let mut in_flight = FuturesUnordered::new();
    let mut next = selected.iter().enumerate();
    let mut done = 0;
    let mut torn_down = Vec::new();
    loop {
        while in_flight.len() < jobs && !stop.is_stopped() {
            let Some((position, &index)) = next.next() else {
                break;
            };
            in_flight.push(async move {
                let report = session::run_test(runtime, client.clone(), index, options, stop).await;
                (position, index, report)
            });
        }
        let Some((position, index, report)) = in_flight.next().await else {
            break;
        };
        match report {
            Ok(report) => {
                if report.result == Outcome::Fail {
                    // A failed step may be faultd gone: that is the run's error, not the test's.
                    alive(client, &spec.tests[index].name).await?;
                }
                done += 1;
                progress(done, selected.len(), &report);
                reports[position] = Some(report);
            }
            // The other sessions in flight are faultd's, which failed.
            Err(RunError::Daemon(e)) => return Err(e.into()),
            Err(RunError::Interrupted(t)) => torn_down.extend(t),
        }
    }
    if reports.iter().any(Option::is_none) {
        // Only a stop leaves tests without a report.
        return Err(RunError::Interrupted(torn_down));
    }
    let tests: Vec<(usize, TestReport)> = selected
        .iter()
        .zip(reports)
        .filter_map(|(&index, report)| Some((index, report?)))
        .collect();
    let matrices = outcome::matrix_reports(spec, &tests);
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

#[cfg(test)]
mod tests {
    use super::*;

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
            jobs: 1,
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
}
