//! The topology builtins: `service`, `interface`, `tcp`, `http`, `op`.

use std::collections::BTreeMap;

use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::tuple::UnpackTuple;
use starlark::values::{Value, ValueLike};

use super::super::context::{ArgRef, Site, load_state, raise};
use super::super::load_errors::{SpecError, did_you_mean};
use super::super::model::{Check, Interface, Service};
use super::super::rules::{self};
use super::super::values::{
    HealthcheckValue, InterfaceValue, OpValue, ServiceValue, parse_protocol,
};

use super::args::*;

#[starlark_module]
pub(super) fn topology(builder: &mut GlobalsBuilder) {
    /// A service faultd launches: `service(name, binary, *interfaces, args=, env=, depends_on=,
    /// healthcheck=, ops=, user=, cwd=, network=)`; or a running one it targets by cgroup instead:
    /// `service(name, *interfaces, attach="cgroup:/sys/fs/cgroup/...", depends_on=, healthcheck=,
    /// ops=)` (no binary; only connect faults apply to it). `network="host"` puts the service, and
    /// so its whole session, on the host's network instead of a namespace of the session's own.
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
        #[starlark(require = named)] user: Option<&str>,
        #[starlark(require = named)] cwd: Option<&str>,
        #[starlark(require = named)] network: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ServiceValue> {
        let site = Site::of(eval);
        reject_unknown(
            eval,
            &site,
            "service",
            &unknown,
            &[
                "args",
                "env",
                "depends_on",
                "healthcheck",
                "ops",
                "attach",
                "user",
                "cwd",
                "network",
            ],
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
        let proxied = super::super::context::ctx(eval)?.source.proxied.clone();
        for iface in &mut ifaces {
            super::proxy_port::assign(name, iface, &proxied)
                .map_err(|why| fail(SpecError::new(why).at(site.call())))?;
        }
        let mut argv = match binary {
            Some(binary) => vec![resolve_binary(
                &super::super::context::ctx(eval)?.spec_dir,
                binary,
            )],
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
        let host_network = match network {
            None | Some("") => false,
            Some("host") => true,
            Some(other) => {
                return Err(fail(
                    SpecError::new(format!(
                        "network= takes \"host\" (the host's network instead of a namespace of \
                         the session's own), got {other:?}"
                    ))
                    .at(site.keyword("network").as_ref())
                    .suggest(Some(
                        "leave network= out for an isolated session, or say network=\"host\""
                            .into(),
                    )),
                ));
            }
        };
        let spec_dir = &super::super::context::ctx(eval)?.spec_dir;
        let service = Service {
            name: name.to_owned(),
            argv,
            mock: None,
            attach_cgroup: attach_cgroup.clone(),
            env,
            user: user.filter(|u| !u.is_empty()).map(str::to_owned),
            cwd: cwd
                .filter(|c| !c.is_empty())
                .map(|c| spec_dir.join(c).to_string_lossy().into_owned()),
            interfaces: ifaces.clone(),
            healthcheck,
            depends_on,
            intercept: ops
                .iter()
                .flat_map(|o| o.syscalls.iter().cloned())
                .collect(),
            ops: ops.clone(),
            resolve_paths: false,
            host_network,
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

    /// A listening interface: `interface(name, protocol, port, proxy=False)`, protocol `"tcp"`,
    /// `"http"`, `"redis"` or `"postgres"`. `proxy=True` stands a faultd proxy in front of it (an
    /// interface a protocol fault targets gets one anyway).
    fn interface<'v>(
        #[starlark(require = pos)] name: &str,
        #[starlark(require = pos)] protocol: &str,
        #[starlark(require = pos)] port: i32,
        #[starlark(require = named, default = false)] proxy: bool,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<InterfaceValue> {
        let site = Site::of(eval);
        reject_unknown(eval, &site, "interface", &unknown, &["proxy"])?;
        check_name("interface", name, site.positional(0)).map_err(|e| raise(eval, e))?;
        let Some(proto) = parse_protocol(protocol) else {
            return Err(raise(
                eval,
                SpecError::new(format!(
                    "unknown protocol `{protocol}`; supported: tcp, http, redis, postgres"
                ))
                .at(site.positional(1).as_ref())
                .suggest(did_you_mean(protocol, ["tcp", "http", "redis", "postgres"])),
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
            // Chosen by service(): 0 marks the wish.
            proxy_port: proxy.then_some(0),
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

    /// A protocol-level healthcheck: `ready(addr, "redis")` (PING answers PONG) or
    /// `ready(addr, "postgres", user=, database=)` (a session runs `SELECT 1`); `"tcp"` and
    /// `"http"` are the same as `tcp(addr)` and `http(url)`.
    fn ready<'v>(
        #[starlark(require = pos)] addr: &str,
        #[starlark(require = pos)] protocol: &str,
        #[starlark(require = named)] timeout: Option<&str>,
        #[starlark(require = named)] user: Option<&str>,
        #[starlark(require = named)] database: Option<&str>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<HealthcheckValue> {
        let check = match protocol {
            "tcp" => Check::Tcp(addr.to_owned()),
            "http" => Check::Http(addr.to_owned()),
            "redis" => Check::Redis(addr.to_owned()),
            "postgres" => Check::Postgres {
                addr: addr.to_owned(),
                user: user.unwrap_or_default().to_owned(),
                database: database.unwrap_or_default().to_owned(),
            },
            other => {
                let site = Site::of(eval);
                return Err(raise(
                    eval,
                    SpecError::new(format!(
                        "ready() knows the protocols tcp, http, redis and postgres, not `{other}`"
                    ))
                    .at(site.positional(1).as_ref())
                    .suggest(did_you_mean(other, ["tcp", "http", "redis", "postgres"])),
                ));
            }
        };
        healthcheck(eval, "ready", check, timeout, &unknown)
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
}
