//! Protocol faults and database steps on the wire: `ProxyRule` to the engine's rule and back,
//! proxy events, redis and postgres step results.

use std::time::Duration;

use faultd_proto::v1 as pb;
use tonic::Status;

use crate::proxy::{MatchSpec, ProxyAction, ProxyRule, ProxyRuleSpec};
use crate::step::{PgResult, RedisReply};
use crate::trace::ProxyEvent;

/// Most arguments of one redis step, and bytes of one step's payload.
const MAX_ARGS: usize = 1024;
const MAX_PAYLOAD: usize = 16 << 20;

/// A wire rule as the engine takes it.
pub(super) fn proxy_rule_spec(r: pb::ProxyRule) -> Result<ProxyRuleSpec, Status> {
    let whose = format!("rule on {}.{}", r.service, r.interface);
    let action = match r.action {
        Some(pb::proxy_rule::Action::Error(e)) => ProxyAction::Error {
            status: status(e.status, &whose)?,
            message: e.message,
            sqlstate: e.sqlstate,
        },
        Some(pb::proxy_rule::Action::Response(resp)) => ProxyAction::Response {
            status: status(resp.status, &whose)?,
            body: resp.body,
            headers: resp.headers.into_iter().collect(),
        },
        Some(pb::proxy_rule::Action::Delay(d)) => {
            ProxyAction::Delay(Duration::from_micros(d.duration_us))
        }
        Some(pb::proxy_rule::Action::Drop(_)) => ProxyAction::Drop,
        None => {
            return Err(Status::invalid_argument(format!(
                "{whose} needs an action: error, response, delay or drop"
            )));
        }
    };
    if let ProxyAction::Delay(d) = action
        && d > Duration::from_secs(24 * 3600)
    {
        return Err(Status::invalid_argument(format!(
            "{whose}: a delay of {d:?} is longer than 24h"
        )));
    }
    let m = r.r#match.unwrap_or_default();
    Ok(ProxyRuleSpec {
        service: r.service,
        interface: r.interface,
        matcher: MatchSpec {
            method: m.method,
            path: m.path,
            command: m.command,
            key: m.key,
            query: m.query,
        },
        action,
        probability: r.probability.unwrap_or(1.0),
        label: (!r.label.is_empty()).then_some(r.label),
    })
}

fn status(code: u32, whose: &str) -> Result<u16, Status> {
    u16::try_from(code)
        .ok()
        .filter(|c| *c == 0 || (100..=599).contains(c))
        .ok_or_else(|| {
            Status::invalid_argument(format!("{whose}: HTTP status {code} is not in 100..599"))
        })
}

/// The rule as `ProxyRule` again (what `RuleSummary.proxy` carries).
fn wire_rule(spec: &ProxyRuleSpec) -> pb::ProxyRule {
    let m = &spec.matcher;
    pb::ProxyRule {
        service: spec.service.clone(),
        interface: spec.interface.clone(),
        r#match: Some(pb::ProxyMatch {
            method: m.method.clone(),
            path: m.path.clone(),
            command: m.command.clone(),
            key: m.key.clone(),
            query: m.query.clone(),
        }),
        action: Some(match &spec.action {
            ProxyAction::Error {
                status,
                message,
                sqlstate,
            } => pb::proxy_rule::Action::Error(pb::ProxyError {
                status: (*status).into(),
                message: message.clone(),
                sqlstate: sqlstate.clone(),
            }),
            ProxyAction::Response {
                status,
                body,
                headers,
            } => pb::proxy_rule::Action::Response(pb::ProxyResponse {
                status: (*status).into(),
                body: body.clone(),
                headers: headers.clone().into_iter().collect(),
            }),
            ProxyAction::Delay(d) => pb::proxy_rule::Action::Delay(pb::Delay {
                duration_us: d.as_micros() as u64,
            }),
            ProxyAction::Drop => pb::proxy_rule::Action::Drop(pb::ProxyDrop {}),
        }),
        probability: Some(spec.probability),
        label: spec.label.clone().unwrap_or_default(),
    }
}

/// A protocol rule's summary with its counters.
pub(super) fn proxy_summary(r: &ProxyRule) -> pb::RuleSummary {
    pb::RuleSummary {
        rule_id: r.id,
        fault_set_id: r.fault_set.to_string(),
        service: r.spec.service.clone(),
        label: r.spec.label.clone().unwrap_or_default(),
        hits: r.hits(),
        matches: r.matches_count(),
        backend: "proxy".into(),
        proxy: Some(wire_rule(&r.spec)),
        ..Default::default()
    }
}

/// A proxy event on the wire.
pub(super) fn proxy_event(p: &ProxyEvent) -> pb::ProxyEvent {
    pb::ProxyEvent {
        interface: p.interface.clone(),
        protocol: p.protocol.into(),
        summary: p.summary.clone(),
        decision: p.decision.into(),
        detail: p.detail.clone(),
        label: p.label.clone().unwrap_or_default(),
        rule_id: p.rule_id,
        duration_us: p.duration.as_micros() as u64,
        delay_us: p.delay.as_micros() as u64,
    }
}

/// Checks a redis step's size.
pub(super) fn redis_args(r: pb::RedisRequest) -> Result<Vec<Vec<u8>>, Status> {
    let bytes: usize = r.args.iter().map(Vec::len).sum();
    if r.args.is_empty() || r.args.len() > MAX_ARGS || bytes > MAX_PAYLOAD {
        return Err(Status::invalid_argument(format!(
            "a redis step takes 1 to {MAX_ARGS} arguments of at most {} MiB together (got {} \
             arguments, {bytes} bytes)",
            MAX_PAYLOAD >> 20,
            r.args.len()
        )));
    }
    Ok(r.args)
}

/// Checks a postgres step's size.
pub(super) fn postgres_sql(sql: &str) -> Result<(), Status> {
    if sql.len() > MAX_PAYLOAD || sql.contains('\0') {
        return Err(Status::invalid_argument(
            "a postgres step's SQL must be at most 16 MiB and contain no NUL byte",
        ));
    }
    Ok(())
}

/// A redis reply on the wire.
pub(super) fn redis_value(r: &RedisReply) -> pb::RedisValue {
    use pb::redis_value::Value;
    let value = match r {
        RedisReply::Bulk(b) => Value::Bulk(b.clone()),
        RedisReply::Simple(s) => Value::Simple(s.clone()),
        RedisReply::Error(e) => Value::Error(e.clone()),
        RedisReply::Integer(n) => Value::Integer(*n),
        RedisReply::Array(items) => Value::Array(pb::RedisArray {
            items: items.iter().map(redis_value).collect(),
        }),
        RedisReply::Null => Value::Null(true),
    };
    pb::RedisValue { value: Some(value) }
}

/// A postgres result on the wire.
pub(super) fn postgres_result(r: &PgResult) -> pb::PostgresResult {
    let (sqlstate, message) = r.error.clone().unwrap_or_default();
    pb::PostgresResult {
        rows: r
            .rows
            .iter()
            .map(|row| pb::PostgresRow {
                cells: row
                    .iter()
                    .map(|c| pb::PostgresCell { text: c.clone() })
                    .collect(),
            })
            .collect(),
        count: r.count,
        failed: r.error.is_some(),
        sqlstate,
        message,
    }
}
