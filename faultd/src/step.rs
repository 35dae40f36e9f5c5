//! Scenario steps: one request against a service interface, answered as data.
//!
//! A step never fails as a Rust error: a refused connection, a timeout or a peer that hangs up are
//! outcomes the test wants to look at, so they come back as [`StepOutcome`] with `ok == false`.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use crate::http::{self, HttpError, HttpRequest};
use crate::step_db;
pub(crate) use crate::step_db::{PgLogin, PgResult, RedisReply};

/// Longest TCP reply line accepted.
const MAX_LINE: usize = 1 << 20;

/// What a step sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepRequest {
    /// One HTTP request. An empty method means `GET`, an empty path `/`.
    Http {
        /// Method, e.g. `POST`.
        method: String,
        /// Request target, e.g. `/orders`.
        path: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
        /// Request body.
        body: Vec<u8>,
    },
    /// One line over TCP: `line` and `\n` are sent, one line is read back.
    Tcp {
        /// The line to send, without its newline.
        line: String,
    },
    /// One redis command; one reply is read back.
    Redis {
        /// Command and arguments.
        args: Vec<Vec<u8>>,
    },
    /// One SQL text as a simple query.
    Postgres {
        /// The SQL.
        sql: String,
        /// Who connects.
        login: PgLogin,
    },
}

/// What came back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutcome {
    /// The request reached the service and an answer came back.
    pub ok: bool,
    /// Why not, when `!ok`.
    pub error: String,
    /// HTTP status; 0 for TCP and on transport failure.
    pub status: u16,
    /// HTTP response headers.
    pub headers: Vec<(String, String)>,
    /// HTTP body, or the TCP reply line without its line ending.
    pub body: Vec<u8>,
    /// From the start of the connect to the end of the answer (or the failure).
    pub duration: Duration,
    /// A redis step's reply.
    pub redis: Option<RedisReply>,
    /// A postgres step's result.
    pub postgres: Option<PgResult>,
}

/// Sends `req` to `addr` (`host:port`) and waits at most `timeout` for the answer.
pub(crate) async fn run(addr: &str, req: &StepRequest, timeout: Duration) -> StepOutcome {
    let start = Instant::now();
    let mut outcome = match req {
        StepRequest::Http {
            method,
            path,
            headers,
            body,
        } => {
            let req = HttpRequest {
                method: method_or_get(method),
                path: path_or_root(path),
                headers,
                body,
            };
            match http::send(addr, addr, &req, timeout).await {
                Ok(resp) => StepOutcome {
                    ok: true,
                    status: resp.status,
                    headers: resp.headers,
                    body: resp.body,
                    ..StepOutcome::default()
                },
                Err(e) => failed(e.to_string(), Vec::new()),
            }
        }
        StepRequest::Tcp { line } => {
            match tokio::time::timeout(timeout, tcp_line(addr, line)).await {
                Ok(Ok(reply)) => StepOutcome {
                    ok: true,
                    body: reply,
                    ..StepOutcome::default()
                },
                Ok(Err((error, partial))) => failed(error, partial),
                Err(_) => failed(
                    HttpError::Timeout {
                        addr: addr.to_owned(),
                        timeout,
                    }
                    .to_string(),
                    Vec::new(),
                ),
            }
        }
        StepRequest::Redis { args } => {
            match step_db::with_timeout(addr, timeout, step_db::redis(addr, args)).await {
                Ok(reply) => StepOutcome {
                    ok: true,
                    redis: Some(reply),
                    ..StepOutcome::default()
                },
                Err(e) => failed(e, Vec::new()),
            }
        }
        StepRequest::Postgres { sql, login } => {
            match step_db::with_timeout(addr, timeout, step_db::postgres(addr, login, sql)).await {
                Ok(result) => StepOutcome {
                    ok: true,
                    postgres: Some(result),
                    ..StepOutcome::default()
                },
                Err(e) => failed(e, Vec::new()),
            }
        }
    };
    outcome.duration = start.elapsed();
    tracing::debug!(addr, step = %summary(req), ok = outcome.ok, status = outcome.status,
        error = %outcome.error, duration = ?outcome.duration, "step answered");
    outcome
}

/// A one-line description for the trace: `POST /orders`, or the TCP line.
pub(crate) fn summary(req: &StepRequest) -> String {
    match req {
        StepRequest::Http { method, path, .. } => {
            format!("{} {}", method_or_get(method), path_or_root(path))
        }
        StepRequest::Tcp { line } => line.clone(),
        StepRequest::Redis { args } => args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        StepRequest::Postgres { sql, .. } => sql.clone(),
    }
}

fn method_or_get(method: &str) -> &str {
    if method.is_empty() { "GET" } else { method }
}

fn path_or_root(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

fn failed(error: String, body: Vec<u8>) -> StepOutcome {
    StepOutcome {
        ok: false,
        error,
        body,
        ..StepOutcome::default()
    }
}

/// Sends `line\n` and reads one line back. On failure, returns the error text and whatever partial
/// reply arrived.
async fn tcp_line(addr: &str, line: &str) -> Result<Vec<u8>, (String, Vec<u8>)> {
    let io_failed = |source| {
        (
            HttpError::Io {
                addr: addr.to_owned(),
                source,
            }
            .to_string(),
            Vec::new(),
        )
    };
    let mut stream = http::connect(addr)
        .await
        .map_err(|e| (e.to_string(), Vec::new()))?;
    let mut message = Vec::with_capacity(line.len() + 1);
    message.extend_from_slice(line.as_bytes());
    message.push(b'\n');
    stream.write_all(&message).await.map_err(io_failed)?;
    let mut reply = Vec::new();
    BufReader::new(stream)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut reply)
        .await
        .map_err(io_failed)?;
    if reply.last() != Some(&b'\n') {
        let error = if reply.len() > MAX_LINE {
            format!("{addr} answered a line longer than 1 MiB")
        } else if reply.is_empty() {
            HttpError::Closed {
                addr: addr.to_owned(),
            }
            .to_string()
        } else {
            format!(
                "{addr} closed the connection after {} bytes without ending the line",
                reply.len()
            )
        };
        return Err((error, reply));
    }
    reply.pop();
    if reply.last() == Some(&b'\r') {
        reply.pop();
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Accepts one connection, reads one line and answers `reply` (then closes).
    async fn line_server(reply: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut r = BufReader::new(stream);
            let mut got = Vec::new();
            r.read_until(b'\n', &mut got).await.unwrap();
            let reply = if reply == b"echo" {
                got.as_slice()
            } else {
                reply
            };
            r.get_mut().write_all(reply).await.unwrap();
            // Close gracefully: closing with unread input would reset the connection.
            r.get_mut().shutdown().await.unwrap();
            let _ = r.read_to_end(&mut got).await;
        });
        addr
    }

    fn tcp(line: &str) -> StepRequest {
        StepRequest::Tcp { line: line.into() }
    }

    const T: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn tcp_reads_one_line() {
        let out = run(&line_server(b"echo").await, &tcp("PING 1"), T).await;
        assert!(out.ok, "{}", out.error);
        assert_eq!((out.status, out.body.as_slice()), (0, b"PING 1".as_slice()));
        let out = run(&line_server(b"+OK\r\nmore\n").await, &tcp("x"), T).await;
        assert_eq!(out.body, b"+OK");
    }

    #[tokio::test]
    async fn tcp_hang_up_is_data() {
        let addr = line_server(b"").await;
        let out = run(&addr, &tcp("x"), T).await;
        assert!(!out.ok);
        assert_eq!(
            out.error,
            format!("{addr} closed the connection without answering")
        );
        let addr = line_server(b"half").await;
        let out = run(&addr, &tcp("x"), T).await;
        assert!(
            !out.ok && out.error.contains("after 4 bytes without ending the line"),
            "{}",
            out.error
        );
    }

    #[tokio::test]
    async fn tcp_timeout_and_refusal_are_data() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let out = run(&addr, &tcp("x"), Duration::from_millis(200)).await;
        assert_eq!(out.error, format!("no answer from {addr} within 200ms"));
        assert!(!out.ok && out.duration >= Duration::from_millis(200));
        drop(listener);
        let out = run(&addr, &tcp("x"), T).await;
        assert_eq!(
            (out.ok, out.error),
            (false, format!("connection refused by {addr}"))
        );
    }

    #[tokio::test]
    async fn http_step() {
        let addr =
            line_server(b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nbusy")
                .await;
        let req = StepRequest::Http {
            method: "POST".into(),
            path: "/orders".into(),
            headers: vec![],
            body: b"{}".to_vec(),
        };
        let out = run(&addr, &req, T).await;
        assert!(out.ok, "{}", out.error);
        assert_eq!((out.status, out.body.as_slice()), (503, b"busy".as_slice()));
        assert!(out.headers.contains(&("retry-after".into(), "1".into())));
    }

    #[test]
    fn summaries() {
        let req = |method: &str, path: &str| StepRequest::Http {
            method: method.into(),
            path: path.into(),
            headers: vec![],
            body: vec![],
        };
        assert_eq!(summary(&req("POST", "/orders")), "POST /orders");
        assert_eq!(summary(&req("", "")), "GET /");
        assert_eq!(summary(&tcp("SET k v")), "SET k v");
    }
}
