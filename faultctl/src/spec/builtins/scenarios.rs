//! What runs: `fault_assumption`, `scenario`, `fault_scenario`, `fault_matrix` and the scoped `fault`.

use std::collections::BTreeMap;

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::DictRef;
use starlark::values::none::NoneType;
use starlark::values::tuple::TupleRef;
use starlark::values::{Value, ValueLike};

use super::super::context::{ArgRef, Body, Callables, Site, load_state, raise, session};
use super::super::load_errors::SpecError;
use super::super::model::{FaultSet, Matrix, Test};
use super::super::units::parse_duration;
use super::super::values::{AssumptionValue, function_name};
use super::super::wire;
use crate::report::model::TestKind;

use super::args::*;

#[starlark_module]
pub(super) fn scenarios(builder: &mut GlobalsBuilder) {
    /// A named fault set: `fault_assumption(name, target=svc, faults=[...], description=,
    /// <op or syscall>=action...)`.
    fn fault_assumption<'v>(
        #[starlark(require = pos)] name: &str,
        #[starlark(require = named)] target: Option<Value<'v>>,
        #[starlark(require = named)] faults: Option<Value<'v>>,
        #[starlark(require = named)] description: Option<&str>,
        #[starlark(kwargs)] mut rules: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<AssumptionValue> {
        let _ = description; // documents the assumption in the spec; not sent anywhere
        let site = Site::of(eval);
        let mut all = Vec::new();
        let mut partitions = Vec::new();
        // `rules=[...]`: protocol faults on the target interface's proxy.
        let mut proxy_rules = match rules.shift_remove("rules") {
            None => Vec::new(),
            Some(list) => {
                let Some(t) = target else {
                    return Err(raise(
                        eval,
                        SpecError::new(format!(
                            "fault_assumption `{name}` has rules= but no target=svc.iface"
                        ))
                        .at(site.keyword("rules").as_ref()),
                    ));
                };
                let items = super::protocol::rule_list(eval, &site, list)?;
                super::protocol::bind(eval, &site, t, &items, ArgRef::Keyword("target"))?
            }
        };
        if !rules.is_empty() {
            let Some(target) = target else {
                return Err(raise(
                    eval,
                    SpecError::new(format!(
                        "fault_assumption `{name}` has rules but no target="
                    ))
                    .at(site.call()),
                ));
            };
            all = rules_from_kwargs(eval, &site, target, &rules, ArgRef::Keyword("target"))?;
        } else if let Some(t) = target {
            target_of(t).ok_or_else(|| bad_target(eval, &site, t, ArgRef::Keyword("target")))?;
        }
        if let Some(children) = faults {
            for child in assumptions(children).map_err(|m| {
                raise(
                    eval,
                    SpecError::new(format!("faults= {m}")).at(site.keyword("faults").as_ref()),
                )
            })? {
                all.extend(child.rules);
                partitions.extend(child.partitions);
                proxy_rules.extend(child.proxy_rules);
            }
        }
        if all.is_empty() && partitions.is_empty() && proxy_rules.is_empty() {
            return Err(raise(
                eval,
                SpecError::new(format!("fault_assumption `{name}` has no rules"))
                    .at(site.call())
                    .suggest(Some(
                        "add rules such as `write=deny(\"EIO\")` with target=, or faults=[...]"
                            .into(),
                    )),
            ));
        }
        if let Ok(state) = load_state(eval, "fault_assumption") {
            let mut state = state.borrow_mut();
            if !state.assumption_names.insert(name.to_owned()) {
                drop(state);
                return Err(raise(
                    eval,
                    SpecError::new(format!("duplicate fault_assumption name `{name}`"))
                        .at(site.positional(0).as_ref()),
                ));
            }
            for rule in &all {
                state
                    .intercept
                    .entry(rule.service.clone())
                    .or_default()
                    .extend(
                        rule.syscalls.iter().cloned().chain(
                            super::super::rules::tracking_syscalls(rule)
                                .iter()
                                .map(|s| s.to_string()),
                        ),
                    );
            }
        }
        Ok(AssumptionValue(FaultSet {
            name: name.to_owned(),
            rules: all,
            partitions,
            proxy_rules,
        }))
    }

    /// Registers `fn` as a test run without faults, named after the function.
    fn scenario<'v>(
        #[starlark(require = pos)] function: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let site = Site::of(eval);
        load_state(eval, "scenario")?;
        check_callable(eval, &site, function, ArgRef::Positional(0))?;
        let name = function_name(function);
        let id = Callables::of(eval)?.add(function);
        let test = Test {
            name: name.clone(),
            kind: TestKind::Scenario,
            scenario: Some(name),
            fault: None,
            faults: Vec::new(),
            timeout: None,
            cell: None,
        };
        register(eval, &site, test, Body::Call(id))?;
        Ok(NoneType)
    }

    /// A test: the scenario under the faults, then `expect(result)` while they are still active.
    fn fault_scenario<'v>(
        #[starlark(require = pos)] name: &str,
        #[starlark(require = named)] scenario: Value<'v>,
        #[starlark(require = named)] faults: Option<Value<'v>>,
        #[starlark(require = named)] expect: Option<Value<'v>>,
        #[starlark(require = named)] timeout: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let site = Site::of(eval);
        reject_unknown(
            eval,
            &site,
            "fault_scenario",
            &unknown,
            &["scenario", "faults", "expect", "timeout"],
        )?;
        load_state(eval, "fault_scenario")?;
        check_callable(eval, &site, scenario, ArgRef::Keyword("scenario"))?;
        let expect = expect.filter(|e| !e.is_none());
        if let Some(e) = expect {
            check_callable(eval, &site, e, ArgRef::Keyword("expect"))?;
        }
        let sets = match faults {
            Some(f) if !f.is_none() => assumptions(f).map_err(|m| {
                raise(
                    eval,
                    SpecError::new(format!("faults= {m}")).at(site.keyword("faults").as_ref()),
                )
            })?,
            _ => Vec::new(),
        };
        let timeout = match timeout {
            Some(t) => Some(parse_duration(t).map_err(|m| {
                raise(eval, SpecError::new(m).at(site.keyword("timeout").as_ref()))
            })?),
            None => None,
        };
        let callables = Callables::of(eval)?;
        let body = Body::Scenario {
            scenario: callables.add(scenario),
            expect: expect.map(|e| callables.add(e)),
        };
        let test = Test {
            name: name.to_owned(),
            kind: TestKind::FaultScenario,
            scenario: Some(function_name(scenario)),
            fault: (!sets.is_empty()).then(|| {
                sets.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join("+")
            }),
            faults: sets,
            timeout,
            cell: None,
        };
        register(eval, &site, test, body)?;
        Ok(NoneType)
    }

    /// Every scenario under every fault set: one test per cell, `matrix_<scenario>_<fault>`.
    #[allow(clippy::too_many_arguments)] // mirrors the Starlark signature
    fn fault_matrix<'v>(
        #[starlark(require = named)] scenarios: Value<'v>,
        #[starlark(require = named)] faults: Value<'v>,
        #[starlark(require = named)] expect: Option<Value<'v>>,
        #[starlark(require = named)] default_expect: Option<Value<'v>>,
        #[starlark(require = named)] overrides: Option<Value<'v>>,
        #[starlark(require = named)] exclude: Option<Value<'v>>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let site = Site::of(eval);
        reject_unknown(
            eval,
            &site,
            "fault_matrix",
            &unknown,
            &[
                "scenarios",
                "faults",
                "expect",
                "default_expect",
                "overrides",
                "exclude",
            ],
        )?;
        let state = load_state(eval, "fault_matrix")?;
        let kw_err = |kw: &str, m: String| {
            raise(
                eval,
                SpecError::new(format!("{kw}= {m}")).at(site.keyword(kw).as_ref()),
            )
        };
        if expect.is_some_and(|e| !e.is_none()) && default_expect.is_some_and(|e| !e.is_none()) {
            return Err(kw_err(
                "default_expect",
                "and expect= are the same thing; give one".into(),
            ));
        }
        let default = expect.or(default_expect).filter(|e| !e.is_none());
        let fns: Vec<Value<'v>> = list_items(scenarios).map_err(|m| kw_err("scenarios", m))?;
        for f in &fns {
            check_callable(eval, &site, *f, ArgRef::Keyword("scenarios"))?;
        }
        let sets = assumptions(faults).map_err(|m| kw_err("faults", m))?;
        if fns.is_empty() || sets.is_empty() {
            return Err(raise(
                eval,
                SpecError::new("fault_matrix needs at least one scenario and one fault")
                    .at(site.call()),
            ));
        }
        if let Some(e) = default {
            check_callable(
                eval,
                &site,
                e,
                ArgRef::Keyword(if expect.is_some() {
                    "expect"
                } else {
                    "default_expect"
                }),
            )?;
        }
        let cell_of = |key: Value<'v>| -> Result<(usize, usize), String> {
            let pair = TupleRef::from_value(key)
                .filter(|t| t.len() == 2)
                .ok_or_else(|| {
                    format!(
                        "keys are (scenario, fault_assumption) tuples, got {} `{}`",
                        key.get_type(),
                        key.to_repr()
                    )
                })?;
            let [f, a] = pair.content() else {
                unreachable!("checked length")
            };
            let row = fns
                .iter()
                .position(|x| x.ptr_eq(*f))
                .ok_or_else(|| format!("`{}` is not one of scenarios=", f.to_repr()))?;
            let name = a
                .downcast_ref::<AssumptionValue>()
                .map(|a| a.0.name.clone())
                .ok_or_else(|| format!("`{}` is not a fault_assumption", a.to_repr()))?;
            let col = sets
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| format!("`{name}` is not one of faults="))?;
            Ok((row, col))
        };
        let mut per_cell: BTreeMap<(usize, usize), Value<'v>> = BTreeMap::new();
        if let Some(o) = overrides.filter(|o| !o.is_none()) {
            let dict = DictRef::from_value(o).ok_or_else(|| {
                kw_err("overrides", format!("takes a dict, got {}", o.get_type()))
            })?;
            for (k, v) in dict.iter() {
                let cell = cell_of(k).map_err(|m| kw_err("overrides", m))?;
                check_callable(eval, &site, v, ArgRef::Keyword("overrides"))?;
                per_cell.insert(cell, v);
            }
        }
        let mut excluded = Vec::new();
        if let Some(x) = exclude.filter(|x| !x.is_none()) {
            for k in list_items(x).map_err(|m| kw_err("exclude", m))? {
                excluded.push(cell_of(k).map_err(|m| kw_err("exclude", m))?);
            }
        }
        let matrix_index = state.borrow().matrices.len();
        let names: Vec<String> = fns.iter().map(|f| function_name(*f)).collect();
        state.borrow_mut().matrices.push(Matrix {
            scenarios: names.clone(),
            faults: sets.iter().map(|s| s.name.clone()).collect(),
        });
        let callables = Callables::of(eval)?;
        for (row, f) in fns.iter().enumerate() {
            let scenario_id = callables.add(*f);
            for (col, set) in sets.iter().enumerate() {
                if excluded.contains(&(row, col)) {
                    continue;
                }
                let expect = per_cell
                    .get(&(row, col))
                    .copied()
                    .or(default)
                    .map(|e| callables.add(e));
                let test = Test {
                    name: format!("matrix_{}_{}", names[row], set.name),
                    kind: TestKind::MatrixCell,
                    scenario: Some(names[row].clone()),
                    fault: Some(set.name.clone()),
                    faults: vec![set.clone()],
                    timeout: None,
                    cell: Some((matrix_index, row, col)),
                };
                register(
                    eval,
                    &site,
                    test,
                    Body::Scenario {
                        scenario: scenario_id,
                        expect,
                    },
                )?;
            }
        }
        Ok(NoneType)
    }

    /// Applies faults around `run()` inside a test: `fault(svc, run=fn, write=deny("EIO"))` or
    /// `fault(assumption, run=fn)`. The rules are removed when `run` returns or fails.
    fn fault<'v>(
        #[starlark(require = pos)] target: Value<'v>,
        #[starlark(args)] protocol_rules: starlark::values::tuple::UnpackTuple<Value<'v>>,
        #[starlark(require = named)] run: Value<'v>,
        #[starlark(kwargs)] rules: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<Value<'v>> {
        let site = Site::of(eval);
        let session = session(eval, "fault()")?.clone();
        let set: FaultSet = match target.downcast_ref::<AssumptionValue>() {
            Some(a) => {
                if let Some((k, _)) = rules.iter().next() {
                    return Err(anyhow::anyhow!(
                        "fault() on fault_assumption `{}` takes only run=; `{k}=` belongs in the assumption",
                        a.0.name
                    )
                    .into());
                }
                a.0.clone()
            }
            None => FaultSet {
                name: "fault".into(),
                // Only protocol rules: the target is checked by `bind` alone.
                rules: if rules.is_empty() && !protocol_rules.items.is_empty() {
                    Vec::new()
                } else {
                    rules_from_kwargs(eval, &site, target, &rules, ArgRef::Positional(0))?
                },
                partitions: Vec::new(),
                proxy_rules: if protocol_rules.items.is_empty() {
                    Vec::new()
                } else {
                    super::protocol::bind(
                        eval,
                        &site,
                        target,
                        &protocol_rules.items,
                        ArgRef::Positional(0),
                    )?
                },
            },
        };
        let applied =
            session.block_on(session.client.clone().apply_faults(wire::apply_request(
                &session.session_id,
                &set,
                session.seed,
                session.backend.as_deref(),
            )))?;
        let result = eval.eval_function(run, &[], &[]);
        let cleared = session.block_on(session.client.clone().clear_faults(
            faultd_proto::v1::ClearFaultsRequest {
                session_id: session.session_id.clone(),
                fault_set_id: applied.fault_set_id,
            },
        ));
        let value = result?;
        cleared?;
        Ok(value)
    }
}
