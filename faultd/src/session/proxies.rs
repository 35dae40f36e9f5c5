//! The session's protocol proxies: started before the services for every interface that asks for
//! one, given the rules of the active fault sets, and closed with the session.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Protocol, ServiceConfig, Session};
use crate::engine::EngineError;
use crate::netns::Net;
use crate::proxy::{ProxyAction, ProxyHandle, ProxyRule, ProxyRuleSpec};
use crate::trace::EventBus;

/// One running proxy of the session.
pub(super) struct SessionProxy {
    service: Arc<str>,
    interface: String,
    protocol: Protocol,
    handle: ProxyHandle,
}

impl SessionProxy {
    /// Stops listening and closes every connection it serves.
    pub(super) fn close(&self) {
        self.handle.close();
    }
}

/// Starts a proxy for every interface of `services` that has a proxy port.
pub(super) async fn start(
    services: &[ServiceConfig],
    bus: &Arc<EventBus>,
    net: &Net,
) -> Result<Vec<SessionProxy>, EngineError> {
    let mut out = Vec::new();
    for svc in services {
        for iface in &svc.interfaces {
            let Some(port) = iface.proxy_port else {
                continue;
            };
            let host = if iface.host.is_empty() {
                "127.0.0.1"
            } else {
                &iface.host
            };
            let listen: SocketAddr = format!("{host}:{port}").parse().map_err(|_| {
                EngineError::InvalidArgument(format!(
                    "interface {}.{}: host {host:?} is not an IP address, so faultd cannot \
                     listen there for its proxy",
                    svc.name, iface.name
                ))
            })?;
            let service: Arc<str> = svc.name.as_str().into();
            let handle = ProxyHandle::start_in(
                net.clone(),
                service.clone(),
                &iface.name,
                iface.protocol,
                listen,
                iface.addr(),
                bus.clone(),
            )
            .await
            .map_err(|e| {
                EngineError::FailedPrecondition(format!(
                    "cannot start the proxy of {}.{} on {listen}: {e}; choose another proxy port",
                    svc.name, iface.name
                ))
            })?;
            out.push(SessionProxy {
                service,
                interface: iface.name.clone(),
                protocol: iface.protocol,
                handle,
            });
        }
    }
    Ok(out)
}

impl Session {
    /// Checks a protocol rule against the session's proxies: the interface must have one, and the
    /// action and matchers must suit its protocol.
    pub(super) fn check_proxy_rule(&self, spec: &ProxyRuleSpec) -> Result<(), EngineError> {
        let proxy = self
            .proxies
            .iter()
            .find(|p| *p.service == *spec.service && p.interface == spec.interface)
            .ok_or_else(|| {
                EngineError::InvalidArgument(format!(
                    "{}.{} has no proxy: protocol faults need the interface to be proxied \
                     (proxy_port in the session's interface; `interface(..., proxy=True)` in a spec)",
                    spec.service, spec.interface
                ))
            })?;
        let m = &spec.matcher;
        let given: Vec<&str> = [
            ("method", &m.method),
            ("path", &m.path),
            ("command", &m.command),
            ("key", &m.key),
            ("query", &m.query),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k)
        .collect();
        let allowed: &[&str] = match proxy.protocol {
            Protocol::Http => &["method", "path"],
            Protocol::Redis => &["command", "key"],
            Protocol::Postgres => &["query"],
            Protocol::Tcp => &[],
        };
        if let Some(bad) = given.iter().find(|g| !allowed.contains(g)) {
            return Err(EngineError::InvalidArgument(format!(
                "rule on {}.{}: `{bad}` does not apply to a {} interface (it matches on: {})",
                spec.service,
                spec.interface,
                proxy.protocol.name(),
                if allowed.is_empty() {
                    "nothing, every connection".to_owned()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        let refused = match (&spec.action, proxy.protocol) {
            (ProxyAction::Error { .. } | ProxyAction::Response { .. }, Protocol::Tcp) => Some(
                "a tcp proxy has no requests to answer; use delay() or drop() (per connection)",
            ),
            (ProxyAction::Response { .. }, Protocol::Postgres) => {
                Some("a postgres proxy cannot fabricate rows; use error(sqlstate=..., message=...)")
            }
            _ => None,
        };
        if let Some(why) = refused {
            return Err(EngineError::InvalidArgument(format!(
                "rule on {}.{}: {why}",
                spec.service, spec.interface
            )));
        }
        Ok(())
    }

    /// Gives every proxy the active rules that concern it, in precedence order.
    pub(super) fn publish_proxy_rules<'a>(
        &self,
        active: impl Iterator<Item = &'a Arc<ProxyRule>> + Clone,
    ) {
        for proxy in &self.proxies {
            proxy.handle.set_rules(
                active
                    .clone()
                    .filter(|r| {
                        *r.spec.service == *proxy.service && r.spec.interface == proxy.interface
                    })
                    .cloned()
                    .collect(),
            );
        }
    }
}
