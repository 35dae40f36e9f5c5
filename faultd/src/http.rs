//! A minimal HTTP/1.1 client for healthchecks and scenario steps.
//!
//! One request per connection (`Connection: close`), plain HTTP only. The response body is read by
//! `Content-Length`, by chunked transfer coding, or until the server closes, and is capped at
//! [`MAX_BODY`]. Errors are worded for the person reading a test report.

use std::fmt;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest response body accepted (1 MiB).
pub const MAX_BODY: usize = 1 << 20;

/// Longest status or header line accepted.
const MAX_LINE: u64 = 16 * 1024;

/// Most header lines accepted in one response.
const MAX_HEADERS: usize = 256;

/// One request to send.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Request target, e.g. `/orders?id=3`.
    pub path: &'a str,
    /// Extra headers. `Connection` and `Content-Length` are set by [`send`] and ignored here; a `Host`
    /// header replaces the default one.
    pub headers: &'a [(String, String)],
    /// Request body; may be empty.
    pub body: &'a [u8],
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Headers in the order received, names as sent by the server.
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
    /// The answer is not HTTP/1.x as this client understands it.
    #[error("malformed response from {addr}: {reason}")]
    Malformed {
        /// `host:port`.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The body is larger than [`MAX_BODY`].
    #[error("response body from {addr} exceeds the 1 MiB limit")]
    BodyTooLarge {
        /// `host:port`.
        addr: String,
    },
}

/// Formats a duration the way people write it: `2s`, `500ms`, `1.5s`.
#[derive(Debug, Clone, Copy)]
pub struct DisplayDuration(pub Duration);

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
pub async fn send(
    addr: &str,
    host_header: &str,
    req: &HttpRequest<'_>,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let head = request_head(host_header, req)?;
    let exchange = async {
        let mut stream = connect(addr).await?;
        let io_err = |source| HttpError::Io {
            addr: addr.to_owned(),
            source,
        };
        stream.write_all(&head).await.map_err(io_err)?;
        stream.write_all(req.body).await.map_err(io_err)?;
        stream.flush().await.map_err(io_err)?;
        let head_only = req.method.eq_ignore_ascii_case("HEAD");
        read_response(&mut BufReader::new(stream), head_only)
            .await
            .map_err(|e| e.at(addr))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout {
            addr: addr.to_owned(),
            timeout,
        }),
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
pub fn parse_url(url: &str) -> Result<(String, String), HttpError> {
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

/// Serializes the request line and headers.
fn request_head(host_header: &str, req: &HttpRequest<'_>) -> Result<Vec<u8>, HttpError> {
    let has_line_break = |s: &str| s.contains(['\r', '\n']);
    if req.method.is_empty() || req.method.contains(char::is_whitespace) {
        return Err(HttpError::BadRequest(format!(
            "method {:?} is not a single word",
            req.method
        )));
    }
    if (!req.path.starts_with('/') && req.path != "*") || req.path.contains(char::is_whitespace) {
        return Err(HttpError::BadRequest(format!(
            "path {:?} must start with '/' and contain no spaces",
            req.path
        )));
    }
    let mut host = host_header;
    let mut extra = String::new();
    for (name, value) in req.headers {
        if name.is_empty()
            || name.contains([':', ' '])
            || has_line_break(name)
            || has_line_break(value)
        {
            return Err(HttpError::BadRequest(format!(
                "header {name:?}: {value:?} is not valid"
            )));
        }
        if name.eq_ignore_ascii_case("host") {
            host = value;
        } else if !name.eq_ignore_ascii_case("connection")
            && !name.eq_ignore_ascii_case("content-length")
        {
            extra.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if has_line_break(host) {
        return Err(HttpError::BadRequest(format!(
            "host {host:?} contains a line break"
        )));
    }
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n",
        req.method,
        req.path,
        req.body.len()
    );
    Ok(head.into_bytes())
}

/// A response problem before the peer's address is attached.
#[derive(Debug)]
enum ReadError {
    Closed,
    Io(io::Error),
    Malformed(String),
    TooLarge,
}

impl ReadError {
    fn at(self, addr: &str) -> HttpError {
        let addr = addr.to_owned();
        match self {
            Self::Closed => HttpError::Closed { addr },
            Self::Io(source) => HttpError::Io { addr, source },
            Self::Malformed(reason) => HttpError::Malformed { addr, reason },
            Self::TooLarge => HttpError::BodyTooLarge { addr },
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Reads one response: skips interim 1xx answers, then the head and the body.
async fn read_response<R: AsyncBufRead + Unpin>(
    r: &mut R,
    head_only: bool,
) -> Result<HttpResponse, ReadError> {
    let mut first = true;
    loop {
        let (status, headers) = read_head(r, first).await?;
        first = false;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let no_body = head_only || (100..200).contains(&status) || status == 204 || status == 304;
        let body = if no_body {
            Vec::new()
        } else {
            read_body(r, &headers).await?
        };
        return Ok(HttpResponse {
            status,
            headers,
            body,
        });
    }
}

/// Reads the status line and headers up to the empty line.
async fn read_head<R: AsyncBufRead + Unpin>(
    r: &mut R,
    first: bool,
) -> Result<(u16, Vec<(String, String)>), ReadError> {
    let status_line = match read_line(r).await? {
        Some(line) => line,
        None if first => return Err(ReadError::Closed),
        None => {
            return Err(ReadError::Malformed(
                "connection closed before the final response".into(),
            ));
        }
    };
    let status = parse_status_line(&status_line)?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r).await?.ok_or_else(|| {
            ReadError::Malformed("connection closed in the middle of the headers".into())
        })?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        if headers.len() == MAX_HEADERS {
            return Err(ReadError::Malformed(format!(
                "more than {MAX_HEADERS} headers"
            )));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ReadError::Malformed(format!("header line {line:?} has no ':'")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

/// Parses `HTTP/1.1 200 OK` into 200.
fn parse_status_line(line: &str) -> Result<u16, ReadError> {
    let malformed = || ReadError::Malformed(format!("status line {line:?} is not HTTP/1.x"));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(malformed());
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 {
        return Err(malformed());
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..600).contains(c))
        .ok_or_else(malformed)
}

/// Reads one line without its `\r\n`; `None` at end of stream before any byte.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<String>, ReadError> {
    let mut buf = Vec::new();
    let n = (&mut *r).take(MAX_LINE).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n as u64 == MAX_LINE {
            ReadError::Malformed(format!("a line is longer than {MAX_LINE} bytes"))
        } else {
            ReadError::Malformed("connection closed in the middle of a line".into())
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| ReadError::Malformed("a status or header line is not UTF-8".into()))
}

/// Value of the first header called `name` (case-insensitive).
fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads the body as the headers frame it.
async fn read_body<R: AsyncBufRead + Unpin>(
    r: &mut R,
    headers: &[(String, String)],
) -> Result<Vec<u8>, ReadError> {
    let chunked = header(headers, "transfer-encoding")
        .and_then(|te| te.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
    if chunked {
        return read_chunked(r).await;
    }
    if let Some(len) = header(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ReadError::Malformed(format!("Content-Length {len:?} is not a number")))?;
        if len > MAX_BODY {
            return Err(ReadError::TooLarge);
        }
        return read_exact_body(r, len).await;
    }
    let mut body = Vec::new();
    (&mut *r)
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .await?;
    if body.len() > MAX_BODY {
        return Err(ReadError::TooLarge);
    }
    Ok(body)
}

/// Reads exactly `len` body bytes.
async fn read_exact_body<R: AsyncBufRead + Unpin>(
    r: &mut R,
    len: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::with_capacity(len);
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(ReadError::Malformed(format!(
            "connection closed after {} of {len} body bytes",
            body.len()
        )));
    }
    Ok(body)
}

/// Decodes a chunked body and skips its trailers.
async fn read_chunked<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let truncated =
        || ReadError::Malformed("connection closed in the middle of a chunked body".into());
    let mut body = Vec::new();
    loop {
        let line = read_line(r).await?.ok_or_else(truncated)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| ReadError::Malformed(format!("chunk size {size:?} is not hexadecimal")))?;
        if size == 0 {
            break;
        }
        if size > MAX_BODY - body.len() {
            return Err(ReadError::TooLarge);
        }
        body.extend(read_exact_body(r, size).await?);
        if read_line(r).await?.as_deref() != Some("") {
            return Err(ReadError::Malformed(
                "a chunk is not followed by CRLF".into(),
            ));
        }
    }
    while !read_line(r).await?.ok_or_else(truncated)?.is_empty() {}
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn parse(raw: &[u8]) -> Result<HttpResponse, HttpError> {
        let mut r = raw;
        read_response(&mut r, false).await.map_err(|e| e.at("h:1"))
    }

    fn get(path: &str) -> HttpRequest<'_> {
        HttpRequest {
            method: "GET",
            path,
            headers: &[],
            body: b"",
        }
    }

    /// Serves one connection: reads the request head, answers `reply`, closes.
    async fn serve_once(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut r = BufReader::new(stream);
            let mut request = Vec::new();
            loop {
                let n = r.read_until(b'\n', &mut request).await.unwrap();
                if n == 0 || request.ends_with(b"\r\n\r\n") {
                    break;
                }
            }
            r.get_mut().write_all(reply).await.unwrap();
            request
        });
        (addr, task)
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
    fn request_head_sets_framing_and_host() {
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
        let head = String::from_utf8(request_head("svc:80", &req).unwrap()).unwrap();
        assert_eq!(
            head,
            "POST /orders HTTP/1.1\r\nHost: svc:80\r\nConnection: close\r\nContent-Length: 2\r\n\
             X-Id: 7\r\n\r\n"
        );
        let evil = [("X".to_owned(), "a\r\nInjected: 1".to_owned())];
        let req = HttpRequest {
            headers: &evil,
            ..req
        };
        assert!(matches!(
            request_head("h", &req),
            Err(HttpError::BadRequest(_))
        ));
        assert!(request_head("h", &get("no-slash")).is_err());
    }

    #[tokio::test]
    async fn content_length_body() {
        let r =
            parse(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhelloEXTRA").await;
        let r = r.unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(
            r.headers,
            vec![
                ("Content-Length".into(), "5".into()),
                ("X-A".into(), "b".into())
            ]
        );
        assert_eq!(r.body, b"hello");
    }

    #[tokio::test]
    async fn chunked_body_and_interim_response() {
        let raw =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
        let r = parse(raw).await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, b"abc0123456789".as_slice())
        );
    }

    #[tokio::test]
    async fn body_until_eof_and_bare_newlines() {
        let r = parse(b"HTTP/1.0 200 OK\nServer: t\n\nall of it")
            .await
            .unwrap();
        assert_eq!(r.body, b"all of it");
        let r = parse(b"HTTP/1.1 204 No Content\r\n\r\nignored")
            .await
            .unwrap();
        assert!(r.body.is_empty());
    }

    #[tokio::test]
    async fn malformed_and_truncated() {
        assert!(matches!(parse(b"").await, Err(HttpError::Closed { .. })));
        let e = parse(b"SSH-2.0-OpenSSH\r\n\r\n")
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "malformed response from h:1: status line \"SSH-2.0-OpenSSH\" is not HTTP/1.x"
        );
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("after 3 of 10 body bytes"), "{e}");
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-").await.unwrap_err();
        assert!(matches!(e, HttpError::Malformed { .. }), "{e}");
    }

    #[tokio::test]
    async fn body_is_capped() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(
            parse(big.as_bytes()).await,
            Err(HttpError::BodyTooLarge { .. })
        ));
        let mut raw = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        raw.resize(raw.len() + MAX_BODY + 1, b'x');
        assert!(matches!(
            parse(&raw).await,
            Err(HttpError::BodyTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn send_round_trip() {
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let resp = send(&addr, "svc", &get("/health"), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, b"ok".as_slice()));
        let request = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(request.starts_with("GET /health HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n"));
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
        let e = send(&addr, "h", &get("/"), Duration::from_secs(2))
            .await
            .unwrap_err();
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
