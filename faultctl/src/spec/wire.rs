//! Spec model to `faultd.v1` messages.

use faultd_proto::v1 as pb;

use super::model::{Action, Check, FaultSet, Protocol, Rule, Service};

/// A service as faultd launches it.
pub fn service(s: &Service) -> pb::ServiceSpec {
    pb::ServiceSpec {
        name: s.name.clone(),
        argv: s.argv.clone(),
        env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        clear_env: false,
        cwd: String::new(),
        interfaces: s
            .interfaces
            .iter()
            .map(|i| pb::Interface {
                name: i.name.clone(),
                protocol: match i.protocol {
                    Protocol::Tcp => pb::Protocol::Tcp,
                    Protocol::Http => pb::Protocol::Http,
                } as i32,
                host: String::new(),
                port: u32::from(i.port),
            })
            .collect(),
        healthcheck: s.healthcheck.as_ref().map(|h| pb::Healthcheck {
            check: Some(match &h.check {
                Check::Tcp(address) => pb::healthcheck::Check::Tcp(pb::TcpCheck {
                    address: address.clone(),
                }),
                Check::Http(url) => {
                    pb::healthcheck::Check::Http(pb::HttpCheck { url: url.clone() })
                }
            }),
            timeout_ms: h
                .timeout
                .map_or(0, |t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
            interval_ms: 0,
        }),
        depends_on: s.depends_on.clone(),
        ops: s
            .ops
            .iter()
            .map(|o| pb::Op {
                name: o.name.clone(),
                syscalls: o.syscalls.clone(),
                path_glob: o.path.clone().unwrap_or_default(),
            })
            .collect(),
        // An attached service is not launched: there is no seccomp filter to install.
        intercept_syscalls: if s.attach_cgroup.is_some() {
            Vec::new()
        } else {
            s.intercept.iter().cloned().collect()
        },
        stop_grace_ms: 0,
        attach_cgroup: s.attach_cgroup.clone().unwrap_or_default(),
    }
}

/// One fault rule.
pub fn rule(r: &Rule) -> pb::FaultRule {
    pb::FaultRule {
        service: r.service.clone(),
        op: r.op.clone().unwrap_or_default(),
        syscalls: r.syscalls.clone(),
        path_glob: r.path.clone().unwrap_or_default(),
        destination: r.destination.clone().unwrap_or_default(),
        action: Some(match &r.action {
            Action::Deny { errno } => pb::fault_rule::Action::Deny(pb::Deny {
                errno: errno.clone(),
            }),
            Action::Delay { duration } => pb::fault_rule::Action::Delay(pb::Delay {
                duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            }),
            Action::Allow => pb::fault_rule::Action::Allow(pb::Allow {}),
            Action::Crash { signal } => pb::fault_rule::Action::Crash(pb::Crash {
                signal: signal.clone(),
            }),
        }),
        probability: r.probability,
        label: r.label.clone().unwrap_or_default(),
        backend: String::new(),
    }
}

/// `ApplyFaults` for one fault set; `backend` forces every rule onto one backend.
pub fn apply_request(
    session_id: &str,
    set: &FaultSet,
    seed: u64,
    backend: Option<&str>,
) -> pb::ApplyFaultsRequest {
    pb::ApplyFaultsRequest {
        session_id: session_id.to_owned(),
        rules: set
            .rules
            .iter()
            .map(|r| pb::FaultRule {
                backend: backend.unwrap_or_default().to_owned(),
                ..rule(r)
            })
            .collect(),
        seed,
        partitions: set
            .partitions
            .iter()
            .map(|p| pb::Partition {
                from_service: p.from.clone(),
                to_service: p.to.clone(),
                both_directions: p.both,
                label: p.label.clone().unwrap_or_default(),
            })
            .collect(),
    }
}
