//! The mock's servers: HTTP/1.1 with hyper, and a line protocol over TCP.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{MAX_BODY, MockConfig, MockError, MockResponse, Table};

/// Most bytes of a request body read (the rest is refused with 413).
const MAX_REQUEST_BODY: usize = 1 << 20;
/// Longest line a tcp mock reads; a longer one closes the connection.
const MAX_LINE: usize = MAX_BODY;

/// Why the mock stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum ServeError {
    /// The configuration became invalid between validation and use.
    #[error(transparent)]
    Config(#[from] MockError),
    /// Listening failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime did not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Serves `config` until the process is killed.
pub(super) fn run(config: MockConfig) -> Result<(), ServeError> {
    let table = Arc::new(Table::new(&config)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: config.listen.clone(),
                    source,
                })?;
        eprintln!(
            "faultd mock: {} on {} ({} routes)",
            config.protocol,
            config.listen,
            config.routes.len()
        );
        let http = config.protocol == "http";
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let table = table.clone();
            if http {
                tokio::spawn(serve_http(stream, table));
            } else {
                tokio::spawn(serve_lines(stream, table));
            }
        }
    })
}

async fn serve_http(stream: TcpStream, table: Arc<Table>) {
    let service = hyper::service::service_fn(move |req| answer_http(req, table.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn answer_http(
    req: Request<Incoming>,
    table: Arc<Table>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    // Read (and bound) the body so the connection stays usable.
    if Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
        .is_err()
    {
        return Ok(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        ));
    }
    let Some(r) = table.answer(&method, &path) else {
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    };
    delay(r).await;
    let status =
        StatusCode::from_u16(if r.status == 0 { 200 } else { r.status }).unwrap_or(StatusCode::OK);
    let mut response = Response::new(Full::new(Bytes::from(r.body.clone())));
    *response.status_mut() = status;
    for (name, value) in &r.headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    Ok(response)
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

async fn delay(r: &MockResponse) {
    if r.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(r.delay_ms)).await;
    }
}

/// Answers each line by the table; no answer (or a line longer than [`MAX_LINE`]) closes.
async fn serve_lines(stream: TcpStream, table: Arc<Table>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n > MAX_LINE => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let Some(r) = table.answer("", text) else {
            return;
        };
        delay(r).await;
        let mut reply = Vec::with_capacity(r.body.len() + 1);
        reply.extend_from_slice(r.body.as_bytes());
        reply.push(b'\n');
        if write.write_all(&reply).await.is_err() {
            return;
        }
    }
}
