//! Queries over the current test's timeline: `events(**filters)` and `assert_eventually`,
//! `assert_never`, `assert_before(first={...}, then={...})`. Filters: `service` (a name or a service),
//! `syscall`, `op`, `path`, `decision`, `errno`, `label` (exact, or a glob with `*`/`?`), and
//! `where=lambda e: ...`. Failure messages quote the nearest events (see `spec::timeline`).

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::DictRef;
use starlark::values::list::AllocList;
use starlark::values::none::NoneType;
use starlark::values::{Value, ValueLike};

use super::super::context::session;
use super::super::load_errors::did_you_mean;
use super::super::timeline::{self, EventValue, FIELDS, Filter};
use super::super::values::ServiceValue;
use crate::report::model::EventReport;

#[starlark_module]
pub(super) fn queries(builder: &mut GlobalsBuilder) {
    /// The events of the current test that match every filter, in order.
    fn events<'v>(
        #[starlark(kwargs)] filters: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let query = Query::parse(&filters, "events")?;
        let all = timeline_of(eval, "events()")?;
        let found = query.run(eval, &all)?;
        let heap = eval.heap();
        Ok(heap.alloc(AllocList(
            found.into_iter().map(|e| heap.alloc(EventValue(e.clone()))),
        )))
    }

    /// Fails unless some event of the test matches.
    fn assert_eventually<'v>(
        #[starlark(kwargs)] filters: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let query = Query::parse(&filters, "assert_eventually")?;
        let all = timeline_of(eval, "assert_eventually()")?;
        if query.run(eval, &all)?.is_empty() {
            return Err(anyhow::anyhow!(
                "assert_eventually failed: {}{}",
                timeline::none_matched(&query.filter, &all),
                query.where_note()
            ));
        }
        Ok(NoneType)
    }

    /// Fails if any event of the test matches, naming it.
    fn assert_never<'v>(
        #[starlark(kwargs)] filters: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let query = Query::parse(&filters, "assert_never")?;
        let all = timeline_of(eval, "assert_never()")?;
        let found = query.run(eval, &all)?;
        if let Some(first) = found.first() {
            return Err(anyhow::anyhow!(
                "assert_never failed: event #{} matches {}{}: {}",
                first.seq,
                query.filter,
                query.where_note(),
                timeline::quote(&found)
            ));
        }
        Ok(NoneType)
    }

    /// Fails unless an event matching `first` comes before every event matching `then` (and both
    /// happen): the first matches of each are compared.
    fn assert_before<'v>(
        #[starlark(require = named)] first: Value<'v>,
        #[starlark(require = named)] then: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let (a, b) = (
            Query::from_dict(first, "first")?,
            Query::from_dict(then, "then")?,
        );
        let all = timeline_of(eval, "assert_before()")?;
        let fa = a.run(eval, &all)?.first().copied();
        let fb = b.run(eval, &all)?.first().copied();
        match (fa, fb) {
            (None, _) => Err(anyhow::anyhow!(
                "assert_before failed: first= never happened: {}",
                timeline::none_matched(&a.filter, &all)
            )),
            (Some(_), None) => Err(anyhow::anyhow!(
                "assert_before failed: then= never happened: {}",
                timeline::none_matched(&b.filter, &all)
            )),
            (Some(x), Some(y)) if y.seq < x.seq => Err(anyhow::anyhow!(
                "assert_before failed: then= ({}) came first: {} before {}",
                b.filter,
                timeline::describe(y),
                timeline::describe(x)
            )),
            _ => Ok(NoneType),
        }
    }
}

fn timeline_of(eval: &Evaluator<'_, '_, '_>, what: &str) -> anyhow::Result<Vec<EventReport>> {
    session(eval, what)?.timeline()
}

/// One query's filters.
struct Query<'v> {
    filter: Filter,
    predicate: Option<Value<'v>>,
}

impl<'v> Query<'v> {
    fn parse(kwargs: &SmallMap<String, Value<'v>>, builtin: &str) -> anyhow::Result<Self> {
        let pairs: Vec<(&str, Value<'v>)> = kwargs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        Self::from_pairs(&pairs, builtin)
    }

    fn from_dict(value: Value<'v>, kw: &str) -> anyhow::Result<Self> {
        let dict = DictRef::from_value(value).ok_or_else(|| {
            anyhow::anyhow!(
                "assert_before({kw}=) takes a dict of filters such as {{\"syscall\": \"fsync\"}}, got {}",
                value.get_type()
            )
        })?;
        let mut pairs = Vec::new();
        for (k, v) in dict.iter() {
            let k = k.unpack_str().ok_or_else(|| {
                anyhow::anyhow!("assert_before({kw}=) keys are filter names (strings)")
            })?;
            pairs.push((k, v));
        }
        Self::from_pairs(&pairs, &format!("assert_before({kw}=)"))
    }

    fn from_pairs(pairs: &[(&str, Value<'v>)], builtin: &str) -> anyhow::Result<Self> {
        let mut query = Query {
            filter: Filter::default(),
            predicate: None,
        };
        for (key, value) in pairs {
            if value.is_none() {
                continue;
            }
            if *key == "where" {
                if value.get_type() != "function" {
                    return Err(anyhow::anyhow!(
                        "{builtin}: where= takes a function of the event, such as `lambda e: e.retval < 0`"
                    ));
                }
                query.predicate = Some(*value);
                continue;
            }
            if !FIELDS.contains(key) {
                let mut known: Vec<&str> = FIELDS.to_vec();
                known.push("where");
                let hint = did_you_mean(key, known.iter().copied())
                    .unwrap_or_else(|| format!("filters: {}=", known.join("=, ")));
                return Err(anyhow::anyhow!("{builtin}: unknown filter `{key}`; {hint}"));
            }
            let text = if let Some(s) = value.downcast_ref::<ServiceValue>() {
                s.name.clone()
            } else if let Some(s) = value.unpack_str() {
                s.to_owned()
            } else {
                return Err(anyhow::anyhow!(
                    "{builtin}: {key}= takes a string (a glob with `*`), got {} `{}`",
                    value.get_type(),
                    value.to_repr()
                ));
            };
            query.filter = query.filter.with(key, &text);
        }
        Ok(query)
    }

    /// The events matching the filters and the `where=` predicate.
    fn run<'e>(
        &self,
        eval: &mut Evaluator<'v, '_, '_>,
        events: &'e [EventReport],
    ) -> anyhow::Result<Vec<&'e EventReport>> {
        let mut out = Vec::new();
        for e in events.iter().filter(|e| self.filter.matches(e)) {
            if let Some(p) = self.predicate {
                let value = eval.heap().alloc(EventValue(e.clone()));
                let keep = eval
                    .eval_function(p, &[value], &[])
                    .map_err(starlark::Error::into_anyhow)?;
                if !keep.to_bool() {
                    continue;
                }
            }
            out.push(e);
        }
        Ok(out)
    }

    fn where_note(&self) -> &'static str {
        if self.predicate.is_some() {
            " (with where=)"
        } else {
            ""
        }
    }
}
