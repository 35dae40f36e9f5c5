//! `after=N` and `max_fires=N`, which every action takes: let the first N matching calls through,
//! fire at most N times ("crash at the third write" is `crash(after=2, max_fires=1)`).

use starlark::collections::SmallMap;
use starlark::eval::Evaluator;
use starlark::values::Value;

use super::super::context::{Site, raise};
use super::super::load_errors::SpecError;
use super::super::values::ActionValue;
use faultd_model::Trigger;

use super::args::reject_unknown;

/// Rejects the keywords `builtin` does not take (its `known` ones and the triggers aside), and reads
/// the triggers.
pub(super) fn triggers<'v>(
    eval: &Evaluator<'v, '_, '_>,
    site: &Site,
    builtin: &str,
    unknown: &SmallMap<String, Value<'v>>,
    known: &[&str],
) -> anyhow::Result<Trigger> {
    let mut rest = unknown.clone();
    let after = rest.shift_remove("after");
    let max_fires = rest.shift_remove("max_fires");
    let mut all: Vec<&str> = known.to_vec();
    all.extend(["after", "max_fires"]);
    reject_unknown(eval, site, builtin, &rest, &all)?;
    let count = |name: &str, v: Option<Value<'v>>, min: i32| -> anyhow::Result<Option<u64>> {
        let Some(v) = v.filter(|v| !v.is_none()) else {
            return Ok(None);
        };
        match v.unpack_i32().filter(|n| *n >= min) {
            Some(n) => Ok(Some(n as u64)),
            None => Err(raise(
                eval,
                SpecError::new(format!(
                    "{builtin}({name}=) takes a whole number of calls, at least {min}, not `{}`",
                    v.to_repr()
                ))
                .suggest(Some(
                    "e.g. after=2, max_fires=1 fires on the third matching call only".into(),
                ))
                .at(site.keyword(name).as_ref()),
            )),
        }
    };
    Ok(Trigger {
        after: count("after", after, 0)?.unwrap_or(0),
        max_fires: count("max_fires", max_fires, 1)?,
    })
}

/// `value` with `trigger`.
pub(super) fn triggered(value: ActionValue, trigger: Trigger) -> ActionValue {
    ActionValue { trigger, ..value }
}
