//! `partition(a, b, direction="both", label=, run=)`: traffic between two services is cut while the
//! fault set is applied. Without `run=` it is a fault set, usable wherever a fault_assumption is;
//! with `run=fn` it is applied around `fn()` inside a test. Directions: `"both"`, `"one_way"` or the
//! peer's `"a_to_b"` (only `a` → `b`), and `"b_to_a"`.

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::{Value, ValueLike};

use super::super::context::{Site, raise};
use super::super::load_errors::{SpecError, did_you_mean};
use super::super::model::{FaultSet, Partition};
use super::super::values::{AssumptionValue, ServiceValue};
use super::args::reject_unknown;
use super::imperative::scoped;

/// Which way traffic is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Both,
    AToB,
    BToA,
}

const DIRECTIONS: &[&str] = &["both", "one_way", "a_to_b", "b_to_a"];

#[starlark_module]
pub(super) fn partition(builder: &mut GlobalsBuilder) {
    /// Cuts traffic between two services: a fault set, or applied around `run()` when given.
    fn partition<'v>(
        #[starlark(require = pos)] a: Value<'v>,
        #[starlark(require = pos)] b: Value<'v>,
        #[starlark(require = named)] direction: Option<&str>,
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(require = named)] run: Option<Value<'v>>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<Value<'v>> {
        let site = Site::of(eval);
        reject_unknown(
            eval,
            &site,
            "partition",
            &unknown,
            &["direction", "label", "run"],
        )?;
        let dir = self::direction(eval, direction)?;
        let set = partition_set(eval, a, b, dir, label)?;
        match run.filter(|r| !r.is_none()) {
            Some(run) => scoped(eval, &set, run, "partition(run=)"),
            None => Ok(eval.heap().alloc(AssumptionValue(set))),
        }
    }
}

/// Parses `direction=`; `None` is both ways.
pub(super) fn direction(
    eval: &Evaluator<'_, '_, '_>,
    direction: Option<&str>,
) -> anyhow::Result<Direction> {
    Ok(match direction.unwrap_or("both") {
        "both" => Direction::Both,
        "one_way" | "a_to_b" => Direction::AToB,
        "b_to_a" => Direction::BToA,
        other => {
            let site = Site::of(eval);
            return Err(raise(
                eval,
                SpecError::new(format!("unknown partition direction `{other}`"))
                    .suggest(did_you_mean(other, DIRECTIONS.iter().copied()).or_else(|| {
                        Some(
                            "use direction=\"both\", \"a_to_b\" (or \"one_way\") or \"b_to_a\""
                                .into(),
                        )
                    }))
                    .at(site.keyword("direction").as_ref()),
            ));
        }
    })
}

/// The fault set cutting `a` and `b` in `dir`.
pub(super) fn partition_set<'v>(
    eval: &Evaluator<'v, '_, '_>,
    a: Value<'v>,
    b: Value<'v>,
    dir: Direction,
    label: Option<&str>,
) -> anyhow::Result<FaultSet> {
    let site = Site::of(eval);
    let service_name = |v: Value<'v>, arg: usize| -> anyhow::Result<String> {
        v.downcast_ref::<ServiceValue>()
            .map(|s| s.name.clone())
            .ok_or_else(|| {
                raise(
                    eval,
                    SpecError::new(format!(
                        "partition() takes two services, got {} `{}`",
                        v.get_type(),
                        v.to_repr()
                    ))
                    .at(site.positional(arg).as_ref()),
                )
            })
    };
    let (a, b) = (service_name(a, 0)?, service_name(b, 1)?);
    let (from, to) = match dir {
        Direction::BToA => (b, a),
        Direction::Both | Direction::AToB => (a, b),
    };
    Ok(FaultSet {
        name: format!("partition_{from}_{to}"),
        rules: Vec::new(),
        partitions: vec![Partition {
            from,
            to,
            both: dir == Direction::Both,
            label: label.filter(|l| !l.is_empty()).map(str::to_owned),
        }],
        proxy_rules: Vec::new(),
    })
}
