//! Healthchecks: is a service ready to take requests?
//!
//! A TCP check passes when a connection is accepted within [`TCP_ATTEMPT_TIMEOUT`]; an HTTP check passes
//! when `GET url` answers 2xx or 3xx within [`HTTP_ATTEMPT_TIMEOUT`]. [`wait_ready`] repeats a check
//! until it passes or time runs out.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::http::{self, DisplayDuration, HttpError, HttpRequest};

/// Time one TCP attempt may take.
pub(crate) const TCP_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Time one HTTP attempt may take.
pub(crate) const HTTP_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How to tell that a service is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// A TCP connection to `address` (`host:port`) is accepted.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// `GET url` answers 2xx or 3xx. `url` is `http://host:port/path` or `host:port/path`.
    Http {
        /// The URL to fetch.
        url: String,
    },
    /// redis `PING` answers `PONG`.
    Redis {
        /// `host:port`.
        address: String,
    },
    /// A postgres session starts and `SELECT 1` succeeds.
    Postgres {
        /// `host:port`.
        address: String,
        /// Who connects.
        login: crate::step::PgLogin,
    },
}

impl HealthCheck {
    /// Rejects a check that can never pass because its URL is unusable.
    pub fn validate(&self) -> Result<(), HttpError> {
        match self {
            Self::Tcp { .. } | Self::Redis { .. } | Self::Postgres { .. } => Ok(()),
            Self::Http { url } => http::parse_url(url).map(drop),
        }
    }
}

impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { address } => write!(f, "tcp {address}"),
            Self::Http { url } => write!(f, "http GET {url}"),
            Self::Redis { address } => write!(f, "redis PING {address}"),
            Self::Postgres { address, .. } => write!(f, "postgres SELECT 1 {address}"),
        }
    }
}

/// The check did not pass within the time allowed.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "healthcheck {check} did not pass within {}; last attempt: {last_error}",
    DisplayDuration(*.timeout)
)]
pub(crate) struct HealthTimeout {
    /// The check that kept failing.
    pub check: HealthCheck,
    /// How long it was allowed to take.
    pub timeout: Duration,
    /// Why the last attempt failed.
    pub last_error: String,
}

/// Runs the check once; true when it passes.
#[cfg(test)]
async fn check_once(check: &HealthCheck) -> bool {
    attempt(check).await.is_ok()
}

/// Repeats `check` until it passes (returning the time since the call) or `timeout` has passed:
/// after [`FIRST_RETRY`], then twice as long after each failure, up to `interval` (a service is
/// usually ready within milliseconds; a slow one is not polled harder). An attempt still running at
/// the deadline is abandoned.
///
/// Cancel-safe: dropping the future mid-attempt just closes that attempt's connection, so callers can
/// race it against the service exiting.
pub(crate) async fn wait_ready(
    check: &HealthCheck,
    timeout: Duration,
    interval: Duration,
) -> Result<Duration, HealthTimeout> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last_error = None;
    let mut attempts = 0u32;
    let mut pause = FIRST_RETRY.min(interval);
    loop {
        attempts += 1;
        match tokio::time::timeout_at(deadline, attempt(check)).await {
            Ok(Ok(())) => {
                let elapsed = start.elapsed();
                tracing::debug!(%check, attempts, ?elapsed, "healthcheck passed");
                return Ok(elapsed);
            }
            Ok(Err(e)) => {
                tracing::trace!(%check, attempts, error = %e, "healthcheck not passing yet");
                last_error = Some(e);
            }
            // Cut short by the deadline: the previous failure, if any, says more.
            Err(_) => {}
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let last_error = last_error
                .unwrap_or_else(|| format!("no answer within {}", DisplayDuration(timeout)));
            tracing::debug!(%check, attempts, %last_error, "healthcheck timed out");
            return Err(HealthTimeout {
                check: check.clone(),
                timeout,
                last_error,
            });
        }
        tokio::time::sleep(pause.min(remaining)).await;
        pause = (pause * 2).min(interval);
    }
}

/// The pause before the first retry of a healthcheck.
const FIRST_RETRY: Duration = Duration::from_millis(1);

/// One attempt, limited to its kind's timeout; the error says why it failed.
async fn attempt(check: &HealthCheck) -> Result<(), String> {
    match check {
        HealthCheck::Tcp { address } => {
            match tokio::time::timeout(TCP_ATTEMPT_TIMEOUT, http::connect(address)).await {
                Ok(Ok(_stream)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(HttpError::Timeout {
                    addr: address.clone(),
                    timeout: TCP_ATTEMPT_TIMEOUT,
                }
                .to_string()),
            }
        }
        HealthCheck::Http { url } => {
            let (addr, path) = http::parse_url(url).map_err(|e| e.to_string())?;
            let req = HttpRequest {
                method: "GET",
                path: &path,
                headers: &[],
                body: b"",
            };
            let resp = http::send(&addr, &addr, &req, HTTP_ATTEMPT_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            if (200..400).contains(&resp.status) {
                Ok(())
            } else {
                Err(format!("{url} answered HTTP {}", resp.status))
            }
        }
        HealthCheck::Redis { address } => {
            let args = [b"PING".to_vec()];
            let ping = crate::step_db::redis(address, &args);
            match tokio::time::timeout(HTTP_ATTEMPT_TIMEOUT, ping).await {
                Ok(Ok(crate::step::RedisReply::Simple(pong))) if pong == "PONG" => Ok(()),
                Ok(Ok(other)) => Err(format!("{address} answered PING with {other:?}")),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!(
                    "no PONG from {address} within {HTTP_ATTEMPT_TIMEOUT:?}"
                )),
            }
        }
        HealthCheck::Postgres { address, login } => {
            let select = crate::step_db::postgres(address, login, "SELECT 1");
            match tokio::time::timeout(HTTP_ATTEMPT_TIMEOUT, select).await {
                Ok(Ok(r)) => match r.error {
                    None => Ok(()),
                    Some((code, message)) => Err(format!("SELECT 1 failed: {message} ({code})")),
                },
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!(
                    "no answer from {address} within {HTTP_ATTEMPT_TIMEOUT:?}"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers every connection with `status` and no body.
    async fn http_server(status: u16) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
                // Close gracefully: closing with unread input would reset the connection.
                let _ = stream.shutdown().await;
                let _ = stream.read_to_end(&mut Vec::new()).await;
            }
        });
        addr
    }

    /// An address nothing listens on.
    async fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn tcp_check() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        assert!(check_once(&HealthCheck::Tcp { address }).await);
        assert!(
            !check_once(&HealthCheck::Tcp {
                address: closed_port().await
            })
            .await
        );
    }

    #[tokio::test]
    async fn http_check_accepts_2xx_and_3xx_only() {
        for (status, ready) in [(200, true), (302, true), (404, false), (503, false)] {
            let url = format!("http://{}/health", http_server(status).await);
            assert_eq!(
                check_once(&HealthCheck::Http { url }).await,
                ready,
                "status {status}"
            );
        }
    }

    #[tokio::test]
    async fn wait_ready_waits_for_a_late_listener() {
        let address = closed_port().await;
        let late = address.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let listener = TcpListener::bind(&late).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(listener);
        });
        let check = HealthCheck::Tcp { address };
        let elapsed = wait_ready(&check, Duration::from_secs(5), Duration::from_millis(20))
            .await
            .unwrap();
        assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    }

    #[tokio::test]
    async fn wait_ready_times_out_with_the_last_error() {
        let url = format!("{}/health", http_server(503).await);
        let check = HealthCheck::Http { url: url.clone() };
        let err = wait_ready(
            &check,
            Duration::from_millis(200),
            Duration::from_millis(20),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "healthcheck http GET {url} did not pass within 200ms; last attempt: {url} answered HTTP 503"
            )
        );
    }

    #[tokio::test]
    async fn wait_ready_cut_short_by_the_deadline() {
        // Accepts (through the backlog) but never answers: the only attempt is abandoned.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("{}/", listener.local_addr().unwrap());
        let check = HealthCheck::Http { url };
        let err = wait_ready(
            &check,
            Duration::from_millis(100),
            Duration::from_millis(20),
        )
        .await
        .unwrap_err();
        assert_eq!(err.last_error, "no answer within 100ms");
    }

    #[test]
    fn validate_rejects_https() {
        assert!(
            HealthCheck::Http {
                url: "https://x/".into()
            }
            .validate()
            .is_err()
        );
        assert!(
            HealthCheck::Http {
                url: "x:1/h".into()
            }
            .validate()
            .is_ok()
        );
    }
}
