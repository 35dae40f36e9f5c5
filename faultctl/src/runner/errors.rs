//! How a run stops early: a [`Stop`] request (Ctrl-C, SIGTERM), a [`RunError`], and which gRPC
//! statuses mean faultd itself failed ([`daemon_error`]).

use tokio::sync::watch;
use tonic::{Code, Status};

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
}
