//! Faults switched on and off inside a test, as the peer's specs do it: `fault_start(svc, **rules)` /
//! `fault_stop(svc)` and `partition_start(a, b)` / `partition_stop(a, b)`, plus the scoped
//! `partition(a, b, run=fn)`. Each start applies one fault set (named ops resolved, like `fault()`);
//! a second start on the same service (or pair) replaces the first; a stop without a start does
//! nothing. Whatever is still started when the test ends goes with its session.

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::Value;
use starlark::values::none::NoneType;

use super::super::context::{ArgRef, Site, TestSession, session};
use super::super::model::FaultSet;
use super::super::wire;
use super::args::{bad_target, rules_from_kwargs, target_of};
use super::partition::{direction, partition_set};

#[starlark_module]
pub(super) fn imperative(builder: &mut GlobalsBuilder) {
    /// Applies `**rules` to `svc` until `fault_stop(svc)` or the end of the test.
    fn fault_start<'v>(
        #[starlark(require = pos)] target: Value<'v>,
        #[starlark(kwargs)] rules: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let site = Site::of(eval);
        let session = session(eval, "fault_start()")?.clone();
        let (service, _, _) = target_of(target)
            .ok_or_else(|| bad_target(eval, &site, target, ArgRef::Positional(0)))?;
        if rules.is_empty() {
            return Err(anyhow::anyhow!(
                "fault_start({service}) has no rules; give some such as write=deny(\"EIO\")"
            ));
        }
        let set = FaultSet {
            name: format!("fault_start_{service}"),
            rules: rules_from_kwargs(eval, &site, target, &rules, ArgRef::Positional(0))?,
            partitions: Vec::new(),
            proxy_rules: Vec::new(),
        };
        start(&session, format!("fault:{service}"), &set)?;
        Ok(NoneType)
    }

    /// Removes the rules `fault_start(svc, ...)` applied.
    fn fault_stop<'v>(
        #[starlark(require = pos)] target: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let site = Site::of(eval);
        let session = session(eval, "fault_stop()")?.clone();
        let (service, _, _) = target_of(target)
            .ok_or_else(|| bad_target(eval, &site, target, ArgRef::Positional(0)))?;
        stop(&session, &format!("fault:{service}"))?;
        Ok(NoneType)
    }

    /// Cuts traffic between `a` and `b` until `partition_stop(a, b)` or the end of the test.
    fn partition_start<'v>(
        #[starlark(require = pos)] a: Value<'v>,
        #[starlark(require = pos)] b: Value<'v>,
        #[starlark(require = named)] direction: Option<&str>,
        #[starlark(require = named)] label: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let session = session(eval, "partition_start()")?.clone();
        let dir = self::direction(eval, direction)?;
        let set = partition_set(eval, a, b, dir, label)?;
        start(&session, pair_key(&set), &set)?;
        Ok(NoneType)
    }

    /// Heals the partition `partition_start(a, b)` made.
    fn partition_stop<'v>(
        #[starlark(require = pos)] a: Value<'v>,
        #[starlark(require = pos)] b: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let session = session(eval, "partition_stop()")?.clone();
        let dir = self::direction(eval, None)?;
        let set = partition_set(eval, a, b, dir, None)?;
        stop(&session, &pair_key(&set))?;
        Ok(NoneType)
    }
}

/// The same key for `(a, b)` and `(b, a)`.
fn pair_key(set: &FaultSet) -> String {
    let mut pair: Vec<&str> = set
        .partitions
        .iter()
        .flat_map(|p| [p.from.as_str(), p.to.as_str()])
        .collect();
    pair.sort_unstable();
    pair.dedup();
    format!("partition:{}", pair.join(":"))
}

fn apply(session: &TestSession, set: &FaultSet) -> anyhow::Result<String> {
    let request = wire::apply_request(
        &session.session_id,
        set,
        session.seed,
        session.backend.as_deref(),
    );
    Ok(session
        .block_on(session.client.clone().apply_faults(request))?
        .fault_set_id)
}

fn clear(session: &TestSession, fault_set_id: String) -> anyhow::Result<()> {
    let request = faultd_proto::v1::ClearFaultsRequest {
        session_id: session.session_id.clone(),
        fault_set_id,
    };
    session.block_on(session.client.clone().clear_faults(request))?;
    Ok(())
}

fn start(session: &TestSession, key: String, set: &FaultSet) -> anyhow::Result<()> {
    stop(session, &key)?;
    let id = apply(session, set)?;
    session
        .started
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, id);
    Ok(())
}

fn stop(session: &TestSession, key: &str) -> anyhow::Result<()> {
    let id = session
        .started
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(key);
    match id {
        Some(id) => clear(session, id),
        None => Ok(()),
    }
}

/// Applies `set` around `run()`: removed when `run` returns or fails; returns what `run` returned.
pub(super) fn scoped<'v>(
    eval: &mut Evaluator<'v, '_, '_>,
    set: &FaultSet,
    run: Value<'v>,
    what: &str,
) -> starlark::Result<Value<'v>> {
    let session = session(eval, what)?.clone();
    let id = apply(&session, set)?;
    let result = eval.eval_function(run, &[], &[]);
    let cleared = clear(&session, id);
    let value = result?;
    cleared?;
    Ok(value)
}
