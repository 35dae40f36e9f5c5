//! Deleting the session of an interrupted test.

use std::time::Duration;

use crate::client::DaemonClient;
use faultd_proto::v1 as pb;

use super::errors::{Teardown, TornDown};

/// How long an interrupted run waits for its session in flight to be created (when it was being
/// created) and then deleted.
pub const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Deletes the session of an interrupted test, waiting at most [`TEARDOWN_TIMEOUT`].
pub(super) async fn teardown(
    client: &mut DaemonClient,
    test: &str,
    session_id: String,
) -> TornDown {
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
