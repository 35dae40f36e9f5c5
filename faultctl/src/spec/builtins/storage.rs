//! Storage fault actions: `short`, `lie`, `volatile` and `power_loss` (seccomp only; faultd does the
//! I/O, answers the sync or tracks the file itself).

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::float::StarlarkFloat;
use starlark::values::{Value, ValueLike};

use super::super::context::{Site, raise};
use super::super::load_errors::SpecError;
use super::super::model::Action;
use super::super::values::ActionValue;
use faultd_model::{Fraction, PowerLossMode};

use super::args::*;
use super::triggers::{triggered, triggers};

#[starlark_module]
pub(super) fn storage(builder: &mut GlobalsBuilder) {
    /// Reads and writes transfer only a prefix, `floor(n × fraction)` bytes (at least 1), and return
    /// that count: `short(fraction=0.5, label=, probability=)`.
    fn short<'v>(
        #[starlark(require = named)] fraction: Option<Value<'v>>,
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(require = named)] probability: Option<Value<'v>>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ActionValue> {
        let site = Site::of(eval);
        let trigger = triggers(
            eval,
            &site,
            "short",
            &unknown,
            &["fraction", "label", "probability"],
        )?;
        let number = match fraction.filter(|f| !f.is_none()) {
            None => Some(0.5),
            Some(v) => v
                .unpack_i32()
                .map(f64::from)
                .or_else(|| v.downcast_ref::<StarlarkFloat>().map(|f| f.0)),
        };
        let Some(fraction) = number.and_then(Fraction::new) else {
            return Err(raise(
                eval,
                SpecError::new("short(fraction=) takes a number in (0, 1]")
                    .suggest(Some(
                        "e.g. short(fraction=0.5) transfers half of each call".into(),
                    ))
                    .at(site.keyword("fraction").as_ref()),
            ));
        };
        action(eval, &site, Action::Short { fraction }, label, probability)
            .map(|v| triggered(v, trigger))
    }

    /// Syncs answer success without syncing; writes answer the full count and write nothing:
    /// `lie(label=, probability=)`.
    fn lie<'v>(
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(require = named)] probability: Option<Value<'v>>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ActionValue> {
        let site = Site::of(eval);
        let trigger = triggers(eval, &site, "lie", &unknown, &["label", "probability"])?;
        action(eval, &site, Action::Lie, label, probability).map(|v| triggered(v, trigger))
    }

    /// The calls run, but the files they touch sit in a volatile write cache until synced:
    /// `volatile(label=)`.
    fn volatile<'v>(
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ActionValue> {
        let site = Site::of(eval);
        let trigger = triggers(eval, &site, "volatile", &unknown, &["label"])?;
        action(eval, &site, Action::Volatile, label, None).map(|v| triggered(v, trigger))
    }

    /// Cut the power at the matched call: every process of the service is killed and every tracked
    /// file goes back to its durable state: `power_loss(mode="drop"|"torn", label=, probability=)`.
    fn power_loss<'v>(
        #[starlark(require = named)] mode: Option<&str>,
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(require = named)] probability: Option<Value<'v>>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ActionValue> {
        let site = Site::of(eval);
        let trigger = triggers(
            eval,
            &site,
            "power_loss",
            &unknown,
            &["mode", "label", "probability"],
        )?;
        let mode =
            parse_mode(mode).map_err(|e| raise(eval, e.at(site.keyword("mode").as_ref())))?;
        action(eval, &site, Action::PowerLoss { mode }, label, probability)
            .map(|v| triggered(v, trigger))
    }
}

/// `drop` (the default) or `torn`.
pub(crate) fn parse_mode(mode: Option<&str>) -> Result<PowerLossMode, SpecError> {
    let mode = mode.unwrap_or("drop");
    PowerLossMode::parse(mode).ok_or_else(|| {
        SpecError::new(format!("unknown power loss mode `{mode}`")).suggest(Some(
            "use mode=\"drop\" (unsynced writes are lost) or mode=\"torn\" (a seeded prefix of \
             them survives)"
                .into(),
        ))
    })
}
