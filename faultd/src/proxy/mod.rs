//! Protocol proxies: faultd stands one in front of a service interface (http, redis, postgres or
//! tcp) for the life of a session, and its rules answer, delay or drop chosen requests.
//!
//! Every protocol runs over one connection pump ([`pump`]); a protocol is a pair of codecs that split
//! the client's stream into requests and the server's into replies ([`http`], [`redis`],
//! [`postgres`]; [`tcp`] decides once per connection and copies raw). Without a matching rule the
//! bytes pass through unchanged. Rules come from the session's fault sets ([`rules`]); each decision
//! is a [`ProxyEvent`](crate::trace::ProxyEvent) on the session's timeline.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::netns::Net;
pub use crate::session::Protocol;
use crate::trace::{EventBus, EventKind, ProxyEvent};

mod http;
mod postgres;
mod pump;
mod redis;
pub mod rules;
mod tcp;

pub use rules::{MatchSpec, ProxyAction, ProxyRule, ProxyRuleError, ProxyRuleSpec};

/// Most client connections one proxy serves at once; further ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

/// One proxy: where it listens, where it forwards, and its active rules.
pub struct Proxy {
    service: Arc<str>,
    interface: String,
    protocol: Protocol,
    upstream: String,
    /// The network it listens in and connects from (the session's namespace, or the host's).
    net: Net,
    bus: Arc<EventBus>,
    rules: RwLock<Arc<[Arc<ProxyRule>]>>,
}

/// A running proxy; dropping it closes its listener and every connection it serves.
pub struct ProxyHandle {
    proxy: Arc<Proxy>,
    listen: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one proxy event says, before the bus numbers it.
struct ProxyEventData {
    summary: String,
    decision: &'static str,
    detail: String,
    label: Option<String>,
    rule_id: u32,
    duration: Duration,
    delay: Duration,
}

impl ProxyHandle {
    /// Listens on `listen` and forwards to `upstream` (`host:port`).
    pub async fn start(
        service: Arc<str>,
        interface: &str,
        protocol: Protocol,
        listen: SocketAddr,
        upstream: String,
        bus: Arc<EventBus>,
    ) -> std::io::Result<ProxyHandle> {
        Self::start_in(
            Net::host(),
            service,
            interface,
            protocol,
            listen,
            upstream,
            bus,
        )
        .await
    }

    /// [`ProxyHandle::start`] in `net`: a session's namespace, or the host's network.
    pub(crate) async fn start_in(
        net: Net,
        service: Arc<str>,
        interface: &str,
        protocol: Protocol,
        listen: SocketAddr,
        upstream: String,
        bus: Arc<EventBus>,
    ) -> std::io::Result<ProxyHandle> {
        let socket = net.socket_for(&listen).await?;
        socket.set_reuseaddr(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(1024)?;
        let listen = listener.local_addr()?;
        let proxy = Arc::new(Proxy {
            service,
            interface: interface.to_owned(),
            protocol,
            upstream,
            net,
            bus,
            rules: RwLock::new(Arc::from(Vec::new())),
        });
        let task = tokio::spawn(accept_loop(proxy.clone(), listener));
        Ok(ProxyHandle {
            proxy,
            listen,
            task,
        })
    }

    /// The address clients connect to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Stops listening and closes every connection (as dropping it does).
    pub fn close(&self) {
        self.task.abort();
    }

    /// Replaces the active rules (in precedence order).
    pub fn set_rules(&self, rules: Vec<Arc<ProxyRule>>) {
        *self.proxy.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(rules);
    }
}

async fn accept_loop(proxy: Arc<Proxy>, listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            let _ = connections.join_next().await;
            continue;
        }
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!(upstream = %proxy.upstream, "proxy accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        connections.spawn(connection(proxy.clone(), client));
    }
}

async fn connection(proxy: Arc<Proxy>, client: TcpStream) {
    match proxy.protocol {
        Protocol::Http => {
            pump::serve(
                proxy,
                client,
                Box::new(http::Requests),
                Box::new(http::Replies),
            )
            .await
        }
        Protocol::Redis => {
            pump::serve(
                proxy,
                client,
                Box::new(redis::Requests),
                Box::new(redis::Replies),
            )
            .await
        }
        Protocol::Postgres => {
            pump::serve(
                proxy,
                client,
                Box::new(postgres::Requests::default()),
                Box::new(postgres::Replies::default()),
            )
            .await
        }
        Protocol::Tcp => tcp::serve(proxy, client).await,
    }
}

impl Proxy {
    /// The active rules.
    fn rules(&self) -> Arc<[Arc<ProxyRule>]> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn emit(&self, e: ProxyEventData) {
        self.bus.emit(
            &self.service,
            EventKind::Proxy(ProxyEvent {
                interface: self.interface.clone(),
                protocol: self.protocol.name(),
                summary: e.summary,
                decision: e.decision,
                detail: e.detail,
                label: e.label,
                rule_id: e.rule_id,
                duration: e.duration,
                delay: e.delay,
            }),
        );
    }
}

/// At most `max` characters of `text` on one line, `…` when cut: what the trace shows of a request.
fn summarize(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 3));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}
