//! Argument helpers shared by the builtins: unpacking Starlark values into the spec model, with
//! errors that point at the call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use starlark::codemap::FileSpan;
use starlark::collections::SmallMap;
use starlark::eval::Evaluator;
use starlark::values::dict::DictRef;
use starlark::values::float::StarlarkFloat;
use starlark::values::list::ListRef;
use starlark::values::tuple::TupleRef;
use starlark::values::{Value, ValueLike};

use super::super::context::{ArgRef, Body, PendingTest, Site, load_state, raise};
use super::super::load_errors::{SpecError, did_you_mean};
use super::super::model::{Action, Check, FaultSet, Healthcheck, Op, Rule, Test};
use super::super::rules::{self, Target};
use super::super::units::{ProbabilityInput, parse_duration, parse_probability};
use super::super::values::{
    ActionValue, AssumptionValue, HealthcheckValue, InterfaceRefValue, OpValue, ServiceValue,
};
use super::super::wire;

pub(super) fn healthcheck<'v>(
    eval: &Evaluator<'v, '_, '_>,
    builtin: &str,
    check: Check,
    timeout: Option<&str>,
    unknown: &SmallMap<String, Value<'v>>,
) -> anyhow::Result<HealthcheckValue> {
    let site = Site::of(eval);
    reject_unknown(eval, &site, builtin, unknown, &["timeout"])?;
    let timeout = match timeout {
        Some(t) => Some(
            parse_duration(t)
                .map_err(|m| raise(eval, SpecError::new(m).at(site.keyword("timeout").as_ref())))?,
        ),
        None => None,
    };
    Ok(HealthcheckValue(Healthcheck { check, timeout }))
}

pub(super) fn action<'v>(
    eval: &Evaluator<'v, '_, '_>,
    site: &Site,
    action: Action,
    label: Option<&str>,
    probability: Option<Value<'v>>,
) -> anyhow::Result<ActionValue> {
    let probability = match probability.filter(|p| !p.is_none()) {
        None => None,
        Some(p) => {
            let input = if let Some(s) = p.unpack_str() {
                ProbabilityInput::Text(s)
            } else if let Some(i) = p.unpack_i32() {
                ProbabilityInput::Int(i64::from(i))
            } else if let Some(f) = p.downcast_ref::<StarlarkFloat>() {
                ProbabilityInput::Float(f.0)
            } else {
                ProbabilityInput::Text("")
            };
            Some(parse_probability(input).map_err(|m| {
                raise(
                    eval,
                    SpecError::new(m).at(site.keyword("probability").as_ref()),
                )
            })?)
        }
    };
    Ok(ActionValue {
        action,
        label: label.filter(|l| !l.is_empty()).map(str::to_owned),
        probability,
        destination: None,
        trigger: Default::default(),
    })
}

/// Rules for `key=action` keywords on a service (or interface) target.
pub(super) fn rules_from_kwargs<'v>(
    eval: &Evaluator<'v, '_, '_>,
    site: &Site,
    target: Value<'v>,
    kwargs: &SmallMap<String, Value<'v>>,
    target_arg: ArgRef<'_>,
) -> anyhow::Result<Vec<Rule>> {
    let (service, ops, attached) =
        target_of(target).ok_or_else(|| bad_target(eval, site, target, target_arg))?;
    let others: Vec<(String, String)> = match load_state(eval, "") {
        Ok(state) => state
            .borrow()
            .services
            .iter()
            .flat_map(|(s, _)| s.ops.iter().map(|o| (s.name.clone(), o.name.clone())))
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut out = Vec::new();
    for (key, value) in kwargs {
        let Some(action) = value.downcast_ref::<ActionValue>() else {
            return Err(raise(
                eval,
                SpecError::new(format!(
                    "`{key}=` takes deny(...), delay(...) or allow(), got {} `{}`",
                    value.get_type(),
                    value.to_repr()
                ))
                .at(site.keyword(key).as_ref()),
            ));
        };
        let rule = rules::resolve(
            Target {
                service: &service,
                ops: &ops,
                attached,
            },
            key,
            action,
            &others,
        )
        .map_err(|e| raise(eval, e.at(site.keyword(key).as_ref())))?;
        out.push(rule);
    }
    Ok(out)
}

/// The service (name and ops) a target value designates.
/// (and whether it is attached by cgroup).
pub(crate) fn target_of(value: Value<'_>) -> Option<(String, Vec<Op>, bool)> {
    if let Some(s) = value.downcast_ref::<ServiceValue>() {
        return Some((s.name.clone(), s.ops.clone(), s.attached));
    }
    value
        .downcast_ref::<InterfaceRefValue>()
        .map(|r| (r.service.clone(), r.ops.clone(), r.attached))
}

pub(super) fn bad_target(
    eval: &Evaluator<'_, '_, '_>,
    site: &Site,
    value: Value<'_>,
    arg: ArgRef<'_>,
) -> anyhow::Error {
    let at = match arg {
        ArgRef::Keyword(k) => site.keyword(k),
        ArgRef::Positional(i) => site.positional(i),
    };
    raise(
        eval,
        SpecError::new(format!(
            "the target must be a service or one of its interfaces, got {} `{}`",
            value.get_type(),
            value.to_repr()
        ))
        .at(at.as_ref()),
    )
}

/// Errors on keyword arguments a builtin does not take.
pub(super) fn reject_unknown(
    eval: &Evaluator<'_, '_, '_>,
    site: &Site,
    builtin: &str,
    unknown: &SmallMap<String, Value<'_>>,
    known: &[&str],
) -> anyhow::Result<()> {
    let Some((name, _)) = unknown.iter().next() else {
        return Ok(());
    };
    let suggestion = did_you_mean(name, known.iter().copied()).or_else(|| {
        Some(if known.is_empty() {
            format!("{builtin}() takes no keyword arguments")
        } else {
            format!(
                "{builtin}() takes {}",
                known
                    .iter()
                    .map(|k| format!("{k}="))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    });
    Err(raise(
        eval,
        SpecError::new(format!("unknown keyword argument `{name}` for {builtin}()"))
            .at(site.keyword(name).as_ref())
            .suggest(suggestion),
    ))
}

pub(super) fn check_callable(
    eval: &Evaluator<'_, '_, '_>,
    site: &Site,
    value: Value<'_>,
    arg: ArgRef<'_>,
) -> anyhow::Result<()> {
    if value.get_type() == "function" {
        return Ok(());
    }
    let at = match arg {
        ArgRef::Keyword(k) => site.keyword(k),
        ArgRef::Positional(i) => site.positional(i),
    };
    Err(raise(
        eval,
        SpecError::new(format!(
            "expected a function, got {} `{}`",
            value.get_type(),
            value.to_repr()
        ))
        .at(at.as_ref()),
    ))
}

/// Refuses a name faultd could not use as a path or key (`faultd_model::names`: service, op and
/// interface names), pointing at it and suggesting a close name that is allowed.
pub(super) fn check_name(
    what: &'static str,
    name: &str,
    at: Option<FileSpan>,
) -> Result<(), SpecError> {
    faultd_model::names::check(what, name).map_err(|e| {
        SpecError::new(e.to_string())
            .at(at.as_ref())
            .suggest(wire::allowed_name(name).map(|n| format!("for example `{n}`")))
    })
}

/// Adds a test, rejecting a duplicate name.
pub(super) fn register(
    eval: &Evaluator<'_, '_, '_>,
    site: &Site,
    test: Test,
    body: Body,
) -> anyhow::Result<()> {
    let state = load_state(eval, "a test declaration")?;
    if state
        .borrow()
        .tests
        .iter()
        .any(|t| t.test.name == test.name)
    {
        return Err(raise(
            eval,
            SpecError::new(format!("duplicate test name `{}`", test.name))
                .at(site.call())
                .suggest(Some("test names come from scenario functions, fault_scenario names and matrix cells (matrix_<scenario>_<fault>); each must be unique".into())),
        ));
    }
    let position = site.call().map(|s| s.span).unwrap_or_default();
    state.borrow_mut().tests.push(PendingTest {
        test,
        body,
        position,
        site: site.call().cloned(),
    });
    Ok(())
}

pub(super) fn resolve_binary(spec_dir: &Path, binary: &str) -> String {
    let path = Path::new(binary);
    if path.is_absolute() || !binary.contains('/') {
        return binary.to_owned();
    }
    let joined: PathBuf = spec_dir.join(path);
    joined.to_string_lossy().into_owned()
}

pub(super) fn list_items(value: Value<'_>) -> Result<Vec<Value<'_>>, String> {
    if let Some(l) = ListRef::from_value(value) {
        return Ok(l.content().to_vec());
    }
    if let Some(t) = TupleRef::from_value(value) {
        return Ok(t.content().to_vec());
    }
    Err(format!(
        "takes a list, got {} `{}`",
        value.get_type(),
        value.to_repr()
    ))
}

pub(super) fn strings(value: Value<'_>) -> Result<Vec<String>, String> {
    list_items(value)?
        .into_iter()
        .map(|v| {
            v.unpack_str().map(str::to_owned).ok_or_else(|| {
                format!(
                    "takes a list of strings, got {} `{}`",
                    v.get_type(),
                    v.to_repr()
                )
            })
        })
        .collect()
}

pub(super) fn scalar_string(v: Value<'_>) -> Option<String> {
    if let Some(s) = v.unpack_str() {
        return Some(s.to_owned());
    }
    match v.get_type() {
        "int" | "float" | "bool" => Some(v.to_str()),
        _ => None,
    }
}

pub(super) fn env_map(value: Value<'_>) -> Result<BTreeMap<String, String>, String> {
    let dict = DictRef::from_value(value)
        .ok_or_else(|| format!("takes a dict of strings, got {}", value.get_type()))?;
    dict.iter()
        .map(|(k, v)| {
            let k = k
                .unpack_str()
                .ok_or_else(|| format!("keys must be strings, got {}", k.get_type()))?;
            let v = scalar_string(v).ok_or_else(|| {
                format!(
                    "value of `{k}` must be a string, got {} `{}`",
                    v.get_type(),
                    v.to_repr()
                )
            })?;
            Ok((k.to_owned(), v))
        })
        .collect()
}

pub(super) fn service_names(value: Value<'_>) -> Result<Vec<String>, String> {
    list_items(value)?
        .into_iter()
        .map(|v| {
            if let Some(s) = v.downcast_ref::<ServiceValue>() {
                Ok(s.name.clone())
            } else if let Some(s) = v.unpack_str() {
                Ok(s.to_owned())
            } else {
                Err(format!(
                    "takes services (or their names), got {} `{}`",
                    v.get_type(),
                    v.to_repr()
                ))
            }
        })
        .collect()
}

pub(super) fn op_map(value: Value<'_>) -> Result<Vec<Op>, String> {
    let dict = DictRef::from_value(value)
        .ok_or_else(|| format!("takes a dict of op(...) values, got {}", value.get_type()))?;
    dict.iter()
        .map(|(k, v)| {
            let name = k
                .unpack_str()
                .ok_or_else(|| format!("op names must be strings, got {}", k.get_type()))?;
            let op = v.downcast_ref::<OpValue>().ok_or_else(|| {
                format!(
                    "value of `{name}` must be op(...), got {} `{}`",
                    v.get_type(),
                    v.to_repr()
                )
            })?;
            Ok(Op {
                name: name.to_owned(),
                syscalls: op.syscalls.clone(),
                path: op.path.clone(),
            })
        })
        .collect()
}

/// One fault_assumption or a list of them.
pub(super) fn assumptions(value: Value<'_>) -> Result<Vec<FaultSet>, String> {
    let items = match value.downcast_ref::<AssumptionValue>() {
        Some(a) => return Ok(vec![a.0.clone()]),
        None => list_items(value).map_err(|_| {
            format!(
                "takes a fault_assumption or a list of them, got {} `{}`",
                value.get_type(),
                value.to_repr()
            )
        })?,
    };
    items
        .into_iter()
        .map(|v| {
            v.downcast_ref::<AssumptionValue>()
                .map(|a| a.0.clone())
                .ok_or_else(|| {
                    format!(
                        "takes fault_assumption values, got {} `{}`",
                        v.get_type(),
                        v.to_repr()
                    )
                })
        })
        .collect()
}
