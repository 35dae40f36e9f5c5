//! HTTP/1.1 on the raw socket fd: requests are read with `read(2)` and parsed by `httparse`;
//! responses are written by the caller with `write(2)` (see the crate docs for why).

use faultd_demo::{read_fd, write_all_fd};

/// Largest accepted request head (request line + headers).
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// Largest accepted request body.
const MAX_BODY: usize = 1024 * 1024;

/// Most headers accepted in one request.
const MAX_HEADERS: usize = 64;

/// A parsed HTTP request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub method: String,
    /// Percent-decoded path, without the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    content_type: &'static str,
    pub body: String,
}

impl Response {
    /// A plain-text response; the body gets a trailing newline (like Go's `http.Error`).
    pub(crate) fn text(status: u16, msg: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{msg}\n"),
        }
    }

    /// A JSON response; the body gets a trailing newline (like Go's `json.Encoder`).
    pub(crate) fn json(status: u16, json: String) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: json + "\n",
        }
    }

    /// The response as bytes for one `write(2)` loop.
    pub(crate) fn encode(&self) -> Vec<u8> {
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Why a request could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The peer closed or the socket failed before a full request: just close.
    Closed,
    /// Answer with this status and message, then close.
    Reject(u16, String),
}

/// Parses a request head from the start of `buf`: `Ok(None)` while it is incomplete, else the
/// request without its body and the offset where the body starts.
fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, ReadError> {
    let bad = |e: String| ReadError::Reject(400, format!("bad request: {e}"));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let body_start = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ReadError::Reject(431, "request head too large".into()));
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let (method, target) = (parsed.method.unwrap_or(""), parsed.path.unwrap_or(""));
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(format!("malformed method {method:?}")));
    }
    if !target.starts_with('/') {
        return Err(bad(format!("unsupported request target {target:?}")));
    }
    let raw_path = target.split(['?', '#']).next().unwrap_or("");
    let path =
        percent_decode(raw_path).ok_or_else(|| bad(format!("bad escape in path {raw_path:?}")))?;
    let headers = parsed
        .headers
        .iter()
        .map(|h| match std::str::from_utf8(h.value) {
            Ok(value) => Ok((h.name.to_owned(), value.trim().to_owned())),
            Err(_) => Err(bad("head is not UTF-8".into())),
        })
        .collect::<Result<_, _>>()?;
    let req = Request {
        method: method.to_owned(),
        path,
        headers,
        body: Vec::new(),
    };
    Ok(Some((req, body_start)))
}

/// Decodes `%XX` escapes; `None` on a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads one request from `fd` (head, then a `Content-Length` body).
pub(crate) fn read_request(fd: i32) -> Result<Request, ReadError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (mut req, body_start) = loop {
        if let Some(found) = parse_head(&buf)? {
            break found;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Reject(431, "request head too large".into()));
        }
        match read_fd(fd, &mut chunk) {
            Ok(0) | Err(_) => return Err(ReadError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if req.header("Transfer-Encoding").is_some() {
        return Err(ReadError::Reject(
            501,
            "chunked request bodies are not supported; send Content-Length".into(),
        ));
    }
    let len = match req.header("Content-Length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ReadError::Reject(400, format!("bad request: Content-Length {v:?}")))?,
    };
    if len > MAX_BODY {
        return Err(ReadError::Reject(413, "request body too large".into()));
    }
    if len > 0
        && req
            .header("Expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        && buf.len() == body_start
    {
        write_all_fd(fd, b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|_| ReadError::Closed)?;
    }
    let mut body = buf.split_off(body_start);
    while body.len() < len {
        match read_fd(fd, &mut chunk) {
            Ok(0) | Err(_) => return Err(ReadError::Closed),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(len);
    req.body = body;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<(Request, usize)>, ReadError> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn parses_request_head() {
        let raw =
            "POST /orders?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length:  12 \r\nX-Empty:\r\n\r\n{}";
        let (req, body_start) = head(raw).unwrap().unwrap();
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/orders")
        );
        assert_eq!(
            req.headers,
            vec![
                ("Host".to_owned(), "a".to_owned()),
                ("Content-Length".to_owned(), "12".to_owned()),
                ("X-Empty".to_owned(), String::new()),
            ]
        );
        assert_eq!(&raw[body_start..], "{}");
        let (req, body_start) = head("GET /inventory/wid%67et HTTP/1.0\n\nbody")
            .unwrap()
            .unwrap();
        assert_eq!((req.path.as_str(), body_start), ("/inventory/widget", 34));
    }

    #[test]
    fn incomplete_and_bad_heads() {
        assert!(matches!(head("GET /x"), Ok(None)));
        assert!(matches!(head("GET / HTTP/1.1\r\n"), Ok(None)));
        for raw in [
            "GET x HTTP/1.1\r\n\r\n",
            "get /x HTTP/1.1\r\n\r\n",
            "GET /x HTTP/2\r\n\r\n",
            "GET /%zz HTTP/1.1\r\n\r\n",
            "GET /x HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert!(
                matches!(head(raw), Err(ReadError::Reject(400, _))),
                "{raw:?}"
            );
        }
        let not_utf8 = parse_head(b"GET /x HTTP/1.1\r\nX: \xff\r\n\r\n");
        assert!(matches!(not_utf8, Err(ReadError::Reject(400, _))));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(head(&many), Err(ReadError::Reject(431, _))));
    }
}
