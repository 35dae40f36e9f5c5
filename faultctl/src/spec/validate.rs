//! Checks that need the whole spec, run after evaluation: `def test_*` discovery, `depends_on`
//! names and cycles, `fault(service, key=...)` keywords (which also widen the service's intercept
//! set), and the final test order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use starlark::environment::Module;
use starlark::values::ValueLike;

use super::ast_scan::SourceIndex;
use super::builtins::target_of;
use super::context::{Body, Callables, LoadState, PendingTest};
use super::load_errors::{SpecError, did_you_mean};
use super::model::{Service, Spec, Test};
use super::rules::{self, Target};
use super::values::{ActionValue, AssumptionValue};
use crate::report::model::TestKind;

/// Turns the load state into a [`Spec`] plus the body of each test (same order).
pub(crate) fn finish(
    path: &Path,
    module: &Module<'_>,
    mut state: LoadState,
    source: &SourceIndex,
) -> Result<(Spec, Vec<Body>), SpecError> {
    discover_def_tests(module, &mut state, source)?;
    check_depends_on(&state)?;
    let mut intercept = std::mem::take(&mut state.intercept);
    scan_fault_calls(module, &state, source, &mut intercept)?;
    scan_trace_calls(module, source, &mut intercept)?;
    let queries_trace = TRACE_QUERIES.iter().any(|q| source.called.contains(*q));

    let mut services: Vec<Service> = state
        .services
        .into_iter()
        .map(|(mut s, _)| {
            if let Some(extra) = intercept.remove(&s.name) {
                s.intercept.extend(extra);
            }
            s.resolve_paths = queries_trace && s.attach_cgroup.is_none();
            s
        })
        .collect();
    super::wiring::wire(&mut services);
    let mut tests = state.tests;
    tests.sort_by_key(|t| t.position.begin());
    let (tests, bodies): (Vec<Test>, Vec<Body>) =
        tests.into_iter().map(|t| (t.test, t.body)).unzip();
    Ok((
        Spec {
            path: path.to_owned(),
            services,
            tests,
            matrices: state.matrices,
        },
        bodies,
    ))
}

/// Every top-level `def test_*` is a test, unless it is already registered with `scenario(...)`.
fn discover_def_tests(
    module: &Module<'_>,
    state: &mut LoadState,
    source: &SourceIndex,
) -> Result<(), SpecError> {
    let callables = module
        .extra_value()
        .and_then(|v| v.downcast_ref::<Callables<'_>>())
        .ok_or_else(|| SpecError::new("internal: callables registry missing"))?;
    for (name, span) in &source.defs {
        if !name.starts_with("test_") {
            continue;
        }
        let Some(function) = module.get(name).filter(|v| v.get_type() == "function") else {
            continue;
        };
        let site = source.file_span(*span);
        if let Some(existing) = state.tests.iter().find(|t| &t.test.name == name) {
            if existing.test.kind == TestKind::Scenario {
                continue;
            }
            return Err(SpecError::new(format!("duplicate test name `{name}`"))
                .at(existing.site.as_ref())
                .suggest(Some(format!(
                    "`def {name}` is already a test; rename one of them"
                ))));
        }
        let test = Test {
            name: name.clone(),
            kind: TestKind::Test,
            scenario: None,
            fault: None,
            faults: Vec::new(),
            timeout: None,
            cell: None,
        };
        let id = callables.add(function);
        state.tests.push(PendingTest {
            test,
            body: Body::Call(id),
            position: *span,
            site: Some(site),
        });
    }
    Ok(())
}

fn check_depends_on(state: &LoadState) -> Result<(), SpecError> {
    let names: Vec<&str> = state
        .services
        .iter()
        .map(|(s, _)| s.name.as_str())
        .collect();
    for (s, site) in &state.services {
        for dep in &s.depends_on {
            if !names.contains(&dep.as_str()) {
                return Err(SpecError::new(format!(
                    "service `{}` depends on `{dep}`, which is not declared",
                    s.name
                ))
                .at(site.as_ref())
                .suggest(did_you_mean(dep, names.iter().copied())));
            }
        }
    }
    let deps: BTreeMap<&str, Vec<&str>> = state
        .services
        .iter()
        .map(|(s, _)| {
            (
                s.name.as_str(),
                s.depends_on.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let mut done = BTreeSet::new();
    for (s, site) in &state.services {
        let mut path = Vec::new();
        if let Some(cycle) = find_cycle(s.name.as_str(), &deps, &mut path, &mut done) {
            return Err(
                SpecError::new(format!("depends_on cycle: {}", cycle.join(" → ")))
                    .at(site.as_ref())
                    .suggest(Some(
                        "services start in depends_on order; remove one of these dependencies"
                            .into(),
                    )),
            );
        }
    }
    Ok(())
}

fn find_cycle<'a>(
    node: &'a str,
    deps: &BTreeMap<&'a str, Vec<&'a str>>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|n| *n == node) {
        let mut cycle: Vec<String> = path[start..].iter().map(|s| (*s).to_owned()).collect();
        cycle.push(node.to_owned());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node);
    for dep in deps.get(node).into_iter().flatten() {
        if let Some(c) = find_cycle(dep, deps, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node);
    None
}

/// Builtins that read the test's trace: when a spec calls one, every launched service resolves the
/// path of each intercepted syscall (allowed ones too), as the queries' `path=` filters need.
const TRACE_QUERIES: &[&str] = &[
    "events",
    "assert_eventually",
    "assert_never",
    "assert_before",
    "trace",
    "trace_start",
];

/// `trace(<name>, syscalls=[...])` calls: the syscalls must exist, and are intercepted from launch.
fn scan_trace_calls(
    module: &Module<'_>,
    source: &SourceIndex,
    intercept: &mut BTreeMap<String, BTreeSet<String>>,
) -> Result<(), SpecError> {
    for call in &source.trace_calls {
        let Some((service, _, _)) = module.get(&call.target).and_then(target_of) else {
            continue;
        };
        for (name, span) in &call.keys {
            rules::check_syscall(name).map_err(|e| e.at(Some(&source.file_span(*span))))?;
            intercept
                .entry(service.clone())
                .or_default()
                .insert(name.clone());
        }
    }
    Ok(())
}

/// `fault(<name>, key=...)` calls: keys must be the target's ops or syscalls, and their syscalls are
/// intercepted from launch.
fn scan_fault_calls(
    module: &Module<'_>,
    state: &LoadState,
    source: &SourceIndex,
    intercept: &mut BTreeMap<String, BTreeSet<String>>,
) -> Result<(), SpecError> {
    let others: Vec<(String, String)> = state
        .services
        .iter()
        .flat_map(|(s, _)| s.ops.iter().map(|o| (s.name.clone(), o.name.clone())))
        .collect();
    let placeholder = ActionValue {
        action: super::model::Action::Allow,
        label: None,
        probability: None,
        destination: None,
        trigger: Default::default(),
    };
    for call in &source.fault_calls {
        let Some(target) = module.get(&call.target) else {
            continue;
        };
        if let Some(a) = target.downcast_ref::<AssumptionValue>() {
            if let Some((key, span)) = call.keys.first() {
                return Err(SpecError::new(format!(
                    "fault() on fault_assumption `{}` takes only run=; `{key}=` belongs in the assumption",
                    a.0.name
                ))
                .at(Some(&source.file_span(*span))));
            }
            continue;
        }
        let Some((service, ops, attached)) = target_of(target) else {
            continue;
        };
        for (key, span) in &call.keys {
            let rule = rules::resolve(
                Target {
                    service: &service,
                    ops: &ops,
                    attached,
                },
                key,
                &placeholder,
                &others,
            )
            .map_err(|e| e.at(Some(&source.file_span(*span))))?;
            intercept
                .entry(service.clone())
                .or_default()
                .extend(rule.syscalls);
        }
    }
    Ok(())
}
