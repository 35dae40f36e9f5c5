//! http: HTTP/1.1 framing with `httparse` (the parser hyper uses), so bytes pass through unchanged:
//! keep-alive and pipelining, `Content-Length` and chunked bodies (a chunked body is buffered whole,
//! within the pump's bound), close-delimited responses, `HEAD`, 1xx, and upgrades (after which the
//! connection is copied raw). A rule matches the method and a glob over the path (query string
//! excluded).

use super::pump::{Hint, MAX_BUFFERED, ReplyCodec, ReplySplit, RequestCodec, Split};
use super::rules::{ProxyAction, RequestInfo};
use super::summarize;

/// Longest request or response head.
const MAX_HEAD: usize = 64 << 10;
/// Most headers in a head.
const MAX_HEADERS: usize = 128;

/// Client side.
pub(super) struct Requests;

impl RequestCodec for Requests {
    fn split(&mut self, buf: &[u8]) -> Split {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Split::Malformed(format!(
                    "an HTTP request head is longer than {MAX_HEAD} bytes"
                ));
            }
            Ok(httparse::Status::Partial) => return Split::NeedMore,
            Err(e) => return Split::Malformed(format!("malformed HTTP request: {e}")),
        };
        let method = req.method.unwrap_or_default().to_owned();
        let target = req.path.unwrap_or_default();
        let path = target.split('?').next().unwrap_or_default().to_owned();
        let framing = match body_framing(req.headers) {
            Ok(f) => f,
            Err(e) => return Split::Malformed(e),
        };
        let len = match framing {
            Body::Length(n) => match head.checked_add(n) {
                Some(len) => len,
                None => return Split::Malformed("Content-Length overflows".into()),
            },
            Body::Chunked => match chunked_len(&buf[head..]) {
                Ok(Some(n)) => head + n,
                Ok(None) => return Split::NeedMore,
                Err(e) => return Split::Malformed(e),
            },
            // A request without length has no body (RFC 9112 §6.3).
            Body::UntilClose => head,
        };
        let then_raw = method == "CONNECT" || has_token(req.headers, "connection", "upgrade");
        Split::Request {
            len,
            summary: format!("{method} {}", summarize(target, 80)),
            hint: if method == "HEAD" {
                Hint::Head
            } else {
                Hint::None
            },
            info: RequestInfo {
                verb: method,
                target: path,
            },
            then_raw,
        }
    }
}

/// Server side.
pub(super) struct Replies;

impl ReplyCodec for Replies {
    fn split(&mut self, buf: &[u8], hint: Option<Hint>) -> ReplySplit {
        let Some(hint) = hint else {
            // Bytes after a complete response with nothing asked: pass them on.
            return ReplySplit::Partial(buf.len());
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let head = match res.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return ReplySplit::Malformed(format!(
                    "a response head is longer than {MAX_HEAD} bytes"
                ));
            }
            Ok(httparse::Status::Partial) => return ReplySplit::NeedMore,
            Err(e) => return ReplySplit::Malformed(e.to_string()),
        };
        let status = res.code.unwrap_or_default();
        if (100..200).contains(&status) && status != 101 {
            // An interim response; the final one follows.
            return ReplySplit::Partial(head);
        }
        if hint == Hint::Head || status == 101 || status == 204 || status == 304 {
            return ReplySplit::Done(head);
        }
        match body_framing(res.headers) {
            Err(e) => ReplySplit::Malformed(e),
            Ok(Body::Length(n)) => match head.checked_add(n) {
                Some(len) => ReplySplit::Done(len),
                None => ReplySplit::Malformed("Content-Length overflows".into()),
            },
            Ok(Body::Chunked) => match chunked_len(&buf[head..]) {
                Ok(Some(n)) => ReplySplit::Done(head + n),
                Ok(None) => ReplySplit::NeedMore,
                Err(e) => ReplySplit::Malformed(e),
            },
            Ok(Body::UntilClose) => ReplySplit::UntilEof,
        }
    }

    fn fabricate(&mut self, action: &ProxyAction, hint: Hint) -> Vec<u8> {
        let (status, body, headers) = match action {
            ProxyAction::Error {
                status, message, ..
            } => {
                let message = if message.is_empty() {
                    "injected by faultd"
                } else {
                    message
                };
                let body = format!("{{\"error\":{}}}", json_string(message));
                let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
                (
                    if *status == 0 { 500 } else { *status },
                    body.into_bytes(),
                    headers,
                )
            }
            ProxyAction::Response {
                status,
                body,
                headers,
            } => (
                if *status == 0 { 200 } else { *status },
                body.clone(),
                headers
                    .iter()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            ProxyAction::Delay(_) | ProxyAction::Drop => return Vec::new(),
        };
        let reason = reason_phrase(status);
        let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
        for (k, v) in &headers {
            out.extend_from_slice(format!("{}: {}\r\n", one_line(k), one_line(v)).as_bytes());
        }
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        if hint != Hint::Head {
            out.extend_from_slice(&body);
        }
        out
    }

    fn detail(&self, action: &ProxyAction) -> String {
        match action {
            ProxyAction::Error { status, .. } => {
                format!("status {}", if *status == 0 { 500 } else { *status })
            }
            ProxyAction::Response { status, .. } => {
                format!("status {}", if *status == 0 { 200 } else { *status })
            }
            _ => String::new(),
        }
    }
}

enum Body {
    Length(usize),
    Chunked,
    UntilClose,
}

fn body_framing(headers: &[httparse::Header<'_>]) -> Result<Body, String> {
    if has_token(headers, "transfer-encoding", "chunked") {
        return Ok(Body::Chunked);
    }
    let mut length = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        let n = std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| "Content-Length is not a number".to_owned())?;
        if length.is_some_and(|l| l != n) {
            return Err("conflicting Content-Length headers".into());
        }
        length = Some(n);
    }
    Ok(length.map_or(Body::UntilClose, Body::Length))
}

fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Length of a complete chunked body at the start of `buf` (trailers included), `None` if incomplete.
fn chunked_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0usize;
    loop {
        let Some(eol) = find_crlf(&buf[at..]) else {
            return if buf.len() - at > 1024 {
                Err("a chunk size line is longer than 1 KiB".into())
            } else {
                Ok(None)
            };
        };
        let line = &buf[at..at + eol];
        let hex = line.split(|&b| b == b';').next().unwrap_or_default();
        let hex = std::str::from_utf8(hex).map_err(|_| "bad chunk size".to_owned())?;
        let size = usize::from_str_radix(hex.trim(), 16)
            .map_err(|_| format!("bad chunk size {:?}", hex.trim()))?;
        if size > MAX_BUFFERED {
            return Err(format!(
                "a chunk of {size} bytes is larger than {} MiB",
                MAX_BUFFERED >> 20
            ));
        }
        at += eol + 2;
        if size == 0 {
            // Trailers up to an empty line.
            loop {
                let Some(eol) = find_crlf(&buf[at..]) else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err("a chunk does not end with CRLF".into());
        }
        at += size + 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn reason_phrase(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_and_chunked_bodies_frame_requests() {
        let buf =
            b"POST /orders?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
        let Split::Request { len, info, .. } = Requests.split(buf) else {
            panic!("not a request")
        };
        assert_eq!(
            (len, info.verb.as_str(), info.target.as_str()),
            (51, "POST", "/orders")
        );
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let Split::Request { len, .. } = Requests.split(chunked) else {
            panic!("not a request")
        };
        assert_eq!(len, chunked.len());
        assert!(matches!(
            Requests.split(&chunked[..chunked.len() - 2]),
            Split::NeedMore
        ));
    }

    #[test]
    fn responses_frame_by_length_head_and_close() {
        let mut r = Replies;
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        assert!(matches!(
            r.split(ok, Some(Hint::None)),
            ReplySplit::Done(40)
        ));
        assert!(matches!(
            r.split(&ok[..38], Some(Hint::Head)),
            ReplySplit::Done(38)
        ));
        assert!(matches!(
            r.split(b"HTTP/1.0 200 OK\r\n\r\nxx", Some(Hint::None)),
            ReplySplit::UntilEof
        ));
    }

    #[test]
    fn fabricated_error_is_a_json_body() {
        let action = ProxyAction::Error {
            status: 503,
            message: "down".into(),
            sqlstate: String::new(),
        };
        let bytes = Replies.fabricate(&action, Hint::None);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n{\"error\":\"down\"}"), "{text}");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = Requests.split(&bytes);
            let _ = Replies.split(&bytes, Some(Hint::None));
            let _ = chunked_len(&bytes);
        }
    }
}
