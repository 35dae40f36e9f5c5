//! Protocol faults in reports: a `RuleSummary` carrying a `ProxyRule` as a report row, and its text.

use faultd_proto::v1 as pb;

use super::model::{ActionKind, RuleReport};

/// A protocol rule's report row.
pub fn proxy_rule_report(r: &pb::RuleSummary, p: &pb::ProxyRule) -> RuleReport {
    use pb::proxy_rule::Action as A;
    let (action, errno, delay_ms) = match &p.action {
        Some(A::Error(e)) => {
            let answer = if !e.sqlstate.is_empty() {
                e.sqlstate.clone()
            } else if e.status != 0 {
                format!("status {}", e.status)
            } else {
                e.message.clone()
            };
            (
                ActionKind::Error,
                (!answer.is_empty()).then_some(answer),
                None,
            )
        }
        Some(A::Response(resp)) => (
            ActionKind::Response,
            (resp.status != 0).then(|| format!("status {}", resp.status)),
            None,
        ),
        Some(A::Delay(d)) => (ActionKind::Delay, None, Some(d.duration_us / 1000)),
        Some(A::Drop(_)) | None => (ActionKind::Drop, None, None),
    };
    let m = p.r#match.clone().unwrap_or_default();
    let request: Vec<String> = [
        ("method", m.method),
        ("path", m.path),
        ("command", m.command),
        ("key", m.key),
        ("query", m.query),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    RuleReport {
        service: r.service.clone(),
        op: None,
        syscalls: Vec::new(),
        path: None,
        action,
        errno,
        delay_ms,
        label: (!r.label.is_empty()).then(|| r.label.clone()),
        hits: r.hits,
        backend: Some("proxy".into()),
        interface: Some(p.interface.clone()),
        request: (!request.is_empty()).then(|| request.join(" ")),
    }
}
