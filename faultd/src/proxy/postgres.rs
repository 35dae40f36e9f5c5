//! postgres: protocol 3 framing with `postgres-protocol`'s message header. The startup exchange
//! (authentication included) passes through; an SSLRequest or GSSENCRequest is refused with `N`,
//! so the client continues in plain text. A request is a simple `Query`, or the extended-protocol
//! messages up to their `Sync`; its reply runs to the server's `ReadyForQuery`. An injected error
//! is an `ErrorResponse` followed by `ReadyForQuery`, so the connection stays usable.

use std::collections::HashMap;

use postgres_protocol::message::backend::Header;

use super::pump::{Hint, MAX_BUFFERED, ReplyCodec, ReplySplit, RequestCodec, Split};
use super::rules::{ProxyAction, RequestInfo};
use super::summarize;

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
/// Longest startup packet (the server's own limit is 10000).
const MAX_STARTUP: usize = 10_000;
/// Prepared statements remembered per connection (their SQL, for matching their executions).
const MAX_STATEMENTS: usize = 1024;

/// Client side.
#[derive(Default)]
pub(super) struct Requests {
    started: bool,
    /// Statement name (empty: the unnamed one) to its SQL, from Parse messages: a driver may parse
    /// and flush first, then bind and execute in a later unit.
    statements: HashMap<String, String>,
    /// The SQL of extended messages forwarded at a Flush, for the Sync that completes them.
    flushed: Option<String>,
}

impl RequestCodec for Requests {
    fn split(&mut self, buf: &[u8]) -> Split {
        if !self.started {
            return self.startup(buf);
        }
        let mut at = 0;
        let mut query: Option<String> = None;
        loop {
            let (tag, len) = match message(&buf[at..]) {
                Ok(Some(m)) => m,
                Ok(None) => return Split::NeedMore,
                Err(e) => return Split::Malformed(e),
            };
            let body = &buf[at + 5..at + len];
            match tag {
                b'Q' if at == 0 => return request(len, cstr(body)),
                b'P' => {
                    // Parse: statement name, then the query text.
                    let name = cstr(body);
                    let sql = cstr(body.get(name.len() + 1..).unwrap_or_default());
                    if self.statements.len() >= MAX_STATEMENTS {
                        self.statements.clear();
                    }
                    self.statements.insert(name, sql.clone());
                    query.get_or_insert(sql);
                }
                b'B' => {
                    // Bind: portal name, then the statement it executes.
                    let portal = cstr(body);
                    let statement = cstr(body.get(portal.len() + 1..).unwrap_or_default());
                    if query.is_none() {
                        query = self.statements.get(&statement).cloned();
                    }
                }
                b'D' | b'E' | b'C' => {}
                b'S' => {
                    let sql = query.or_else(|| self.flushed.take());
                    return request(at + len, sql.unwrap_or_else(|| "EXECUTE".into()));
                }
                // A Flush with nothing after it yet: the client may wait for replies before
                // syncing, so these messages go now; the Sync that follows carries their SQL.
                b'H' if message(&buf[at + len..]) == Ok(None) => {
                    if query.is_some() {
                        self.flushed = query;
                    }
                    return Split::Forward(at + len);
                }
                b'H' => {}
                // Everything else (password, copy data, terminate, a query after extended
                // messages) goes on its own.
                _ if at == 0 => return Split::Forward(len),
                _ => return Split::Forward(at),
            }
            at += len;
        }
    }
}

impl Requests {
    fn startup(&mut self, buf: &[u8]) -> Split {
        let Some(head) = buf.get(..8) else {
            return Split::NeedMore;
        };
        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let Ok(len) = usize::try_from(len) else {
            return Split::Malformed(format!("startup packet length {len} is negative"));
        };
        if !(8..=MAX_STARTUP).contains(&len) {
            return Split::Malformed(format!(
                "startup packet length {len} is not in 8..{MAX_STARTUP}"
            ));
        }
        if buf.len() < len {
            return Split::NeedMore;
        }
        match code {
            SSL_REQUEST | GSSENC_REQUEST => Split::Answer(len, b"N"),
            _ => {
                self.started = true;
                Split::Forward(len)
            }
        }
    }
}

fn request(len: usize, sql: String) -> Split {
    Split::Request {
        len,
        summary: summarize(&sql.split_whitespace().collect::<Vec<_>>().join(" "), 80),
        info: RequestInfo {
            verb: String::new(),
            target: sql,
        },
        hint: Hint::None,
        then_raw: false,
    }
}

/// The tag and total length of the message at the start of `buf`, if it is all there.
fn message(buf: &[u8]) -> Result<Option<(u8, usize)>, String> {
    let header = match Header::parse(buf) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let len = header.len() as usize + 1;
    if len > MAX_BUFFERED {
        return Err(format!(
            "a message of {len} bytes is larger than {} MiB",
            MAX_BUFFERED >> 20
        ));
    }
    Ok((buf.len() >= len).then_some((header.tag(), len)))
}

fn cstr(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// Server side.
pub(super) struct Replies {
    /// The transaction status of the last ReadyForQuery: `I`, `T` or `E`.
    status: u8,
}

impl Default for Replies {
    fn default() -> Self {
        Replies { status: b'I' }
    }
}

impl ReplyCodec for Replies {
    fn split(&mut self, buf: &[u8], hint: Option<Hint>) -> ReplySplit {
        let mut at = 0;
        loop {
            match message(&buf[at..]) {
                Err(e) => return ReplySplit::Malformed(e),
                Ok(None) => {
                    return if at == 0 {
                        ReplySplit::NeedMore
                    } else {
                        ReplySplit::Partial(at)
                    };
                }
                Ok(Some((tag, len))) => {
                    at += len;
                    if tag == b'Z' {
                        self.status = buf[at - 1];
                        if hint.is_some() {
                            return ReplySplit::Done(at);
                        }
                    }
                }
            }
        }
    }

    fn fabricate(&mut self, action: &ProxyAction, _: Hint) -> Vec<u8> {
        let (sqlstate, message) = error_fields(action);
        let mut fields = Vec::new();
        for (code, value) in [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', sqlstate),
            (b'M', message),
        ] {
            fields.push(code);
            fields.extend(value.bytes().filter(|&b| b != 0));
            fields.push(0);
        }
        fields.push(0);
        let mut out = Vec::with_capacity(fields.len() + 11);
        out.push(b'E');
        out.extend_from_slice(&((fields.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(&fields);
        // An error inside a transaction block fails the block, as the server's own would.
        let status = if self.status == b'I' { b'I' } else { b'E' };
        out.extend_from_slice(&[b'Z', 0, 0, 0, 5, status]);
        out
    }

    fn detail(&self, action: &ProxyAction) -> String {
        error_fields(action).0.to_owned()
    }
}

fn error_fields(action: &ProxyAction) -> (&str, &str) {
    match action {
        ProxyAction::Error {
            message, sqlstate, ..
        } => (
            if sqlstate.is_empty() {
                "XX000"
            } else {
                sqlstate
            },
            if message.is_empty() {
                "injected by faultd"
            } else {
                message
            },
        ),
        _ => ("XX000", "injected by faultd"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn ssl_is_refused_and_startup_forwarded() {
        let mut r = Requests::default();
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert!(matches!(r.split(&ssl), Split::Answer(8, b"N")));
        let mut startup = vec![0, 0, 0, 9, 0, 3, 0, 0, 0];
        assert!(matches!(r.split(&startup), Split::Forward(9)));
        startup.clear();
        let q = msg(b'Q', b"INSERT INTO t VALUES (1)\0");
        let Split::Request { len, info, .. } = r.split(&q) else {
            panic!("not a request")
        };
        assert_eq!(
            (len, info.target.as_str()),
            (q.len(), "INSERT INTO t VALUES (1)")
        );
    }

    #[test]
    fn extended_messages_form_one_request_up_to_sync() {
        let mut r = Requests {
            started: true,
            ..Requests::default()
        };
        let mut buf = msg(b'P', b"\0SELECT $1\0\0\0");
        buf.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        buf.extend(msg(b'E', b"\0\0\0\0\0"));
        assert!(matches!(r.split(&buf), Split::NeedMore));
        buf.extend(msg(b'S', b""));
        let Split::Request { len, info, .. } = r.split(&buf) else {
            panic!("not a request")
        };
        assert_eq!((len, info.target.as_str()), (buf.len(), "SELECT $1"));
        // Parse and flush first, bind and execute later: the execution carries the parsed SQL.
        let mut first = msg(b'P', b"s1\0INSERT INTO t VALUES ($1)\0\0\0");
        first.extend(msg(b'H', b""));
        assert!(matches!(r.split(&first), Split::Forward(n) if n == first.len()));
        let mut later = msg(b'B', b"\0s1\0\0\0\0\0\0\0");
        later.extend(msg(b'E', b"\0\0\0\0\0"));
        later.extend(msg(b'S', b""));
        let Split::Request { info, .. } = r.split(&later) else {
            panic!("not a request")
        };
        assert_eq!(info.target, "INSERT INTO t VALUES ($1)");
        // Parse, Flush and Sync in one write (pg8000): one request.
        let mut together = msg(b'P', b"\0DELETE FROM t\0\0\0");
        together.extend(msg(b'H', b""));
        together.extend(msg(b'S', b""));
        let Split::Request { len, info, .. } = r.split(&together) else {
            panic!("not a request")
        };
        assert_eq!(
            (len, info.target.as_str()),
            (together.len(), "DELETE FROM t")
        );
    }

    #[test]
    fn replies_run_to_ready_for_query() {
        let mut r = Replies::default();
        let mut buf = msg(b'C', b"INSERT 0 1\0");
        assert!(matches!(
            r.split(&buf, Some(Hint::None)),
            ReplySplit::Partial(_)
        ));
        buf.extend(msg(b'Z', b"T"));
        assert!(matches!(r.split(&buf, Some(Hint::None)), ReplySplit::Done(n) if n == buf.len()));
        let err = r.fabricate(
            &ProxyAction::Error {
                status: 0,
                message: "dup".into(),
                sqlstate: "23505".into(),
            },
            Hint::None,
        );
        assert_eq!(&err[err.len() - 6..], &[b'Z', 0, 0, 0, 5, b'E']);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = Requests::default().split(&bytes);
            let _ = Requests { started: true, ..Requests::default() }.split(&bytes);
            let _ = Replies::default().split(&bytes, Some(Hint::None));
        }
    }
}
