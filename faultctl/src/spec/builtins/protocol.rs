//! Protocol faults, the peer's spelling: `error(...)`, `response(...)`, `drop(...)` (and
//! `delay(delay="500ms", ...)`, which `actions::delay` hands here), each with matchers
//! (`method=`, `path=`, `command=`, `key=`, `query=`), `probability=` and `label=`; and their
//! binding to a proxied interface in `fault(svc.iface, rule, ..., run=fn)` and
//! `fault_assumption(name, target=svc.iface, rules=[...])`.

use std::collections::BTreeMap;
use std::time::Duration;

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::DictRef;
use starlark::values::{Value, ValueLike};

use super::super::context::{ArgRef, Site, raise};
use super::super::load_errors::SpecError;
use super::super::model::{ProxyAction, ProxyRule};
use super::super::values::{ActionValue, InterfaceRefValue, ProtocolRuleValue};
use super::args::{action, list_items, reject_unknown};

/// Matcher keywords every protocol rule accepts (faultd checks which suit the interface).
pub(super) const MATCHERS: &[&str] = &["method", "path", "command", "key", "query"];

#[starlark_module]
pub(super) fn protocol(builder: &mut GlobalsBuilder) {
    /// Answer matching requests with an error: http `status=` (500) and `message=`/`body=`; redis
    /// an error reply `message=`; postgres an ErrorResponse `message=`, `sqlstate=` (XX000).
    #[allow(clippy::too_many_arguments)] // mirrors the Starlark signature
    fn error<'v>(
        #[starlark(require = named)] status: Option<i32>,
        #[starlark(require = named)] message: Option<&str>,
        #[starlark(require = named)] body: Option<&str>,
        #[starlark(require = named)] sqlstate: Option<&str>,
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(require = named)] probability: Option<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ProtocolRuleValue> {
        let site = Site::of(eval);
        let status = http_status(eval, &site, status)?;
        if let Some(s) = sqlstate
            && (s.len() != 5
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
        {
            return Err(raise(
                eval,
                SpecError::new(format!(
                    "sqlstate {s:?} is not a SQLSTATE: five characters of 0-9 and A-Z"
                ))
                .suggest(Some("e.g. \"23505\" (unique_violation)".into()))
                .at(site.keyword("sqlstate").as_ref()),
            ));
        }
        let action = ProxyAction::Error {
            status,
            message: message.or(body).map(str::to_owned),
            sqlstate: sqlstate.map(str::to_owned),
        };
        rule(eval, &site, "error", action, label, probability, &kwargs)
    }

    /// Answer matching requests with a fabricated reply: http `status=` (200), `body=`,
    /// `headers=`; redis the value `body=` (or `value=`).
    #[allow(clippy::too_many_arguments)] // mirrors the Starlark signature
    fn response<'v>(
        #[starlark(require = named)] status: Option<i32>,
        #[starlark(require = named)] body: Option<&str>,
        #[starlark(require = named)] value: Option<&str>,
        #[starlark(require = named)] headers: Option<Value<'v>>,
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(require = named)] probability: Option<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ProtocolRuleValue> {
        let site = Site::of(eval);
        let status = http_status(eval, &site, status)?;
        let mut header_map = BTreeMap::new();
        if let Some(h) = headers.filter(|h| !h.is_none()) {
            let Some(dict) = DictRef::from_value(h) else {
                return Err(raise(
                    eval,
                    SpecError::new(format!("headers= takes a dict, got {}", h.get_type()))
                        .at(site.keyword("headers").as_ref()),
                ));
            };
            for (k, v) in dict.iter() {
                header_map.insert(
                    k.unpack_str().map_or_else(|| k.to_str(), str::to_owned),
                    v.unpack_str().map_or_else(|| v.to_str(), str::to_owned),
                );
            }
        }
        let action = ProxyAction::Response {
            status,
            body: body.or(value).unwrap_or_default().to_owned(),
            headers: header_map,
        };
        rule(eval, &site, "response", action, label, probability, &kwargs)
    }

    /// Close the client's connection instead of forwarding matching requests (tcp: every new
    /// connection).
    fn drop<'v>(
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(require = named)] probability: Option<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ProtocolRuleValue> {
        let site = Site::of(eval);
        rule(
            eval,
            &site,
            "drop",
            ProxyAction::Drop,
            label,
            probability,
            &kwargs,
        )
    }
}

/// `delay(delay="500ms", path=..., ...)`: a protocol delay.
pub(super) fn delay_rule<'v>(
    eval: &Evaluator<'v, '_, '_>,
    site: &Site,
    duration: Duration,
    label: Option<&str>,
    probability: Option<Value<'v>>,
    kwargs: &SmallMap<String, Value<'v>>,
) -> anyhow::Result<ProtocolRuleValue> {
    rule(
        eval,
        site,
        "delay",
        ProxyAction::Delay(duration),
        label,
        probability,
        kwargs,
    )
}

fn rule<'v>(
    eval: &Evaluator<'v, '_, '_>,
    site: &Site,
    builtin: &str,
    action_kind: ProxyAction,
    label: Option<&str>,
    probability: Option<Value<'v>>,
    kwargs: &SmallMap<String, Value<'v>>,
) -> anyhow::Result<ProtocolRuleValue> {
    // Every keyword left in `kwargs` must be a matcher (or `delay=` of a protocol delay).
    let unknown: SmallMap<String, Value<'v>> = kwargs
        .iter()
        .filter(|(k, _)| !MATCHERS.contains(&k.as_str()) && k.as_str() != "delay")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let known: Vec<&str> = MATCHERS
        .iter()
        .copied()
        .chain(["label", "probability"])
        .collect();
    reject_unknown(eval, site, builtin, &unknown, &known)?;
    let mut matchers = BTreeMap::new();
    for (k, v) in kwargs.iter() {
        if !MATCHERS.contains(&k.as_str()) {
            continue;
        }
        let Some(text) = v.unpack_str() else {
            return Err(raise(
                eval,
                SpecError::new(format!(
                    "{builtin}({k}=) takes a string, got {} `{}`",
                    v.get_type(),
                    v.to_repr()
                ))
                .at(site.keyword(k).as_ref()),
            ));
        };
        if !text.is_empty() {
            matchers.insert(k.clone(), text.to_owned());
        }
    }
    // The probability and label checks of syscall actions, shared.
    let common = action(
        eval,
        site,
        super::super::model::Action::Allow,
        label,
        probability,
    )?;
    Ok(ProtocolRuleValue {
        action: action_kind,
        matchers,
        probability: common.probability,
        label: common.label,
    })
}

fn http_status(
    eval: &Evaluator<'_, '_, '_>,
    site: &Site,
    status: Option<i32>,
) -> anyhow::Result<Option<u16>> {
    match status {
        None => Ok(None),
        Some(s) if (100..=599).contains(&s) => Ok(Some(s as u16)),
        Some(s) => Err(raise(
            eval,
            SpecError::new(format!("status {s} is not an HTTP status (100..599)"))
                .at(site.keyword("status").as_ref()),
        )),
    }
}

/// Binds protocol rules to `target`, which must be a proxied interface (`svc.iface`).
pub(super) fn bind<'v>(
    eval: &Evaluator<'v, '_, '_>,
    site: &Site,
    target: Value<'v>,
    values: &[Value<'v>],
    arg: ArgRef<'_>,
) -> anyhow::Result<Vec<ProxyRule>> {
    let at = match arg {
        ArgRef::Keyword(k) => site.keyword(k),
        ArgRef::Positional(i) => site.positional(i),
    };
    let Some(iface) = target.downcast_ref::<InterfaceRefValue>() else {
        return Err(raise(
            eval,
            SpecError::new(format!(
                "protocol faults (error, response, delay(delay=), drop) target an interface such \
                 as `db.main`, not {} `{}`",
                target.get_type(),
                target.to_repr()
            ))
            .at(at.as_ref()),
        ));
    };
    if iface.iface.proxy_port.is_none() {
        return Err(raise(
            eval,
            SpecError::new(format!(
                "{}.{} has no proxy, so protocol faults cannot reach its traffic",
                iface.service, iface.iface.name
            ))
            .suggest(Some(format!(
                "declare it with interface(\"{}\", \"{}\", {}, proxy=True)",
                iface.iface.name,
                iface.iface.protocol.name(),
                iface.iface.port
            )))
            .at(at.as_ref()),
        ));
    }
    let mut out = Vec::new();
    for v in values {
        let Some(r) = v.downcast_ref::<ProtocolRuleValue>() else {
            let hint = if v.downcast_ref::<ActionValue>().is_some() {
                " (syscall actions go in keywords: `write=deny(\"EIO\")`)"
            } else {
                ""
            };
            return Err(raise(
                eval,
                SpecError::new(format!(
                    "expected a protocol rule (error, response, delay(delay=), drop), got {} `{}`{hint}",
                    v.get_type(),
                    v.to_repr()
                ))
                .at(site.call()),
            ));
        };
        out.push(ProxyRule {
            service: iface.service.clone(),
            interface: iface.iface.name.clone(),
            matchers: r.matchers.clone(),
            action: r.action.clone(),
            probability: r.probability,
            label: r.label.clone(),
        });
    }
    Ok(out)
}

/// The items of `rules=[...]`.
pub(super) fn rule_list<'v>(
    eval: &Evaluator<'v, '_, '_>,
    site: &Site,
    value: Value<'v>,
) -> anyhow::Result<Vec<Value<'v>>> {
    list_items(value).map_err(|m| {
        raise(
            eval,
            SpecError::new(format!("rules= {m}")).at(site.keyword("rules").as_ref()),
        )
    })
}
