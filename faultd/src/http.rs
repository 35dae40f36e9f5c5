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
    if e.is_parse() || e.is_parse_status() {
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

/// Connects to `addr` (`host:port`), naming a refused connection as such. Shared with the TCP
/// healthcheck and TCP steps; the caller bounds the time.
pub(crate) async fn connect(addr: &str) -> Result<TcpStream, HttpError> {
    TcpStream::connect(addr).await.map_err(|source| {
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
    let mut host = host_header;
    let mut builder = Request::builder().method(method).uri(uri);
    let headers = builder.headers_mut().expect("method and URI are valid");
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
    headers.insert(header::HOST, host);
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(req.body.len()));
    for (name, value) in extra {
        headers.append(name, value);
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(req.body)))
        .map_err(|e| bad(e.to_string()))
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
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

    fn get(path: &str) -> HttpRequest<'_> {
        HttpRequest {
            method: "GET",
            path,
            headers: &[],
            body: b"",
        }
    }

    /// Serves one connection: reads the request head, answers `reply`, then (if `close`) ends its
    /// side. Yields all the bytes the client sent.
    async fn serve(reply: Vec<u8>, close: bool) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut r = BufReader::new(stream);
            let mut request = Vec::new();
            while r.read_until(b'\n', &mut request).await.unwrap() > 0
                && !request.ends_with(b"\r\n\r\n")
            {}
            // The client may hang up early (body cap): write errors are expected then.
            let _ = r.get_mut().write_all(&reply).await;
            if close {
                let _ = r.get_mut().shutdown().await;
            }
            // Drain until the client closes, so the close is graceful rather than a reset.
            let _ = r.read_to_end(&mut request).await;
            request
        });
        (addr, task)
    }

    /// Sends `GET /` to a server answering `raw` and closing.
    async fn fetch(raw: &[u8]) -> (String, Result<HttpResponse, HttpError>) {
        let (addr, _server) = serve(raw.to_vec(), true).await;
        let result = send(&addr, "h", &get("/"), T).await;
        (addr, result)
    }

    #[test]
    fn parse_url_forms() {
        let ok = |u: &str| parse_url(u).unwrap();
        assert_eq!(
            ok("http://127.0.0.1:8080/health"),
            ("127.0.0.1:8080".into(), "/health".into())
        );
        assert_eq!(
            ok("127.0.0.1:8080/a/b?x=1"),
            ("127.0.0.1:8080".into(), "/a/b?x=1".into())
        );
        assert_eq!(
            ok("localhost:8080/health"),
            ("localhost:8080".into(), "/health".into())
        );
        assert_eq!(ok("HTTP://example"), ("example:80".into(), "/".into()));
        assert_eq!(ok("localhost:9?q"), ("localhost:9".into(), "/?q".into()));
        assert_eq!(ok("[::1]:8080/x#frag"), ("[::1]:8080".into(), "/x".into()));
        assert_eq!(ok("[::1]/x"), ("[::1]:80".into(), "/x".into()));
    }

    #[test]
    fn parse_url_rejects() {
        let err = |u: &str| parse_url(u).unwrap_err().to_string();
        assert!(err("https://a:1/").contains("https is not supported"));
        assert!(err("ftp://a/").contains("unsupported scheme"));
        assert!(err("http://:80/").contains("host is missing"));
        assert!(err("a:http/").contains("port"));
        assert!(err("a:70000/").contains("port"));
        assert!(err("::1/").contains("brackets"));
    }

    #[test]
    fn bad_requests_are_refused_before_connecting() {
        let evil = [("X".to_owned(), "a\r\nInjected: 1".to_owned())];
        let req = HttpRequest {
            headers: &evil,
            ..get("/")
        };
        assert!(matches!(
            build_request("h", &req),
            Err(HttpError::BadRequest(_))
        ));
        assert!(build_request("h", &get("no-slash")).is_err());
        assert!(build_request("h", &get("/a b")).is_err());
        let req = HttpRequest {
            method: "GE T",
            ..get("/")
        };
        assert!(build_request("h", &req).is_err());
    }

    #[tokio::test]
    async fn request_sets_framing_and_host() {
        let (addr, server) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            true,
        )
        .await;
        let headers = [
            ("X-Id".to_owned(), "7".to_owned()),
            ("connection".to_owned(), "keep-alive".to_owned()),
        ];
        let req = HttpRequest {
            method: "POST",
            path: "/orders",
            headers: &headers,
            body: b"{}",
        };
        let resp = send(&addr, "svc:80", &req, T).await.unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, b"ok".as_slice()));
        let request = String::from_utf8(server.await.unwrap()).unwrap();
        assert_eq!(
            request,
            "POST /orders HTTP/1.1\r\nHost: svc:80\r\nConnection: close\r\nContent-Length: 2\r\n\
             X-Id: 7\r\n\r\n{}"
        );
        // A Host header replaces the default one.
        let (addr, server) = serve(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), true).await;
        let host = [("host".to_owned(), "other".to_owned())];
        let req = HttpRequest {
            headers: &host,
            ..get("/health")
        };
        assert_eq!(send(&addr, "svc", &req, T).await.unwrap().status, 204);
        let request = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(
            request.starts_with("GET /health HTTP/1.1\r\nHost: other\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn answer_sent_on_accept() {
        // The server answers before reading anything; hyper alone would call that a protocol error.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream
                .write_all(b"HTTP/1.1 503 X\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            stream.shutdown().await.unwrap();
            let _ = stream.read_to_end(&mut Vec::new()).await;
        });
        assert_eq!(send(&addr, "h", &get("/"), T).await.unwrap().status, 503);
    }

    #[tokio::test]
    async fn content_length_body_and_lower_cased_headers() {
        let (_, r) =
            fetch(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhello").await;
        let r = r.unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(
            r.headers,
            vec![
                ("content-length".into(), "5".into()),
                ("x-a".into(), "b".into())
            ]
        );
        assert_eq!(r.body, b"hello");
    }

    #[tokio::test]
    async fn chunked_body_and_interim_response() {
        let raw =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
        let r = fetch(raw).await.1.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, b"abc0123456789".as_slice())
        );
    }

    #[tokio::test]
    async fn body_until_eof_and_bare_newlines() {
        let r = fetch(b"HTTP/1.0 200 OK\nServer: t\n\nall of it")
            .await
            .1
            .unwrap();
        assert_eq!(r.body, b"all of it");
        let r = fetch(b"HTTP/1.1 204 No Content\r\n\r\n").await.1.unwrap();
        assert!(r.body.is_empty());
    }

    #[tokio::test]
    async fn malformed_and_truncated() {
        let (addr, e) = fetch(b"").await;
        assert_eq!(
            e.unwrap_err().to_string(),
            format!("{addr} closed the connection without answering")
        );
        let (addr, e) = fetch(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        assert_eq!(
            e.unwrap_err().to_string(),
            format!("malformed response from {addr}: invalid HTTP version parsed")
        );
        let e = fetch(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .1
            .unwrap_err();
        assert!(e.to_string().contains("after 3 of 10 body bytes"), "{e}");
        let e = fetch(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
            .await
            .1
            .unwrap_err();
        assert!(e.to_string().contains("after 2 body bytes"), "{e}");
        let e = fetch(b"HTTP/1.1 200 OK\r\nContent-").await.1.unwrap_err();
        assert!(e.to_string().contains("middle of the response head"), "{e}");
    }

    #[tokio::test]
    async fn body_is_capped() {
        // Declared too large: refused before any body byte is read.
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        let (addr, _server) = serve(big.into_bytes(), false).await;
        let e = send(&addr, "h", &get("/"), T).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("response body from {addr} exceeds the 16 MiB limit")
        );
        // Streamed past the cap, chunked or until close.
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..=MAX_BODY / (1 << 20) {
            chunked.extend_from_slice(b"100000\r\n");
            chunked.resize(chunked.len() + (1 << 20), b'x');
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let mut until_close = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        until_close.resize(until_close.len() + MAX_BODY + 1, b'x');
        for raw in [chunked, until_close] {
            let (_, e) = fetch(&raw).await;
            assert!(matches!(e, Err(HttpError::BodyTooLarge { .. })), "{e:?}");
        }
        // Exactly the cap is fine.
        let mut full =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY}\r\n\r\n").into_bytes();
        full.resize(full.len() + MAX_BODY, b'x');
        assert_eq!(fetch(&full).await.1.unwrap().body.len(), MAX_BODY);
    }

    #[tokio::test]
    async fn timeout_in_the_middle_of_the_body() {
        // Head and part of the body, then silence with the connection open.
        let (addr, _server) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            false,
        )
        .await;
        let start = std::time::Instant::now();
        let e = send(&addr, "h", &get("/"), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), format!("no answer from {addr} within 300ms"));
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn refused_and_timeout_messages() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // The kernel completes the handshake, but nobody ever answers.
        let e = send(&addr, "h", &get("/"), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), format!("no answer from {addr} within 300ms"));
        drop(listener);
        // A port bound without listening refuses connections. A dropped listener is not enough: a
        // child forked meanwhile by another test (the probe tests fork) may still hold it, and the
        // connect then ends in ECONNRESET when that child exits.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        let e = send(&addr, "h", &get("/"), T).await.unwrap_err();
        assert_eq!(e.to_string(), format!("connection refused by {addr}"));
    }

    #[test]
    fn durations_read_naturally() {
        let d = |ms| DisplayDuration(Duration::from_millis(ms)).to_string();
        assert_eq!(
            [d(2000), d(500), d(1500), d(1234)],
            ["2s", "500ms", "1.5s", "1234ms"]
        );
        assert_eq!(
            DisplayDuration(Duration::from_micros(40)).to_string(),
            "40µs"
        );
    }
}
