//! Redis and Postgres steps: one command or one SQL text against an interface, the server's answer
//! as data (an error reply or ErrorResponse is a result, not a failure of the step).

use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use redis_protocol::resp2::decode::decode as decode_resp2;
use redis_protocol::resp2::types::OwnedFrame as Resp2;
use redis_protocol::resp3::decode::complete::decode as decode_resp3;
use redis_protocol::resp3::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest reply a step reads.
const MAX_REPLY: usize = 64 << 20;
/// Most rows a postgres step keeps.
const MAX_ROWS: usize = 100_000;

/// One RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisReply {
    /// A bulk (blob, verbatim) string.
    Bulk(Vec<u8>),
    /// A simple string (`OK`).
    Simple(String),
    /// An error reply's text.
    Error(String),
    /// An integer (booleans are 0 and 1).
    Integer(i64),
    /// An array (sets, maps flattened key, value).
    Array(Vec<RedisReply>),
    /// Nil.
    Null,
}

/// What a postgres step returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PgResult {
    /// Rows of the last statement, text format; `None` for NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows returned or affected, from the command tag.
    pub count: u64,
    /// The server's error: SQLSTATE and message.
    pub error: Option<(String, String)>,
}

/// Sends one command and reads one reply.
pub(crate) async fn redis(addr: &str, args: &[Vec<u8>]) -> Result<RedisReply, String> {
    let mut stream = crate::netns::Net::current()
        .connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // The step speaks RESP2 (no HELLO 3), so replies are RESP2.
        match decode_resp2(&buf) {
            Ok(Some((frame, _))) => return Ok(resp2_value(frame)),
            Ok(None) => {}
            Err(e) => match decode_resp3(&buf) {
                Ok(Some((frame, _))) => return Ok(redis_value(frame)),
                Ok(None) => {}
                Err(_) => return Err(format!("{addr} sent a malformed reply: {e}")),
            },
        }
        if buf.len() > MAX_REPLY {
            return Err(format!("{addr} sent a reply larger than 64 MiB"));
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => return Err(format!("{addr} closed the connection without answering")),
            Ok(_) => {}
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
}

fn resp2_value(frame: Resp2) -> RedisReply {
    match frame {
        Resp2::SimpleString(s) => RedisReply::Simple(String::from_utf8_lossy(&s).into_owned()),
        Resp2::Error(e) => RedisReply::Error(e),
        Resp2::Integer(n) => RedisReply::Integer(n),
        Resp2::BulkString(b) => RedisReply::Bulk(b),
        Resp2::Array(items) => RedisReply::Array(items.into_iter().map(resp2_value).collect()),
        Resp2::Null => RedisReply::Null,
    }
}

fn redis_value(frame: OwnedFrame) -> RedisReply {
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    match frame {
        OwnedFrame::BlobString { data, .. }
        | OwnedFrame::VerbatimString { data, .. }
        | OwnedFrame::ChunkedString(data) => RedisReply::Bulk(data),
        OwnedFrame::SimpleString { data, .. } | OwnedFrame::BigNumber { data, .. } => {
            RedisReply::Simple(text(data))
        }
        OwnedFrame::SimpleError { data, .. } => RedisReply::Error(data),
        OwnedFrame::BlobError { data, .. } => RedisReply::Error(text(data)),
        OwnedFrame::Number { data, .. } => RedisReply::Integer(data),
        OwnedFrame::Boolean { data, .. } => RedisReply::Integer(data.into()),
        OwnedFrame::Double { data, .. } => RedisReply::Simple(data.to_string()),
        OwnedFrame::Null => RedisReply::Null,
        OwnedFrame::Array { data, .. } | OwnedFrame::Push { data, .. } => {
            RedisReply::Array(data.into_iter().map(redis_value).collect())
        }
        OwnedFrame::Set { data, .. } => {
            RedisReply::Array(data.into_iter().map(redis_value).collect())
        }
        OwnedFrame::Map { data, .. } => RedisReply::Array(
            data.into_iter()
                .flat_map(|(k, v)| [redis_value(k), redis_value(v)])
                .collect(),
        ),
        OwnedFrame::Hello { .. } => RedisReply::Null,
    }
}

/// Who a postgres step connects as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgLogin {
    /// Role; empty means `postgres`.
    pub user: String,
    /// Database; empty means `postgres`.
    pub database: String,
    /// Password, for password, md5 or SCRAM authentication.
    pub password: String,
}

/// Connects, runs `sql` as a simple query and returns the result of its last statement.
pub(crate) async fn postgres(addr: &str, login: &PgLogin, sql: &str) -> Result<PgResult, String> {
    let user = if login.user.is_empty() {
        "postgres"
    } else {
        &login.user
    };
    let database = if login.database.is_empty() {
        "postgres"
    } else {
        &login.database
    };
    let io = |e: std::io::Error| format!("{addr}: {e}");
    let mut conn = PgConn {
        stream: crate::netns::Net::current()
            .connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?,
        buf: BytesMut::with_capacity(8192),
        addr,
    };
    let mut out = BytesMut::new();
    frontend::startup_message([("user", user), ("database", database)], &mut out).map_err(io)?;
    conn.send(&mut out).await?;
    let mut scram: Option<sasl::ScramSha256> = None;
    loop {
        match conn.next().await? {
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(login.password.as_bytes(), &mut out).map_err(io)?;
                conn.send(&mut out).await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = md5_hash(user.as_bytes(), login.password.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut out).map_err(io)?;
                conn.send(&mut out).await?;
            }
            Message::AuthenticationSasl(_) => {
                let s = sasl::ScramSha256::new(
                    login.password.as_bytes(),
                    sasl::ChannelBinding::unsupported(),
                );
                frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut out)
                    .map_err(io)?;
                conn.send(&mut out).await?;
                scram = Some(s);
            }
            Message::AuthenticationSaslContinue(body) => {
                let s = scram.as_mut().ok_or("SCRAM continue without a start")?;
                s.update(body.data()).map_err(io)?;
                frontend::sasl_response(s.message(), &mut out).map_err(io)?;
                conn.send(&mut out).await?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let s = scram.as_mut().ok_or("SCRAM final without a start")?;
                s.finish(body.data()).map_err(io)?;
            }
            Message::ErrorResponse(body) => {
                let (code, message) = error_fields(&body)?;
                return Err(format!(
                    "{addr} refused the login as {user}: {message} ({code})"
                ));
            }
            Message::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    frontend::query(sql, &mut out).map_err(io)?;
    conn.send(&mut out).await?;
    let mut result = PgResult::default();
    loop {
        match conn.next().await? {
            Message::RowDescription(_) => result.rows.clear(),
            Message::DataRow(row) => {
                if result.rows.len() >= MAX_ROWS {
                    continue;
                }
                let data = row.buffer();
                let mut cells = Vec::new();
                let mut ranges = row.ranges();
                while let Some(range) = ranges.next().map_err(io)? {
                    cells.push(range.map(|r| String::from_utf8_lossy(&data[r]).into_owned()));
                }
                result.rows.push(cells);
            }
            Message::CommandComplete(body) => {
                let tag = body.tag().map_err(io)?;
                result.count = tag
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
            Message::ErrorResponse(body) => result.error = Some(error_fields(&body)?),
            Message::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    frontend::terminate(&mut out);
    let _ = conn.send(&mut out).await;
    Ok(result)
}

fn error_fields(
    body: &postgres_protocol::message::backend::ErrorResponseBody,
) -> Result<(String, String), String> {
    let (mut code, mut message) = (String::new(), String::new());
    let mut fields = body.fields();
    while let Some(f) = fields.next().map_err(|e| e.to_string())? {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    Ok((code, message))
}

struct PgConn<'a> {
    stream: TcpStream,
    buf: BytesMut,
    addr: &'a str,
}

impl PgConn<'_> {
    async fn send(&mut self, out: &mut BytesMut) -> Result<(), String> {
        let r = self.stream.write_all(out).await;
        out.clear();
        r.map_err(|e| format!("{}: {e}", self.addr))
    }

    async fn next(&mut self) -> Result<Message, String> {
        loop {
            if let Some(m) =
                Message::parse(&mut self.buf).map_err(|e| format!("{}: {e}", self.addr))?
            {
                return Ok(m);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(format!("{} sent a message larger than 64 MiB", self.addr));
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => {
                    return Err(format!(
                        "{} closed the connection before the query finished",
                        self.addr
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{}: {e}", self.addr)),
            }
        }
    }
}

/// How long to wait at most: a step's timeout.
pub(crate) async fn with_timeout<T>(
    addr: &str,
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {addr} within {timeout:?}")))
}
