//! The HTTP/1.1 client for healthchecks and scenario steps, on hyper.
//!
//! One request per connection (`Connection: close`), plain HTTP only. Bodies are capped at
//! [`MAX_BODY`]. Every failure is an [`HttpError`] worded for the person reading a test report.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::netns::Net;

/// Largest response body accepted (16 MiB); a larger one is [`HttpError::BodyTooLarge`].
pub(crate) const MAX_BODY: usize = 16 << 20;

/// Most header lines accepted in one response.
const MAX_HEADERS: usize = 256;

/// One request to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpRequest<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Request target, e.g. `/orders?id=3`.
    pub path: &'a str,
    /// Extra headers. `Connection` and `Content-Length` are set by [`send`]; a `Host` header replaces
    /// the default one.
    pub headers: &'a [(String, String)],
    /// Request body; may be empty.
    pub body: &'a [u8],
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Headers in the order received, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body after transfer decoding.
    pub body: Vec<u8>,
}

/// Why a request got no usable response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request cannot be written (e.g. a line break inside a header).
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// Nothing listens on the address.
    #[error("connection refused by {addr}")]
    Refused {
        /// `host:port`.
        addr: String,
    },
    /// Connecting failed for another reason (unknown host, unreachable network…).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The whole exchange did not finish in time.
    #[error("no answer from {addr} within {}", DisplayDuration(*.timeout))]
    Timeout {
        /// `host:port`.
        addr: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The peer closed the connection before sending anything.
    #[error("{addr} closed the connection without answering")]
    Closed {
        /// `host:port`.
        addr: String,
    },
    /// Reading or writing failed after the connection was made (e.g. reset by peer).
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The answer is not HTTP/1.x, or it stops in the middle.
    #[error("malformed response from {addr}: {reason}")]
    Malformed {
        /// `host:port`.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The body is larger than [`MAX_BODY`].
    #[error("response body from {addr} exceeds the 16 MiB limit")]
    BodyTooLarge {
        /// `host:port`.
        addr: String,
    },
}

/// Formats a duration the way people write it: `2s`, `500ms`, `1.5s`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DisplayDuration(pub Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 && !self.0.is_zero() {
            write!(f, "{}µs", self.0.as_micros())
        } else if ms < 1000 || !ms.is_multiple_of(100) {
            write!(f, "{ms}ms")
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{}.{}s", ms / 1000, (ms % 1000) / 100)
        }
    }
}

/// Sends `req` to `addr` (`host:port`) with `Host: host_header` and reads the response, all within
/// `timeout`.
pub(crate) async fn send(
    addr: &str,
    host_header: &str,
    req: &HttpRequest<'_>,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let request = build_request(host_header, req)?;
    match tokio::time::timeout(timeout, exchange(addr, request)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout {
            addr: addr.to_owned(),
            timeout,
        }),
    }
}

/// Connects, sends `request` and reads the response on one hyper HTTP/1 connection.
async fn exchange(addr: &str, request: Request<Full<Bytes>>) -> Result<HttpResponse, HttpError> {
    let stream = connect(addr).await?;
    let answered = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(Watched {
        stream,
        answered: answered.clone(),
        sent: false,
        reader: None,
    });
    let (mut sender, conn) = http1::Builder::new()
        .title_case_headers(true)
        .max_headers(MAX_HEADERS)
        .handshake(io)
        .await
        .map_err(|e| classify(e, addr, None))?;
    // The connection's own result is ignored: hyper hands its errors to the request or the body.
    let drive = async {
        let _ = conn.await;
        std::future::pending().await
    };
    let response = async {
        let resp = sender.send_request(request).await.map_err(|e| {
            if e.is_incomplete_message() && !answered.load(Ordering::Relaxed) {
                HttpError::Closed {
                    addr: addr.to_owned(),
                }
            } else {
                classify(e, addr, None)
            }
        })?;
        let (parts, body) = resp.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes());
                (name.as_str().to_owned(), value.into_owned())
            })
            .collect();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers,
            body: read_body(body, addr).await?,
        })
    };
    tokio::select! {
        result = response => result,
        result = drive => result,
    }
}

/// Collects the body, refusing one larger than [`MAX_BODY`].
async fn read_body(mut body: Incoming, addr: &str) -> Result<Vec<u8>, HttpError> {
    let too_large = || HttpError::BodyTooLarge {
        addr: addr.to_owned(),
    };
    let hint = body.size_hint();
    if hint.lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    let declared = hint.exact();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify(e, addr, Some((out.len(), declared))))?;
        if let Ok(data) = frame.into_data() {
            if data.len() > MAX_BODY - out.len() {
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    match declared {
        Some(len) if (out.len() as u64) < len => Err(truncated(addr, out.len(), declared)),
        _ => Ok(out),
    }
}

/// Names a hyper error; `body` is `(bytes read, declared length)` once the head has arrived.
fn classify(e: hyper::Error, addr: &str, body: Option<(usize, Option<u64>)>) -> HttpError {
    let malformed = |reason: String| HttpError::Malformed {
        addr: addr.to_owned(),
        reason,
    };
    if e.is_parse() {
        return malformed(e.to_string());
    }
    let incomplete = e.is_incomplete_message();
    let io_cause = std::error::Error::source(&e)
        .and_then(|c| c.downcast_ref::<io::Error>())
        .map(|c| io::Error::new(c.kind(), c.to_string()));
    match (io_cause, body) {
        (Some(c), Some((got, declared))) if c.kind() == io::ErrorKind::UnexpectedEof => {
            truncated(addr, got, declared)
        }
        (Some(source), _) => HttpError::Io {
            addr: addr.to_owned(),
            source,
        },
        (None, Some((got, declared))) if incomplete => truncated(addr, got, declared),
        (None, None) if incomplete => {
            malformed("connection closed in the middle of the response head".into())
        }
        (None, _) => HttpError::Io {
            addr: addr.to_owned(),
            source: io::Error::other(e),
        },
    }
}

/// The peer closed the connection after `got` body bytes.
fn truncated(addr: &str, got: usize, declared: Option<u64>) -> HttpError {
    let reason = match declared {
        Some(len) => format!("connection closed after {got} of {len} body bytes"),
        None => format!("connection closed after {got} body bytes, in the middle of the body"),
    };
    HttpError::Malformed {
        addr: addr.to_owned(),
        reason,
    }
}

/// Connects to `addr` (`host:port`) from the current session's network ([`Net::current`]), naming a
/// refused connection as such. Shared with the TCP healthcheck and TCP steps; the caller bounds the
/// time.
pub(crate) async fn connect(addr: &str) -> Result<TcpStream, HttpError> {
    Net::current().connect(addr).await.map_err(|source| {
        if source.kind() == io::ErrorKind::ConnectionRefused {
            HttpError::Refused {
                addr: addr.to_owned(),
            }
        } else {
            HttpError::Connect {
                addr: addr.to_owned(),
                source,
            }
        }
    })
}

/// Splits `http://host:port/path`, `host:port/path` or `host/path` into (`host:port`, `/path`).
/// The port defaults to 80 and the path to `/`.
pub(crate) fn parse_url(url: &str) -> Result<(String, String), HttpError> {
    let bad = |reason: &str| HttpError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(bad(
                "https is not supported; faultd talks plain HTTP to services",
            ));
        }
        Some((scheme, _)) => return Err(bad(&format!("unsupported scheme {scheme:?}; use http"))),
        None => url,
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        return Err(bad("user names in URLs are not supported"));
    }
    // A port follows the last ':' unless that colon is inside an IPv6 literal ("[::1]").
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], &authority[i + 1..]),
        _ => (authority, "80"),
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("the host is missing"));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err(bad("write IPv6 addresses in brackets, e.g. [::1]:8080"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(bad("the port is not a number from 1 to 65535"));
    }
    Ok((format!("{host}:{port}"), path))
}

/// Builds the hyper request: method, target, headers, `Host`, `Connection: close` and
/// `Content-Length`.
fn build_request(
    host_header: &str,
    req: &HttpRequest<'_>,
) -> Result<Request<Full<Bytes>>, HttpError> {
    let bad = |what: String| HttpError::BadRequest(what);
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| bad(format!("method {:?} is not a single word", req.method)))?;
    let bad_path = || {
        bad(format!(
            "path {:?} must start with '/' and contain no spaces",
            req.path
        ))
    };
    if !req.path.starts_with('/') && req.path != "*" {
        return Err(bad_path());
    }
    let uri: Uri = req.path.parse().map_err(|_| bad_path())?;
    let mut request = Request::new(Full::new(Bytes::copy_from_slice(req.body)));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let mut host = host_header;
    let mut extra = Vec::new();
    for (name, value) in req.headers {
        let invalid = || bad(format!("header {name:?}: {value:?} is not valid"));
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value_str = value.as_str();
        let value = HeaderValue::from_str(value_str).map_err(|_| invalid())?;
        if name == header::HOST {
            host = value_str;
        } else if name != header::CONNECTION && name != header::CONTENT_LENGTH {
            extra.push((name, value));
        }
    }
    let host = HeaderValue::from_str(host)
        .map_err(|_| bad(format!("host {host:?} is not a valid header value")))?;
    let headers = request.headers_mut();
    headers.insert(header::HOST, host);
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(req.body.len()));
    for (name, value) in extra {
        headers.append(name, value);
    }
    Ok(request)
}

/// A TCP stream that reads nothing before the request is being written (hyper takes an answer that
/// arrives earlier, e.g. from a server that replies on accept, as a protocol error) and notes
/// whether any byte came back, to tell "closed without answering" from an answer cut short.
struct Watched {
    stream: TcpStream,
    answered: Arc<AtomicBool>,
    sent: bool,
    reader: Option<Waker>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.sent {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.answered.store(true, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.sent = true;
            if let Some(reader) = self.reader.take() {
                reader.wake();
            }
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
