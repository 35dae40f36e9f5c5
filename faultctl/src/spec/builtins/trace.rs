//! `trace(svc, syscalls=[...], run=fn)`, `trace_start(svc, syscalls=[...])`, `trace_stop(svc)`: record
//! these syscalls of `svc`, each as an `allow` event with its path, for `events()` and the
//! assertions.
//!
//! A seccomp filter is fixed when its service starts, so what a spec traces is intercepted (and its
//! paths resolved) from launch, for the whole of every test: the spec is scanned for `trace(<name>,
//! syscalls=[...])` as for `fault(<name>, ...)`. At run time these builtins check that the service
//! does intercept the syscalls (a target or list the scan could not read is refused with the reason)
//! and `trace(run=)` returns what `run()` returns. They add no rule, so they never hide a fault.

use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::Value;
use starlark::values::none::NoneType;

use super::super::context::{ArgRef, Site, session};
use super::args::{bad_target, strings, target_of};

#[starlark_module]
pub(super) fn trace(builder: &mut GlobalsBuilder) {
    /// Runs `run()` with `syscalls` of `svc` in the trace; returns what `run()` returned.
    fn trace<'v>(
        #[starlark(require = pos)] target: Value<'v>,
        syscalls: Value<'v>,
        #[starlark(require = named)] run: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> starlark::Result<Value<'v>> {
        check(eval, target, syscalls, "trace()")?;
        eval.eval_function(run, &[], &[])
    }

    /// Records `syscalls` of `svc` in the trace (they are, for the whole test: see the module doc).
    fn trace_start<'v>(
        #[starlark(require = pos)] target: Value<'v>,
        syscalls: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        check(eval, target, syscalls, "trace_start()")?;
        Ok(NoneType)
    }

    /// Ends `trace_start(svc)`: the peer's specs call it; the syscalls stay intercepted (as the
    /// filter is fixed at launch) and keep appearing as `allow` events.
    fn trace_stop<'v>(
        #[starlark(require = pos)] target: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let site = Site::of(eval);
        session(eval, "trace_stop()")?;
        target_of(target).ok_or_else(|| bad_target(eval, &site, target, ArgRef::Positional(0)))?;
        Ok(NoneType)
    }
}

/// Refuses a trace of syscalls the service's filter does not intercept.
fn check<'v>(
    eval: &Evaluator<'v, '_, '_>,
    target: Value<'v>,
    syscalls: Value<'v>,
    what: &str,
) -> anyhow::Result<()> {
    let site = Site::of(eval);
    let session = session(eval, what)?;
    let (service, _, _) =
        target_of(target).ok_or_else(|| bad_target(eval, &site, target, ArgRef::Positional(0)))?;
    let names = strings(syscalls).map_err(|m| anyhow::anyhow!("{what} syscalls= {m}"))?;
    let intercepted = session.intercepted.get(&service);
    for name in &names {
        let expanded = faultd_model::syscalls::expand(name)
            .ok_or_else(|| anyhow::anyhow!("{what}: unknown syscall or family `{name}`"))?;
        let missing: Vec<&str> = expanded
            .iter()
            .map(|s| s.name)
            .filter(|n| !intercepted.is_some_and(|i| i.contains(*n)))
            .collect();
        if !missing.is_empty() {
            let now: Vec<&str> = intercepted
                .map(|i| i.iter().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(anyhow::anyhow!(
                "service `{service}` does not intercept {} (its seccomp filter is fixed at launch; \
                 intercepting: {}): write the call as trace(<service variable>, syscalls=[\"{name}\"], \
                 ...) with a list of string literals, so that faultctl sees it before the services \
                 start",
                missing.join(", "),
                if now.is_empty() {
                    "nothing".to_owned()
                } else {
                    now.join(", ")
                }
            ));
        }
    }
    Ok(())
}
