//! Protobuf messages to engine types and back: pure conversions, no engine calls.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use faultd_proto::v1 as pb;

use crate::auth::Caller;
use tonic::Status;

use crate::health::HealthCheck;
use crate::launch::LaunchSpec;
use crate::rules::{Action, Fraction, PowerLossMode, Rule, RuleSpec};
use crate::session::{InterfaceConfig, OpConfig, Protocol, ServiceConfig};
use crate::syscalls;
use crate::trace::{self, Decision, EventKind};

pub(super) fn sorted(map: std::collections::HashMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort();
    pairs
}

pub(super) fn service_config(s: pb::ServiceSpec, caller: &Caller) -> Result<ServiceConfig, Status> {
    let attach_cgroup = (!s.attach_cgroup.is_empty()).then(|| PathBuf::from(&s.attach_cgroup));
    if let Some(dir) = &attach_cgroup {
        // Any cgroup of the host could be named: faults on processes the caller does not own.
        if !caller.admin {
            return Err(Status::permission_denied(format!(
                "service {}: only root may attach faultd to an existing cgroup ({})",
                s.name, s.attach_cgroup
            )));
        }
        if !s.argv.is_empty() {
            return Err(Status::invalid_argument(format!(
                "service {} sets both argv and attach_cgroup; an attached service is not launched, \
                 so leave argv empty",
                s.name
            )));
        }
        if !s.intercept_syscalls.is_empty() {
            return Err(Status::invalid_argument(format!(
                "service {} is attached by cgroup, so it takes no intercept_syscalls: faultd does \
                 not launch it and cannot install a seccomp filter in it",
                s.name
            )));
        }
        if !dir.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "service {}: attach_cgroup {:?} is not an absolute path to a cgroup v2 directory",
                s.name, s.attach_cgroup
            )));
        }
    }
    let mut argv = s.argv;
    if !s.mock.is_empty() {
        argv = super::mock::argv(
            &s.name,
            &s.mock,
            &argv,
            &s.interfaces,
            attach_cgroup.is_some(),
        )?;
    }
    if attach_cgroup.is_none() {
        // The launcher execs exactly the program checked here.
        let program = crate::launch::check_program(&argv, s.env.iter(), &s.cwd)
            .map_err(|e| Status::invalid_argument(format!("service {}: {e}", s.name)))?;
        argv[0] = program.to_string_lossy().into_owned();
    }
    let healthcheck = match s.healthcheck {
        None => None,
        Some(h) => {
            let check = match h.check {
                Some(pb::healthcheck::Check::Tcp(t)) => HealthCheck::Tcp { address: t.address },
                Some(pb::healthcheck::Check::Http(u)) => HealthCheck::Http { url: u.url },
                Some(pb::healthcheck::Check::Redis(r)) => HealthCheck::Redis { address: r.address },
                Some(pb::healthcheck::Check::Postgres(p)) => HealthCheck::Postgres {
                    address: p.address,
                    login: crate::step::PgLogin {
                        user: p.user,
                        database: p.database,
                        password: String::new(),
                    },
                },
                None => {
                    return Err(Status::invalid_argument(format!(
                        "service {}: a healthcheck needs tcp, http, redis or postgres",
                        s.name
                    )));
                }
            };
            check.validate().map_err(|e| {
                Status::invalid_argument(format!("service {}: healthcheck: {e}", s.name))
            })?;
            let ms = |v: u32, default: u64| {
                Duration::from_millis(if v == 0 { default } else { v.into() })
            };
            Some((check, ms(h.timeout_ms, 10_000), ms(h.interval_ms, 50)))
        }
    };
    let interfaces = s
        .interfaces
        .into_iter()
        .map(|i| {
            let protocol = match pb::Protocol::try_from(i.protocol) {
                Ok(pb::Protocol::Http) => Protocol::Http,
                Ok(pb::Protocol::Tcp) => Protocol::Tcp,
                Ok(pb::Protocol::Redis) => Protocol::Redis,
                Ok(pb::Protocol::Postgres) => Protocol::Postgres,
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "service {}: interface {} needs a protocol (tcp, http, redis or postgres)",
                        s.name, i.name
                    )));
                }
            };
            let port = u16::try_from(i.port).map_err(|_| {
                Status::invalid_argument(format!(
                    "interface {}: port {} is out of range",
                    i.name, i.port
                ))
            })?;
            let proxy_port = match i.proxy_port {
                0 => None,
                p => Some(u16::try_from(p).ok().filter(|p| *p != port).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "interface {}: proxy port {p} is out of range or the interface's own port",
                        i.name
                    ))
                })?),
            };
            Ok(InterfaceConfig {
                name: i.name,
                protocol,
                host: i.host,
                port,
                proxy_port,
            })
        })
        .collect::<Result<_, Status>>()?;
    Ok(ServiceConfig {
        launch: LaunchSpec {
            argv,
            env: sorted(s.env),
            clear_env: s.clear_env,
            cwd: (!s.cwd.is_empty()).then(|| s.cwd.into()),
            run_as: run_as(&s.name, &s.user, caller)?,
        },
        interfaces,
        healthcheck,
        depends_on: s.depends_on,
        ops: s
            .ops
            .into_iter()
            .map(|o| OpConfig {
                name: o.name,
                syscalls: o.syscalls,
                path_glob: (!o.path_glob.is_empty()).then_some(o.path_glob),
            })
            .collect(),
        intercept: s.intercept_syscalls,
        attach_cgroup,
        resolve_paths: s.resolve_paths,
        host_network: match s.network.as_str() {
            "" => false,
            "host" => true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "service {}: network {other:?} is not known; leave it empty for a namespace of \
                     the session's own, or say \"host\"",
                    s.name
                )));
            }
        },
        stop_grace: Duration::from_millis(match s.stop_grace_ms {
            0 => 2000,
            ms => ms.into(),
        }),
        name: s.name,
    })
}

/// Who a service runs as: the named `user` (root callers only), else the caller's user.
fn run_as(
    service: &str,
    user: &str,
    caller: &Caller,
) -> Result<Option<crate::launch::RunAs>, Status> {
    if user.is_empty() {
        return Ok(caller.run_as.clone());
    }
    if caller.run_as.is_some() {
        return Err(Status::permission_denied(format!(
            "service {service}: only callers whose services run as root may run one as user {user:?}"
        )));
    }
    crate::launch::RunAs::user(user).map(Some).map_err(|e| {
        Status::invalid_argument(format!(
            "service {service}: cannot run as user {user:?}: {e}"
        ))
    })
}

pub(super) fn rule_spec(r: pb::FaultRule) -> Result<RuleSpec, Status> {
    let action = match r.action {
        Some(pb::fault_rule::Action::Deny(d)) => Action::Deny {
            errno: syscalls::errno(&d.errno).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown errno {:?}; known: {}",
                    d.errno,
                    syscalls::errno_names().collect::<Vec<_>>().join(", ")
                ))
            })?,
        },
        Some(pb::fault_rule::Action::Delay(d)) => {
            Action::Delay(Duration::from_micros(d.duration_us))
        }
        Some(pb::fault_rule::Action::Allow(_)) => Action::Allow,
        Some(pb::fault_rule::Action::Crash(c)) => {
            let name = if c.signal.is_empty() {
                "SIGKILL"
            } else {
                &c.signal
            };
            Action::Crash {
                signal: syscalls::signal(name).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown signal {name:?}; known: {}",
                        syscalls::signal_names().collect::<Vec<_>>().join(", ")
                    ))
                })?,
            }
        }
        Some(pb::fault_rule::Action::Short(s)) => Action::Short {
            fraction: Fraction::new(s.fraction).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "short(fraction={}) needs a fraction in (0, 1], e.g. 0.5",
                    s.fraction
                ))
            })?,
        },
        Some(pb::fault_rule::Action::Lie(_)) => Action::Lie,
        Some(pb::fault_rule::Action::Volatile(_)) => Action::Volatile,
        Some(pb::fault_rule::Action::PowerLoss(p)) => Action::PowerLoss {
            mode: power_loss_mode(&p.mode)?,
        },
        None => {
            return Err(Status::invalid_argument(
                "a fault rule needs an action: deny, delay, allow, crash, short, lie, volatile or \
                 power_loss",
            ));
        }
    };
    if r.max_fires == Some(0) {
        return Err(Status::invalid_argument(
            "max_fires=0 would never fire: give at least 1, or leave it unset for no bound",
        ));
    }
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(RuleSpec {
        service: r.service,
        op: non_empty(r.op),
        syscalls: r.syscalls,
        path_glob: non_empty(r.path_glob),
        destination: non_empty(r.destination),
        action,
        probability: r.probability.unwrap_or(1.0),
        label: non_empty(r.label),
        trigger: crate::rules::Trigger {
            after: r.after,
            max_fires: r.max_fires,
        },
    })
}

pub(super) fn resolved_rule(r: &Rule) -> pb::ResolvedRule {
    pb::ResolvedRule {
        rule_id: r.id,
        service: r.service.to_string(),
        op: r.op.as_deref().unwrap_or_default().to_string(),
        syscalls: r.syscalls.iter().map(|s| s.name.to_string()).collect(),
        path_glob: r.path_glob.clone().unwrap_or_default(),
        backend: r.backend.to_string(),
    }
}

/// The summaries of `rules`, the parts of a rule split across backends merged back into one (its
/// syscalls, hits and matches together, its backends joined by `+`, e.g. `ebpf-lsm+seccomp`).
pub(super) fn rule_summaries<'r>(
    rules: impl IntoIterator<Item = &'r Arc<Rule>>,
) -> Vec<pb::RuleSummary> {
    let mut out: Vec<pb::RuleSummary> = Vec::new();
    for rule in rules {
        let first = rule
            .split_from
            .and_then(|origin| out.iter_mut().find(|s| s.rule_id == origin));
        let Some(first) = first else {
            out.push(rule_summary(rule));
            continue;
        };
        let part = rule_summary(rule);
        first.syscalls.extend(part.syscalls);
        first.hits += part.hits;
        first.matches += part.matches;
        if !first.backend.split('+').any(|b| b == part.backend) {
            first.backend = format!("{}+{}", first.backend, part.backend);
        }
    }
    out
}

fn rule_summary(r: &Rule) -> pb::RuleSummary {
    pb::RuleSummary {
        rule_id: r.id,
        fault_set_id: r.fault_set.to_string(),
        service: r.service.to_string(),
        op: r.op.as_deref().unwrap_or_default().to_string(),
        syscalls: r.syscalls.iter().map(|s| s.name.to_string()).collect(),
        path_glob: r.path_glob.clone().unwrap_or_default(),
        destination: r.destination.clone().unwrap_or_default(),
        action: Some(summary_action(&r.action)),
        label: r.label.as_deref().unwrap_or_default().to_string(),
        hits: r.hits(),
        backend: r.backend.to_string(),
        matches: r.matches_count(),
        after: r.trigger().after,
        max_fires: r.trigger().max_fires,
        proxy: None,
    }
}

/// An action as the wire's `RuleSummary.action`: the same messages `FaultRule` takes.
pub(super) fn summary_action(action: &Action) -> pb::rule_summary::Action {
    use pb::rule_summary::Action as A;
    match *action {
        Action::Deny { errno } => A::Deny(pb::Deny {
            errno: syscalls::errno_name(errno).map_or_else(|| errno.to_string(), str::to_owned),
        }),
        Action::Delay(d) => A::Delay(pb::Delay {
            duration_us: u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        }),
        Action::Allow => A::Allow(pb::Allow {}),
        Action::Crash { signal } => A::Crash(pb::Crash {
            signal: syscalls::signal_name(signal).map_or_else(|| signal.to_string(), str::to_owned),
        }),
        Action::Short { fraction } => A::Short(pb::Short {
            fraction: fraction.get(),
        }),
        Action::Lie => A::Lie(pb::Lie {}),
        Action::Volatile => A::Volatile(pb::Volatile {}),
        Action::PowerLoss { mode } => A::PowerLoss(pb::PowerLoss {
            mode: mode.as_str().to_owned(),
            seed: None,
        }),
    }
}

/// `drop` (also when empty) or `torn`.
pub(super) fn power_loss_mode(mode: &str) -> Result<PowerLossMode, Status> {
    match mode {
        "" => Ok(PowerLossMode::Drop),
        m => PowerLossMode::parse(m).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown power loss mode {m:?}: use \"drop\" (unsynced writes are lost) or \"torn\" \
                 (a seeded prefix of them survives)"
            ))
        }),
    }
}

pub(super) fn exit_message(
    status: trace::ExitStatus,
    stopped_by_faultd: bool,
) -> pb::ServiceExited {
    let (code, signal) = match status {
        trace::ExitStatus::Code(c) => (c, 0),
        trace::ExitStatus::Signal(s) => (-1, s),
    };
    pb::ServiceExited {
        code,
        signal,
        stopped_by_faultd,
    }
}

/// The protobuf form of an engine event, as `WatchEvents` and `WatchEventBatches` send it.
pub fn event_message(e: &trace::Event) -> pb::Event {
    use pb::event::Kind;
    let kind = match &e.kind {
        EventKind::Syscall(s) => Kind::Syscall(pb::SyscallEvent {
            pid: s.pid,
            tid: s.tid,
            syscall: s.syscall.to_string(),
            nr: s.nr as i32,
            op: s.op.as_deref().unwrap_or_default().to_string(),
            path: s.path.clone().unwrap_or_default(),
            decision: match s.decision {
                Decision::Allow => pb::Decision::Allow,
                Decision::Deny => pb::Decision::Deny,
                Decision::Delay => pb::Decision::Delay,
                Decision::Crash => pb::Decision::Crash,
                Decision::Observed => pb::Decision::Observed,
                Decision::Short => pb::Decision::Short,
                Decision::Lie => pb::Decision::Lie,
                Decision::Volatile => pb::Decision::Volatile,
                Decision::PowerLoss => pb::Decision::PowerLoss,
            } as i32,
            errno: s.errno,
            errno_name: syscalls::errno_name(s.errno)
                .unwrap_or_default()
                .to_string(),
            delay_us: s.delay.as_micros() as u64,
            label: s.label.as_deref().unwrap_or_default().to_string(),
            rule_id: s.rule_id,
            backend: s.backend.to_string(),
            signal: s.signal,
            retval: s.retval.unwrap_or_default(),
            has_retval: s.retval.is_some(),
            latency_ns: s.latency.as_nanos() as u64,
            io_requested: s.io.map_or(0, |(asked, _)| asked),
            io_done: s.io.map_or(0, |(_, done)| done),
        }),
        EventKind::Started { pid, cgroup } => Kind::Started(pb::ServiceStarted {
            pid: *pid,
            cgroup: cgroup.clone().unwrap_or_default(),
        }),
        EventKind::Ready { after } => Kind::Ready(pb::ServiceReady {
            ready_ms: after.as_millis() as u64,
        }),
        EventKind::Exited {
            status,
            stopped_by_faultd,
        } => Kind::Exited(exit_message(*status, *stopped_by_faultd)),
        EventKind::Output { stream, line } => Kind::Output(pb::ServiceOutput {
            stream: match stream {
                trace::Stream::Stdout => pb::OutputStream::Stdout,
                trace::Stream::Stderr => pb::OutputStream::Stderr,
            } as i32,
            line: line.clone(),
        }),
        EventKind::FaultsApplied {
            fault_set,
            rules,
            seed,
        } => Kind::FaultsApplied(pb::FaultsApplied {
            fault_set_id: fault_set.to_string(),
            rules: rules
                .iter()
                .map(|r| pb::ResolvedRule {
                    rule_id: r.id,
                    service: r.service.to_string(),
                    op: r.op.as_deref().unwrap_or_default().to_string(),
                    syscalls: r.syscalls.iter().map(|s| s.to_string()).collect(),
                    path_glob: r.path_glob.clone().unwrap_or_default(),
                    backend: r.backend.to_string(),
                })
                .collect(),
            seed: *seed,
        }),
        EventKind::FaultsCleared { fault_set } => Kind::FaultsCleared(pb::FaultsCleared {
            fault_set_id: fault_set.to_string(),
        }),
        EventKind::StepSent { interface, summary } => Kind::StepSent(pb::StepSent {
            interface: interface.clone(),
            summary: summary.clone(),
        }),
        EventKind::StepAnswered {
            ok,
            status,
            error,
            duration,
        } => Kind::StepAnswered(pb::StepAnswered {
            ok: *ok,
            status: (*status).into(),
            error: error.clone(),
            duration_us: duration.as_micros() as u64,
        }),
        EventKind::Dropped { count } => Kind::Dropped(pb::EventsDropped { count: *count }),
        EventKind::Proxy(p) => Kind::Proxy(super::proxy::proxy_event(p)),
    };
    pb::Event {
        seq: e.seq,
        time_unix_ns: e
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        service: e.service.as_deref().unwrap_or_default().to_string(),
        time_ns: e.time_ns,
        kind: Some(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::BackendKind;
    use crate::rules::SeededRng;

    #[test]
    fn the_parts_of_a_split_rule_are_reported_as_one() {
        let spec = RuleSpec {
            trigger: Default::default(),
            service: "db".into(),
            op: Some("persist".into()),
            syscalls: vec!["write".into(), "fsync".into()],
            path_glob: None,
            destination: None,
            action: Action::Deny { errno: libc::EIO },
            probability: 1.0,
            label: None,
        };
        let mut whole = Rule::compile(3, "fs1".into(), &spec, Arc::new(SeededRng::new(0))).unwrap();
        whole.split_from = Some(3);
        let (writes, syncs) = whole.syscalls.split_at(3);
        let mut first = whole.part(3, writes.to_vec());
        first.backend = BackendKind::EbpfLsm;
        let mut second = whole.part(4, syncs.to_vec());
        second.backend = BackendKind::Seccomp;
        let other = Rule::compile(5, "fs1".into(), &spec, Arc::new(SeededRng::new(0))).unwrap();
        let rules = [Arc::new(first), Arc::new(second), Arc::new(other)];

        let summaries = rule_summaries(&rules);
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[0].rule_id, 3);
        assert_eq!(
            summaries[0].syscalls,
            ["write", "writev", "pwrite64", "fsync", "fdatasync"]
        );
        assert_eq!(summaries[0].backend, "ebpf-lsm+seccomp");
        assert_eq!(
            (summaries[1].rule_id, &*summaries[1].backend),
            (5, "seccomp")
        );
    }
}
