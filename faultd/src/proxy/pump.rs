//! The connection pump every protocol shares: two tasks per client connection.
//!
//! The client task reads the client's bytes, lets the protocol's [`RequestCodec`] split them into
//! requests, decides each against the proxy's rules and either forwards it (after a delay, for
//! `delay`), or queues a fabricated answer (`error`, `response`) or a close (`drop`). For every
//! request it queues an [`Expect`] *before* forwarding, so the reply task always knows, in order,
//! what comes next: a reply from the server, a fabricated one, or the end. A fault on the third
//! command of a pipeline thus answers only that one. The reply task reads the server's bytes,
//! splits them into replies with the [`ReplyCodec`], forwards them byte for byte and records one
//! timeline event per request.
//!
//! Buffers are reused; a unit larger than [`MAX_BUFFERED`] or a malformed stream closes the connection
//! with a `closed` event naming the reason.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Proxy;
use super::rules::{self, ProxyAction, ProxyRule, RequestInfo};

/// Most bytes of one request or reply unit held at once.
pub(super) const MAX_BUFFERED: usize = 64 << 20;
/// Read size.
const CHUNK: usize = 16 << 10;
/// Requests of one connection waiting for their answer; a client that pipelines more waits.
const MAX_IN_FLIGHT: usize = 1024;

/// What the request side made of the start of the client's buffer.
pub(super) enum Split {
    /// Not a whole unit yet.
    NeedMore,
    /// A request of `len` bytes (may exceed the buffer: the rest is streamed after it).
    Request {
        /// Bytes of the request, head and body.
        len: usize,
        /// What rules match on.
        info: RequestInfo,
        /// What the trace shows.
        summary: String,
        /// Passed to the reply side (e.g. an HTTP HEAD has no body).
        hint: Hint,
        /// After this request, both directions become raw copies (upgrades, pub/sub).
        then_raw: bool,
    },
    /// Bytes forwarded without a request of their own (authentication, copy data).
    Forward(usize),
    /// Bytes answered by the proxy itself, never forwarded (a refused SSLRequest).
    Answer(usize, &'static [u8]),
    /// The stream cannot be parsed: close with this reason.
    Malformed(String),
}

/// Protocol detail the reply side needs about the request it answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Hint {
    /// Nothing special.
    #[default]
    None,
    /// An HTTP HEAD request: the response has no body.
    Head,
}

/// What the reply side made of the start of the server's buffer.
pub(super) enum ReplySplit {
    /// Not a whole unit yet.
    NeedMore,
    /// The first `len` bytes belong to the current reply, which is not finished (may exceed the buffer).
    Partial(usize),
    /// The first `len` bytes finish the current reply (may exceed the buffer).
    Done(usize),
    /// The reply lasts until the server closes.
    UntilEof,
    /// The stream cannot be parsed.
    Malformed(String),
}

/// Splits a client's stream into requests.
pub(super) trait RequestCodec: Send + 'static {
    /// Splits the start of `buf`.
    fn split(&mut self, buf: &[u8]) -> Split;
}

/// Splits a server's stream into replies and fabricates replies.
pub(super) trait ReplyCodec: Send + 'static {
    /// Splits the start of `buf`; `hint` is `None` for bytes nobody asked for (notices, pushes).
    fn split(&mut self, buf: &[u8], hint: Option<Hint>) -> ReplySplit;
    /// The bytes that answer a request in the server's place.
    fn fabricate(&mut self, action: &ProxyAction, hint: Hint) -> Vec<u8>;
    /// A short description of a fabricated answer for the trace (`status 503`, `23505`).
    fn detail(&self, action: &ProxyAction) -> String;
}

/// One request's place in the reply order.
enum Expect {
    /// The server answers it.
    Upstream(Pending),
    /// The proxy answers it.
    Inject(Pending),
    /// The proxy closes the connection (a `drop`, or a malformed request: reason).
    Close(Pending),
    /// The proxy answers with fixed bytes, outside any request (a refused SSLRequest).
    Fixed(&'static [u8]),
    /// From now on both directions are copied raw.
    Raw,
}

/// What the event of a request needs.
struct Pending {
    summary: String,
    hint: Hint,
    rule: Option<Arc<ProxyRule>>,
    delay: Duration,
    started: Instant,
    /// Why the connection is closed (malformed traffic), for `Close` without a rule.
    reason: Option<String>,
    /// Its event is already on the timeline (a delay is recorded when it starts).
    recorded: bool,
}

/// Pumps one accepted client connection to `upstream` until either side ends.
pub(super) async fn serve(
    proxy: Arc<Proxy>,
    client: TcpStream,
    requests: Box<dyn RequestCodec>,
    replies: Box<dyn ReplyCodec>,
) {
    let server = match proxy.net.connect(&proxy.upstream).await {
        Ok(s) => s,
        Err(e) => {
            proxy.record_closed("connect", format!("cannot reach {}: {e}", proxy.upstream));
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    let reply_task = tokio::spawn(reply_side(proxy.clone(), server_r, client_w, replies, rx));
    request_side(proxy, client_r, server_w, requests, tx).await;
    let _ = reply_task.await;
}

async fn request_side(
    proxy: Arc<Proxy>,
    mut client: OwnedReadHalf,
    mut server: OwnedWriteHalf,
    mut codec: Box<dyn RequestCodec>,
    tx: mpsc::Sender<Expect>,
) {
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        match codec.split(&buf) {
            Split::NeedMore => {
                if buf.len() >= MAX_BUFFERED {
                    let _ = tx
                        .send(close(format!(
                            "a request is larger than {} MiB",
                            MAX_BUFFERED >> 20
                        )))
                        .await;
                    return;
                }
                buf.reserve(CHUNK);
                match client.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = server.shutdown().await;
                        return;
                    }
                    Ok(_) => {}
                }
            }
            Split::Malformed(reason) => {
                let _ = tx.send(close(reason)).await;
                return;
            }
            Split::Answer(len, reply) => {
                let _ = buf.split_to(len);
                let _ = tx.send(Expect::Fixed(reply)).await;
            }
            Split::Forward(len) => {
                if forward(&mut buf, len, &mut client, &mut server)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Split::Request {
                len,
                info,
                summary,
                hint,
                then_raw,
            } => {
                let active = proxy.rules();
                let rule = rules::decide(&active, &info).cloned();
                let mut pending = Pending {
                    summary,
                    hint,
                    rule: rule.clone(),
                    delay: Duration::ZERO,
                    started: Instant::now(),
                    reason: None,
                    recorded: false,
                };
                match rule.as_ref().map(|r| &r.spec.action) {
                    None | Some(ProxyAction::Delay(_)) => {
                        if let Some(ProxyAction::Delay(d)) = rule.as_ref().map(|r| &r.spec.action) {
                            // Recorded as it starts: the client may give up (or the session end)
                            // before the delayed request is answered.
                            pending.delay = *d;
                            proxy.record(&pending, "delay", String::new());
                            pending.recorded = true;
                            tokio::time::sleep(*d).await;
                        }
                        if tx.send(Expect::Upstream(pending)).await.is_err()
                            || forward(&mut buf, len, &mut client, &mut server)
                                .await
                                .is_err()
                        {
                            return;
                        }
                        if then_raw {
                            let _ = tx.send(Expect::Raw).await;
                            raw_copy(buf, client, server).await;
                            return;
                        }
                    }
                    Some(ProxyAction::Drop) => {
                        let _ = tx.send(Expect::Close(pending)).await;
                        return;
                    }
                    Some(_) => {
                        if tx.send(Expect::Inject(pending)).await.is_err()
                            || discard(&mut buf, len, &mut client).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
    }
}

fn close(reason: String) -> Expect {
    Expect::Close(Pending {
        summary: String::new(),
        hint: Hint::None,
        rule: None,
        delay: Duration::ZERO,
        started: Instant::now(),
        reason: Some(reason),
        recorded: false,
    })
}

/// Writes the first `len` bytes of the stream (buffered, then read on) to `to`.
async fn forward(
    buf: &mut BytesMut,
    len: usize,
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let have = len.min(buf.len());
    to.write_all(&buf[..have]).await?;
    let _ = buf.split_to(have);
    let mut rest = (len - have) as u64;
    if rest > 0 {
        let copied = tokio::io::copy(&mut (&mut *from).take(rest), to).await?;
        rest -= copied;
        if rest > 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Drops the first `len` bytes of the stream.
async fn discard(buf: &mut BytesMut, len: usize, from: &mut OwnedReadHalf) -> std::io::Result<()> {
    let have = len.min(buf.len());
    let _ = buf.split_to(have);
    let rest = (len - have) as u64;
    if rest > 0 {
        tokio::io::copy(&mut (&mut *from).take(rest), &mut tokio::io::sink()).await?;
    }
    Ok(())
}

async fn raw_copy(buf: BytesMut, mut from: OwnedReadHalf, mut to: OwnedWriteHalf) {
    if to.write_all(&buf).await.is_ok() {
        let _ = tokio::io::copy(&mut from, &mut to).await;
    }
    let _ = to.shutdown().await;
}

async fn reply_side(
    proxy: Arc<Proxy>,
    server: OwnedReadHalf,
    client: OwnedWriteHalf,
    codec: Box<dyn ReplyCodec>,
    mut rx: mpsc::Receiver<Expect>,
) {
    let mut queue: VecDeque<Expect> = VecDeque::new();
    reply_loop(&proxy, server, client, codec, &mut rx, &mut queue).await;
    // Requests the connection ended before answering still get their event.
    rx.close();
    while let Ok(e) = rx.try_recv() {
        queue.push_back(e);
    }
    for e in queue {
        if let Expect::Upstream(p) | Expect::Inject(p) | Expect::Close(p) = e
            && !p.summary.is_empty()
        {
            let decision = p.rule.as_ref().map_or("pass", |r| r.spec.action.name());
            proxy.record(
                &p,
                decision,
                "the connection closed before the answer".into(),
            );
        }
    }
}

async fn reply_loop(
    proxy: &Proxy,
    mut server: OwnedReadHalf,
    mut client: OwnedWriteHalf,
    mut codec: Box<dyn ReplyCodec>,
    rx: &mut mpsc::Receiver<Expect>,
    queue: &mut VecDeque<Expect>,
) {
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut server_open = true;
    loop {
        // Answers the proxy gives itself, and closes, leave as soon as they reach the head.
        while let Some(head) = queue.front() {
            match head {
                Expect::Upstream(_) => break,
                Expect::Raw => {
                    let _ = client.write_all(&buf).await;
                    let _ = tokio::io::copy(&mut server, &mut client).await;
                    let _ = client.shutdown().await;
                    return;
                }
                Expect::Inject(_) | Expect::Close(_) | Expect::Fixed(_) => {}
            }
            match queue.pop_front() {
                Some(Expect::Inject(p)) => {
                    let Some(rule) = &p.rule else { continue };
                    let answer = codec.fabricate(&rule.spec.action, p.hint);
                    let written = client.write_all(&answer).await;
                    let detail = codec.detail(&rule.spec.action);
                    proxy.record(&p, rule.spec.action.name(), detail);
                    if written.is_err() {
                        return;
                    }
                }
                Some(Expect::Fixed(bytes)) if client.write_all(bytes).await.is_err() => return,
                Some(Expect::Close(p)) => {
                    let _ = client.shutdown().await;
                    match (&p.rule, &p.reason) {
                        (Some(_), _) => proxy.record(&p, "drop", String::new()),
                        (None, Some(reason)) => proxy.record_closed("", reason.clone()),
                        (None, None) => {}
                    }
                    return;
                }
                _ => {}
            }
        }
        // Whole units already buffered leave before reading more.
        if !buf.is_empty() {
            let hint = match queue.front() {
                Some(Expect::Upstream(p)) => Some(p.hint),
                _ => None,
            };
            match codec.split(&buf, hint) {
                ReplySplit::NeedMore => {}
                ReplySplit::Malformed(reason) => {
                    let _ = client.shutdown().await;
                    proxy.record_closed("", format!("malformed reply from the server: {reason}"));
                    return;
                }
                ReplySplit::UntilEof => {
                    let _ = client.write_all(&buf).await;
                    let _ = tokio::io::copy(&mut server, &mut client).await;
                    if let Some(Expect::Upstream(p)) = queue.pop_front() {
                        proxy.record(&p, pass_name(&p), String::new());
                    }
                    let _ = client.shutdown().await;
                    return;
                }
                ReplySplit::Partial(len) if len > 0 => {
                    if forward(&mut buf, len, &mut server, &mut client)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                ReplySplit::Done(len) if len > 0 => {
                    let forwarded = forward(&mut buf, len, &mut server, &mut client).await;
                    if hint.is_some()
                        && let Some(Expect::Upstream(p)) = queue.pop_front()
                    {
                        let detail = match &forwarded {
                            Ok(()) => String::new(),
                            Err(_) => "the client left before the reply".into(),
                        };
                        proxy.record(&p, pass_name(&p), detail);
                    }
                    if forwarded.is_err() {
                        return;
                    }
                    continue;
                }
                ReplySplit::Partial(_) | ReplySplit::Done(_) => {}
            }
        }
        if buf.len() >= MAX_BUFFERED {
            let _ = client.shutdown().await;
            proxy.record_closed(
                "",
                format!("a reply is larger than {} MiB", MAX_BUFFERED >> 20),
            );
            return;
        }
        buf.reserve(CHUNK);
        tokio::select! {
            biased;
            expect = rx.recv() => match expect {
                Some(e) => queue.push_back(e),
                None if queue.is_empty() && buf.is_empty() => {
                    let _ = client.shutdown().await;
                    return;
                }
                // The client stopped sending: finish what is owed.
                None if !server_open => return,
                None => {
                    if !read_more(&mut server, &mut buf, &mut server_open).await {
                        let _ = client.shutdown().await;
                        return;
                    }
                }
            },
            ok = read_more(&mut server, &mut buf, &mut server_open), if server_open => {
                if !ok {
                    let _ = client.write_all(&buf).await;
                    let _ = client.shutdown().await;
                    return;
                }
            }
        }
    }
}

/// Reads more of the server's stream; false at its end.
async fn read_more(server: &mut OwnedReadHalf, buf: &mut BytesMut, open: &mut bool) -> bool {
    match server.read_buf(buf).await {
        Ok(0) | Err(_) => {
            *open = false;
            false
        }
        Ok(_) => true,
    }
}

fn pass_name(p: &Pending) -> &'static str {
    if p.rule.is_some() { "delay" } else { "pass" }
}

impl Proxy {
    fn record(&self, p: &Pending, decision: &'static str, detail: String) {
        if p.recorded {
            return;
        }
        self.emit(super::ProxyEventData {
            summary: p.summary.clone(),
            decision,
            detail,
            label: p.rule.as_ref().and_then(|r| r.spec.label.clone()),
            rule_id: p.rule.as_ref().map_or(0, |r| r.id),
            duration: p.started.elapsed(),
            delay: p.delay,
        });
    }

    fn record_closed(&self, summary: &str, reason: String) {
        tracing::debug!(proxy = %self.upstream, "closing a proxied connection: {reason}");
        self.emit(super::ProxyEventData {
            summary: summary.to_owned(),
            decision: "closed",
            detail: reason,
            label: None,
            rule_id: 0,
            duration: Duration::ZERO,
            delay: Duration::ZERO,
        });
    }
}
