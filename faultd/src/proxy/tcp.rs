//! tcp: no framing. A rule decides once per connection (`delay` before connecting, `drop` closes it
//! at once); then bytes are copied both ways unchanged.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::pump::{self, Hint, ReplyCodec, ReplySplit, RequestCodec, Split};
use super::rules::{self, ProxyAction, RequestInfo};
use super::{Proxy, ProxyEventData};

/// Serves one client connection.
pub(super) async fn serve(proxy: Arc<Proxy>, client: TcpStream) {
    let started = Instant::now();
    let info = RequestInfo::default();
    let active = proxy.rules();
    let rule = rules::decide(&active, &info).cloned();
    let mut delay = Duration::ZERO;
    let decision = match rule.as_ref().map(|r| &r.spec.action) {
        Some(ProxyAction::Drop) => "drop",
        Some(ProxyAction::Delay(d)) => {
            delay = *d;
            tokio::time::sleep(*d).await;
            "delay"
        }
        // Refused when the rule is applied; passes if one slipped through.
        Some(_) | None => "pass",
    };
    proxy.emit(ProxyEventData {
        summary: "connect".into(),
        decision,
        detail: String::new(),
        label: rule.as_ref().and_then(|r| r.spec.label.clone()),
        rule_id: rule.as_ref().map_or(0, |r| r.id),
        duration: started.elapsed(),
        delay,
    });
    if decision == "drop" {
        return;
    }
    pump::serve(proxy, client, Box::new(Raw), Box::new(Raw)).await;
}

/// Both directions, unframed.
struct Raw;

impl RequestCodec for Raw {
    fn split(&mut self, buf: &[u8]) -> Split {
        if buf.is_empty() {
            Split::NeedMore
        } else {
            Split::Forward(buf.len())
        }
    }
}

impl ReplyCodec for Raw {
    fn split(&mut self, buf: &[u8], _: Option<Hint>) -> ReplySplit {
        if buf.is_empty() {
            ReplySplit::NeedMore
        } else {
            ReplySplit::Partial(buf.len())
        }
    }

    fn fabricate(&mut self, _: &ProxyAction, _: Hint) -> Vec<u8> {
        Vec::new()
    }

    fn detail(&self, _: &ProxyAction) -> String {
        String::new()
    }
}
