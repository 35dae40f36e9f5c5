//! Declaration builtins: `service`, `interface`, `tcp`, `http`, `op`, `deny`, `delay`, `allow`,
//! `fault_assumption`, `fault_scenario`, `fault_matrix`, `scenario` and the scoped `fault`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use starlark::codemap::FileSpan;
use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::DictRef;
use starlark::values::float::StarlarkFloat;
use starlark::values::list::ListRef;
use starlark::values::none::NoneType;
use starlark::values::tuple::{TupleRef, UnpackTuple};
use starlark::values::{Value, ValueLike};

use super::context::{ArgRef, Body, Callables, PendingTest, Site, load_state, raise, session};
use super::load_errors::{SpecError, did_you_mean};
use super::model::{
    Action, Check, FaultSet, Healthcheck, Interface, Matrix, Op, Partition, Rule, Service, Test,
};
use super::rules::{self, Target};
use super::units::{ProbabilityInput, parse_duration, parse_probability};
use super::values::{
    ActionValue, AssumptionValue, HealthcheckValue, InterfaceRefValue, InterfaceValue, OpValue,
    ServiceValue, function_name, parse_protocol,
};
use super::wire;
use crate::report::model::TestKind;
use faultd_model::syscalls;

#[starlark_module]
pub(crate) fn declarations(builder: &mut GlobalsBuilder) {
    /// A service faultd launches: `service(name, binary, *interfaces, args=, env=, depends_on=,
    /// healthcheck=, ops=)`; or a running one it targets by cgroup instead:
    /// `service(name, *interfaces, attach="cgroup:/sys/fs/cgroup/...", depends_on=, healthcheck=,
    /// ops=)` (no binary; only connect faults apply to it).
    #[allow(clippy::too_many_arguments)] // mirrors the Starlark signature
    fn service<'v>(
        #[starlark(require = pos)] name: &str,
        #[starlark(require = pos)] binary: Option<Value<'v>>,
        #[starlark(args)] interfaces: UnpackTuple<Value<'v>>,
        #[starlark(require = named)] attach: Option<&str>,
        #[starlark(require = named)] args: Option<Value<'v>>,
        #[starlark(require = named)] env: Option<Value<'v>>,
        #[starlark(require = named)] depends_on: Option<Value<'v>>,
        #[starlark(require = named)] healthcheck: Option<Value<'v>>,
        #[starlark(require = named)] ops: Option<Value<'v>>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ServiceValue> {
        let site = Site::of(eval);
        reject_unknown(
            eval,
            &site,
            "service",
            &unknown,
            &["args", "env", "depends_on", "healthcheck", "ops", "attach"],
        )?;
        let state = load_state(eval, "service")?;
        let fail = |err: SpecError| raise(eval, err);
        if name.is_empty() {
            return Err(fail(
                SpecError::new("a service needs a name").at(site.positional(0).as_ref()),
            ));
        }
        check_name("service", name, site.positional(0)).map_err(fail)?;
        if state.borrow().services.iter().any(|(s, _)| s.name == name) {
            return Err(fail(
                SpecError::new(format!("duplicate service name `{name}`"))
                    .at(site.positional(0).as_ref()),
            ));
        }
        // With attach=, the first positional after the name is already an interface.
        let (binary, first_iface) = match binary {
            Some(b) if b.downcast_ref::<InterfaceValue>().is_some() => (None, Some(b)),
            Some(b) => match b.unpack_str() {
                Some(s) => (Some(s), None),
                None => {
                    return Err(fail(
                        SpecError::new(format!(
                            "service() takes the binary (a string) after the name, got {} `{}`",
                            b.get_type(),
                            b.to_repr()
                        ))
                        .at(site.positional(1).as_ref()),
                    ));
                }
            },
            None => (None, None),
        };
        let attach_cgroup = match (binary, attach) {
            (Some(_), Some(_)) => {
                return Err(fail(
                    SpecError::new(format!(
                        "service `{name}` has both a binary and attach=; a service is either \
                         launched from its binary or attached to a running one, not both"
                    ))
                    .at(site.keyword("attach").as_ref())
                    .suggest(Some(
                        "drop the binary (and args=, env=) to attach, or drop attach= to launch"
                            .into(),
                    )),
                ));
            }
            (None, None) => {
                return Err(fail(
                    SpecError::new(format!(
                        "service `{name}` needs a binary to launch, or attach=\"cgroup:/path\" to \
                         target a running service"
                    ))
                    .at(site.call()),
                ));
            }
            (Some(_), None) => None,
            (None, Some(attach)) => match attach.strip_prefix("cgroup:") {
                Some(dir) if dir.starts_with('/') => Some(dir.to_owned()),
                _ => {
                    return Err(fail(
                        SpecError::new(format!(
                            "attach= takes \"cgroup:/absolute/path\" (a cgroup v2 directory), got \
                             {attach:?}"
                        ))
                        .at(site.keyword("attach").as_ref())
                        .suggest(Some(
                            "for example attach=\"cgroup:/sys/fs/cgroup/system.slice/db.service\""
                                .into(),
                        )),
                    ));
                }
            },
        };
        if attach_cgroup.is_some() {
            for (kw, given) in [("args", args.is_some()), ("env", env.is_some())] {
                if given {
                    return Err(fail(
                        SpecError::new(format!(
                            "{kw}= does not apply to service `{name}`: it is attached by cgroup, \
                             so faultd does not launch it"
                        ))
                        .at(site.keyword(kw).as_ref()),
                    ));
                }
            }
        }
        let offset = if first_iface.is_some() { 1 } else { 2 };
        let mut ifaces: Vec<Interface> = Vec::new();
        for (i, v) in first_iface
            .iter()
            .chain(interfaces.items.iter())
            .enumerate()
        {
            let Some(iface) = v.downcast_ref::<InterfaceValue>() else {
                return Err(fail(
                    SpecError::new(format!(
                        "service() takes interface(...) values after the binary, got {} `{}`",
                        v.get_type(),
                        v.to_repr()
                    ))
                    .at(site.positional(i + offset).as_ref()),
                ));
            };
            if ifaces.iter().any(|x| x.name == iface.0.name) {
                return Err(fail(
                    SpecError::new(format!(
                        "duplicate interface name `{}` in service `{name}`",
                        iface.0.name
                    ))
                    .at(site.positional(i + offset).as_ref()),
                ));
            }
            ifaces.push(iface.0.clone());
        }
        let mut argv = match binary {
            Some(binary) => vec![resolve_binary(&super::context::ctx(eval)?.spec_dir, binary)],
            None => Vec::new(),
        };
        if let Some(args) = args {
            argv.extend(strings(args).map_err(|m| {
                fail(SpecError::new(format!("args= {m}")).at(site.keyword("args").as_ref()))
            })?);
        }
        let env = match env {
            Some(env) => env_map(env).map_err(|m| {
                fail(SpecError::new(format!("env= {m}")).at(site.keyword("env").as_ref()))
            })?,
            None => BTreeMap::new(),
        };
        let depends_on = match depends_on {
            Some(d) => service_names(d).map_err(|m| {
                fail(
                    SpecError::new(format!("depends_on= {m}"))
                        .at(site.keyword("depends_on").as_ref()),
                )
            })?,
            None => Vec::new(),
        };
        for d in &depends_on {
            check_name(
                "service",
                d,
                site.string_in(ArgRef::Keyword("depends_on"), d),
            )
            .map_err(fail)?;
        }
        let healthcheck = match healthcheck {
            None => None,
            Some(h) if h.is_none() => None,
            Some(h) => match h.downcast_ref::<HealthcheckValue>() {
                Some(h) => Some(h.0.clone()),
                None => {
                    return Err(fail(
                        SpecError::new(format!(
                            "healthcheck= takes tcp(...) or http(...), got {} `{}`",
                            h.get_type(),
                            h.to_repr()
                        ))
                        .at(site.keyword("healthcheck").as_ref()),
                    ));
                }
            },
        };
        let ops = match ops {
            Some(ops) => op_map(ops).map_err(|m| {
                fail(SpecError::new(format!("ops= {m}")).at(site.keyword("ops").as_ref()))
            })?,
            None => Vec::new(),
        };
        for op in &ops {
            check_name(
                "op",
                &op.name,
                site.string_in(ArgRef::Keyword("ops"), &op.name),
            )
            .map_err(fail)?;
        }
        let service = Service {
            name: name.to_owned(),
            argv,
            attach_cgroup: attach_cgroup.clone(),
            env,
            interfaces: ifaces.clone(),
            healthcheck,
            depends_on,
            intercept: ops
                .iter()
                .flat_map(|o| o.syscalls.iter().cloned())
                .collect(),
            ops: ops.clone(),
        };
        state
            .borrow_mut()
            .services
            .push((service, site.call().cloned()));
        Ok(ServiceValue {
            name: name.to_owned(),
            interfaces: ifaces,
            ops,
            attached: attach_cgroup.is_some(),
        })
    }

    /// A listening interface: `interface(name, protocol, port)`, protocol `"tcp"` or `"http"`.
    fn interface<'v>(
        #[starlark(require = pos)] name: &str,
        #[starlark(require = pos)] protocol: &str,
        #[starlark(require = pos)] port: i32,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<InterfaceValue> {
        let site = Site::of(eval);
        reject_unknown(eval, &site, "interface", &unknown, &[])?;
        check_name("interface", name, site.positional(0)).map_err(|e| raise(eval, e))?;
        let Some(proto) = parse_protocol(protocol) else {
            return Err(raise(
                eval,
                SpecError::new(format!(
                    "unknown protocol `{protocol}`; supported: tcp, http"
                ))
                .at(site.positional(1).as_ref())
                .suggest(did_you_mean(protocol, ["tcp", "http"])),
            ));
        };
        let Ok(port) = u16::try_from(port)
            .map_err(drop)
            .and_then(|p| if p == 0 { Err(()) } else { Ok(p) })
        else {
            return Err(raise(
                eval,
                SpecError::new(format!("port {port} is not in 1..65535"))
                    .at(site.positional(2).as_ref()),
            ));
        };
        Ok(InterfaceValue(Interface {
            name: name.to_owned(),
            protocol: proto,
            port,
        }))
    }

    /// A TCP healthcheck: ready once `addr` ("host:port") accepts a connection.
    fn tcp<'v>(
        #[starlark(require = pos)] addr: &str,
        #[starlark(require = named)] timeout: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<HealthcheckValue> {
        healthcheck(eval, "tcp", Check::Tcp(addr.to_owned()), timeout, &unknown)
    }

    /// An HTTP healthcheck: ready once GET `url` ("host:port/path") answers 2xx or 3xx.
    fn http<'v>(
        #[starlark(require = pos)] url: &str,
        #[starlark(require = named)] timeout: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<HealthcheckValue> {
        healthcheck(eval, "http", Check::Http(url.to_owned()), timeout, &unknown)
    }

    /// A named operation: `op(syscalls=[...], path=glob)`.
    fn op<'v>(
        syscalls: Value<'v>,
        #[starlark(require = named)] path: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<OpValue> {
        let site = Site::of(eval);
        reject_unknown(eval, &site, "op", &unknown, &["syscalls", "path"])?;
        let names = strings(syscalls).map_err(|m| {
            raise(
                eval,
                SpecError::new(format!("syscalls= {m}")).at(site.keyword("syscalls").as_ref()),
            )
        })?;
        if names.is_empty() {
            return Err(raise(
                eval,
                SpecError::new("op() needs at least one syscall")
                    .at(site.keyword("syscalls").as_ref()),
            ));
        }
        for n in &names {
            if let Err(e) = rules::check_syscall(n) {
                let at = site
                    .string_in(ArgRef::Keyword("syscalls"), n)
                    .or_else(|| site.string_in(ArgRef::Positional(0), n));
                return Err(raise(eval, e.at(at.as_ref())));
            }
        }
        Ok(OpValue {
            syscalls: names,
            path: path.filter(|p| !p.is_empty()).map(str::to_owned),
        })
    }

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
        reject_unknown(
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
        Ok(value)
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
        reject_unknown(eval, &site, "crash", &unknown, &["signal", "label"])?;
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
    }

    /// Stall matching syscalls, then let them run: `delay("500ms", label=, probability=)`.
    fn delay<'v>(
        #[starlark(require = pos)] duration: &str,
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(require = named)] probability: Option<Value<'v>>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ActionValue> {
        let site = Site::of(eval);
        reject_unknown(eval, &site, "delay", &unknown, &["label", "probability"])?;
        let duration = parse_duration(duration)
            .map_err(|m| raise(eval, SpecError::new(m).at(site.positional(0).as_ref())))?;
        action(eval, &site, Action::Delay { duration }, label, probability)
    }

    /// Let matching syscalls run (overrides later, broader rules; makes them traced).
    fn allow<'v>(
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ActionValue> {
        let site = Site::of(eval);
        reject_unknown(eval, &site, "allow", &unknown, &["label"])?;
        action(eval, &site, Action::Allow, label, None)
    }

    /// A named fault set: `fault_assumption(name, target=svc, faults=[...], description=,
    /// <op or syscall>=action...)`.
    fn fault_assumption<'v>(
        #[starlark(require = pos)] name: &str,
        #[starlark(require = named)] target: Option<Value<'v>>,
        #[starlark(require = named)] faults: Option<Value<'v>>,
        #[starlark(require = named)] description: Option<&str>,
        #[starlark(kwargs)] rules: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<AssumptionValue> {
        let _ = description; // documents the assumption in the spec; not sent anywhere
        let site = Site::of(eval);
        let mut all = Vec::new();
        let mut partitions = Vec::new();
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
            }
        }
        if all.is_empty() && partitions.is_empty() {
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
                    .extend(rule.syscalls.iter().cloned());
            }
        }
        Ok(AssumptionValue(FaultSet {
            name: name.to_owned(),
            rules: all,
            partitions,
        }))
    }

    /// Cuts traffic between two services while applied: `partition(a, b, direction="both", label=)`.
    /// `direction="one_way"` cuts only `a` → `b`. Usable wherever a fault_assumption is.
    fn partition<'v>(
        #[starlark(require = pos)] a: Value<'v>,
        #[starlark(require = pos)] b: Value<'v>,
        #[starlark(require = named)] direction: Option<&str>,
        #[starlark(require = named)] label: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<AssumptionValue> {
        let site = Site::of(eval);
        reject_unknown(eval, &site, "partition", &unknown, &["direction", "label"])?;
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
        let (from, to) = (service_name(a, 0)?, service_name(b, 1)?);
        let both = match direction.unwrap_or("both") {
            "both" => true,
            "one_way" => false,
            other => {
                return Err(raise(
                    eval,
                    SpecError::new(format!("unknown partition direction `{other}`"))
                        .suggest(Some(
                            "use direction=\"both\" or direction=\"one_way\"".into(),
                        ))
                        .at(site.keyword("direction").as_ref()),
                ));
            }
        };
        Ok(AssumptionValue(FaultSet {
            name: format!("partition_{from}_{to}"),
            rules: Vec::new(),
            partitions: vec![Partition {
                from,
                to,
                both,
                label: label.filter(|l| !l.is_empty()).map(str::to_owned),
            }],
        }))
    }

    /// Registers `fn` as a test run without faults, named after the function.
    fn scenario<'v>(
        #[starlark(require = pos)] function: Value<'v>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let site = Site::of(eval);
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
                rules: rules_from_kwargs(eval, &site, target, &rules, ArgRef::Positional(0))?,
                partitions: Vec::new(),
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

fn healthcheck<'v>(
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

fn action<'v>(
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
                ProbabilityInput::Number(f64::from(i))
            } else if let Some(f) = p.downcast_ref::<StarlarkFloat>() {
                ProbabilityInput::Number(f.0)
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
    })
}

/// Rules for `key=action` keywords on a service (or interface) target.
fn rules_from_kwargs<'v>(
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

fn bad_target(
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
fn reject_unknown(
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

fn check_callable(
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
fn check_name(what: &'static str, name: &str, at: Option<FileSpan>) -> Result<(), SpecError> {
    faultd_model::names::check(what, name).map_err(|e| {
        SpecError::new(e.to_string())
            .at(at.as_ref())
            .suggest(wire::allowed_name(name).map(|n| format!("for example `{n}`")))
    })
}

/// Adds a test, rejecting a duplicate name.
fn register(
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

fn resolve_binary(spec_dir: &Path, binary: &str) -> String {
    let path = Path::new(binary);
    if path.is_absolute() || !binary.contains('/') {
        return binary.to_owned();
    }
    let joined: PathBuf = spec_dir.join(path);
    joined.to_string_lossy().into_owned()
}

fn list_items(value: Value<'_>) -> Result<Vec<Value<'_>>, String> {
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

fn strings(value: Value<'_>) -> Result<Vec<String>, String> {
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

fn scalar_string(v: Value<'_>) -> Option<String> {
    if let Some(s) = v.unpack_str() {
        return Some(s.to_owned());
    }
    match v.get_type() {
        "int" | "float" | "bool" => Some(v.to_str()),
        _ => None,
    }
}

fn env_map(value: Value<'_>) -> Result<BTreeMap<String, String>, String> {
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

fn service_names(value: Value<'_>) -> Result<Vec<String>, String> {
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

fn op_map(value: Value<'_>) -> Result<Vec<Op>, String> {
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
fn assumptions(value: Value<'_>) -> Result<Vec<FaultSet>, String> {
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
