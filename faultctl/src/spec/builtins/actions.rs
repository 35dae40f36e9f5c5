//! Fault actions: `deny`, `crash`, `delay`, `allow` (`partition(a, b)` is in `partition.rs`).

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::{Value, ValueLike};

use super::super::context::{Site, raise};
use super::super::load_errors::SpecError;
use super::super::model::Action;
use super::super::rules::{self};
use super::super::units::parse_duration;
use super::super::values::{ActionValue, InterfaceRefValue};
use faultd_model::syscalls;

use super::args::*;
use super::triggers::{triggered, triggers};

#[starlark_module]
pub(super) fn actions(builder: &mut GlobalsBuilder) {
    /// Fail matching syscalls with `errno`: `deny("EIO", label=, probability=)`.
    fn deny<'v>(
        #[starlark(require = pos)] errno: &str,
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(require = named)] probability: Option<Value<'v>>,
        #[starlark(require = named)] to: Option<Value<'v>>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ActionValue> {
        let site = Site::of(eval);
        let trigger = triggers(
            eval,
            &site,
            "deny",
            &unknown,
            &["label", "probability", "to"],
        )?;
        let errno = rules::check_errno(errno)
            .map_err(|e| raise(eval, e.at(site.positional(0).as_ref())))?;
        let destination = match to.filter(|t| !t.is_none()) {
            None => None,
            Some(t) => match t.downcast_ref::<InterfaceRefValue>() {
                Some(iface) => Some(format!("127.0.0.1:{}", iface.iface.port)),
                None => {
                    return Err(raise(
                        eval,
                        SpecError::new(format!(
                            "deny(to=) takes a service interface such as `db.main`, not a {}",
                            t.get_type()
                        ))
                        .at(site.keyword("to").as_ref()),
                    ));
                }
            },
        };
        let mut value = action(eval, &site, Action::Deny { errno }, label, probability)?;
        value.destination = destination;
        Ok(triggered(value, trigger))
    }

    /// Kill the calling process at the entry of matching syscalls, before they take effect:
    /// `crash(signal="SIGKILL", label=)`.
    fn crash<'v>(
        #[starlark(require = named)] signal: Option<&str>,
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ActionValue> {
        let site = Site::of(eval);
        let trigger = triggers(eval, &site, "crash", &unknown, &["signal", "label"])?;
        let signal = signal.unwrap_or("SIGKILL");
        let Some(number) = syscalls::signal(signal) else {
            let known: Vec<_> = syscalls::signal_names().collect();
            return Err(raise(
                eval,
                SpecError::new(format!("unknown signal `{signal}`"))
                    .suggest(Some(format!("known signals: {}", known.join(", "))))
                    .at(site.keyword("signal").as_ref()),
            ));
        };
        let name = syscalls::signal_name(number).unwrap_or(signal).to_owned();
        action(eval, &site, Action::Crash { signal: name }, label, None)
            .map(|v| triggered(v, trigger))
    }

    /// Stall matching syscalls, then let them run: `delay("500ms", label=, probability=)`. With
    /// `delay="500ms"` (and matchers) instead, a protocol delay: `fault(db.main, delay(delay="1s",
    /// query="SELECT*"), run=f)`.
    fn delay<'v>(
        #[starlark(require = pos)] duration: Option<&str>,
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(require = named)] probability: Option<Value<'v>>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        let site = Site::of(eval);
        let Some(duration) = duration else {
            let Some(text) = unknown.get("delay").and_then(|v| v.unpack_str()) else {
                return Err(raise(
                    eval,
                    SpecError::new("delay() needs a duration")
                        .suggest(Some(
                            "delay(\"500ms\") for syscalls, delay(delay=\"500ms\", ...) for a protocol"
                                .into(),
                        ))
                        .at(site.call()),
                ));
            };
            let duration = parse_duration(text)
                .map_err(|m| raise(eval, SpecError::new(m).at(site.keyword("delay").as_ref())))?;
            let rule =
                super::protocol::delay_rule(eval, &site, duration, label, probability, &unknown)?;
            return Ok(eval.heap().alloc(rule));
        };
        let trigger = triggers(eval, &site, "delay", &unknown, &["label", "probability"])?;
        let duration = parse_duration(duration)
            .map_err(|m| raise(eval, SpecError::new(m).at(site.positional(0).as_ref())))?;
        let value = action(eval, &site, Action::Delay { duration }, label, probability)?;
        Ok(eval.heap().alloc(triggered(value, trigger)))
    }

    /// Let matching syscalls run (overrides later, broader rules; makes them traced).
    fn allow<'v>(
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ActionValue> {
        let site = Site::of(eval);
        let trigger = triggers(eval, &site, "allow", &unknown, &["label"])?;
        action(eval, &site, Action::Allow, label, None).map(|v| triggered(v, trigger))
    }
}
