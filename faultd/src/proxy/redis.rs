//! redis: RESP2/RESP3 framing with `redis-protocol` (zero-copy range decoding). Requests are arrays
//! of bulk strings (or inline commands); a rule matches the command and its first key. `SUBSCRIBE`,
//! `PSUBSCRIBE`, `SSUBSCRIBE` and `MONITOR` switch the connection to a raw copy (their replies are
//! not one per command).

use redis_protocol::resp2::decode::decode_range as decode_request;
use redis_protocol::resp2::types::RangeFrame as Req;
use redis_protocol::resp3::decode::complete::decode_range as decode_resp3;

use super::pump::{Hint, ReplyCodec, ReplySplit, RequestCodec, Split};
use super::rules::{ProxyAction, RequestInfo};
use super::summarize;

/// Longest inline command line.
const MAX_INLINE: usize = 64 << 10;

/// Client side.
pub(super) struct Requests;

impl RequestCodec for Requests {
    fn split(&mut self, buf: &[u8]) -> Split {
        let Some(&first) = buf.first() else {
            return Split::NeedMore;
        };
        if first != b'*' {
            return inline(buf);
        }
        // Commands never nest: refuse `*1\r\n*...` before the decoder recurses into it.
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n")
            && buf.get(end + 2) == Some(&b'*')
        {
            return Split::Malformed(
                "a redis command is an array of bulk strings, not of arrays".into(),
            );
        }
        match decode_request(buf) {
            Ok(None) => Split::NeedMore,
            Err(e) => Split::Malformed(format!("malformed RESP request: {e}")),
            Ok(Some((Req::Array(items), len))) => {
                let arg = |i: usize| match items.get(i) {
                    Some(Req::BulkString((a, b)) | Req::SimpleString((a, b))) => {
                        String::from_utf8_lossy(&buf[*a..*b]).into_owned()
                    }
                    Some(Req::Integer(n)) => n.to_string(),
                    _ => String::new(),
                };
                request(len, arg(0), arg(1))
            }
            Ok(Some((_, _))) => Split::Malformed("a redis command must be an array".into()),
        }
    }
}

/// `PING\r\n`: the inline form redis also accepts.
fn inline(buf: &[u8]) -> Split {
    match buf.iter().position(|&b| b == b'\n') {
        None if buf.len() > MAX_INLINE => Split::Malformed(format!(
            "an inline command is longer than {MAX_INLINE} bytes"
        )),
        None => Split::NeedMore,
        Some(end) => {
            let line = String::from_utf8_lossy(&buf[..end]);
            let mut words = line.split_whitespace();
            let command = words.next().unwrap_or_default().to_owned();
            let key = words.next().unwrap_or_default().to_owned();
            if command.is_empty() {
                return Split::Forward(end + 1);
            }
            request(end + 1, command, key)
        }
    }
}

fn request(len: usize, command: String, key: String) -> Split {
    let command = command.to_ascii_uppercase();
    let then_raw = matches!(
        command.as_str(),
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "MONITOR"
    );
    let summary = if key.is_empty() {
        command.clone()
    } else {
        format!("{command} {}", summarize(&key, 60))
    };
    Split::Request {
        len,
        info: RequestInfo {
            verb: command,
            target: key,
        },
        summary,
        hint: Hint::None,
        then_raw,
    }
}

/// Server side.
pub(super) struct Replies;

impl ReplyCodec for Replies {
    fn split(&mut self, buf: &[u8], hint: Option<Hint>) -> ReplySplit {
        match reply_len(buf) {
            Ok(None) => ReplySplit::NeedMore,
            Ok(Some(len)) if hint.is_some() => ReplySplit::Done(len),
            // A push nobody asked for (RESP3 client tracking): forwarded as it comes.
            Ok(Some(len)) => ReplySplit::Partial(len),
            Err(e) => ReplySplit::Malformed(e),
        }
    }

    fn fabricate(&mut self, action: &ProxyAction, _: Hint) -> Vec<u8> {
        match action {
            ProxyAction::Error { message, .. } => {
                let message = if message.is_empty() {
                    "ERR injected by faultd"
                } else {
                    message
                };
                format!("-{}\r\n", one_line(message)).into_bytes()
            }
            ProxyAction::Response { body, .. } => {
                let mut out = format!("${}\r\n", body.len()).into_bytes();
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n");
                out
            }
            ProxyAction::Delay(_) | ProxyAction::Drop => Vec::new(),
        }
    }

    fn detail(&self, action: &ProxyAction) -> String {
        match action {
            ProxyAction::Error { message, .. } if !message.is_empty() => {
                summarize(&one_line(message), 60)
            }
            ProxyAction::Error { .. } => "ERR injected by faultd".into(),
            ProxyAction::Response { body, .. } => summarize(&String::from_utf8_lossy(body), 60),
            _ => String::new(),
        }
    }
}

/// Length of the whole reply at the start of `buf`: RESP2 (`$-1` nil and all) unless the reply
/// uses RESP3 types (after `HELLO 3`), which the RESP3 decoder reads.
pub(crate) fn reply_len(buf: &[u8]) -> Result<Option<usize>, String> {
    if matches!(buf.first(), Some(b'+' | b'-' | b':' | b'$' | b'*'))
        && let Ok(found) = decode_request(buf)
    {
        return Ok(found.map(|(_, len)| len));
    }
    decode_resp3(buf)
        .map(|found| found.map(|(_, len)| len))
        .map_err(|e| e.to_string())
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(buf: &[u8]) -> Split {
        Requests.split(buf)
    }

    #[test]
    fn pipelined_commands_split_one_by_one() {
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n";
        let Split::Request { len, info, .. } = split(buf) else {
            panic!("not a request")
        };
        assert_eq!(
            (len, info.verb.as_str(), info.target.as_str()),
            (20, "GET", "a")
        );
        let Split::Request { info, .. } = split(&buf[len..]) else {
            panic!("not a request")
        };
        assert_eq!(info.verb, "PING");
        assert!(matches!(split(&buf[..10]), Split::NeedMore));
    }

    #[test]
    fn nested_arrays_and_garbage_are_malformed() {
        assert!(matches!(split(b"*1\r\n*1\r\n*1\r\n"), Split::Malformed(_)));
        assert!(matches!(split(b"*x\r\n"), Split::Malformed(_)));
    }

    #[test]
    fn inline_commands_are_requests() {
        let Split::Request { len, info, .. } = split(b"ping\r\n") else {
            panic!("not a request")
        };
        assert_eq!((len, info.verb.as_str()), (6, "PING"));
    }

    #[test]
    fn replies_split_per_frame() {
        let mut r = Replies;
        assert!(matches!(
            r.split(b"+OK\r\n$1\r\nx", Some(Hint::None)),
            ReplySplit::Done(5)
        ));
        assert!(matches!(
            r.split(b"$5\r\nab", Some(Hint::None)),
            ReplySplit::NeedMore
        ));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = split(&bytes);
            let _ = Replies.split(&bytes, Some(Hint::None));
        }
    }
}
