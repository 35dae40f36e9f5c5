//! Spec model to `faultd.v1` messages.

use faultd_proto::v1 as pb;

use super::model::{Action, Check, FaultSet, Protocol, ProxyAction, ProxyRule, Rule, Service};

/// `name` with each run of characters a name may not hold replaced by `-`, without leading or
/// trailing `.`/`-`, cut to the longest name allowed; `None` when nothing is left.
pub fn allowed_name(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out
        .trim_matches(|c| c == '.' || c == '-')
        .chars()
        .take(faultd_model::names::MAX_NAME_LEN)
        .collect();
    faultd_model::names::check("", &trimmed)
        .is_ok()
        .then_some(trimmed)
}

/// The session name faultd gets for a test: its name when allowed (`faultd_model::names`), else the
/// closest allowed name, else `test`. Only a label for faultd's logs and trace.
pub fn session_name(test: &str) -> String {
    allowed_name(test).unwrap_or_else(|| "test".into())
}

/// A service as faultd launches it.
pub fn service(s: &Service) -> pb::ServiceSpec {
    pb::ServiceSpec {
        name: s.name.clone(),
        argv: s.argv.clone(),
        env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        clear_env: false,
        cwd: s.cwd.clone().unwrap_or_default(),
        user: s.user.clone().unwrap_or_default(),
        interfaces: s
            .interfaces
            .iter()
            .map(|i| pb::Interface {
                name: i.name.clone(),
                protocol: match i.protocol {
                    Protocol::Tcp => pb::Protocol::Tcp,
                    Protocol::Http => pb::Protocol::Http,
                    Protocol::Redis => pb::Protocol::Redis,
                    Protocol::Postgres => pb::Protocol::Postgres,
                } as i32,
                host: String::new(),
                port: u32::from(i.port),
                proxy_port: i.proxy_port.map_or(0, u32::from),
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
                Check::Redis(address) => pb::healthcheck::Check::Redis(pb::RedisCheck {
                    address: address.clone(),
                }),
                Check::Postgres {
                    addr,
                    user,
                    database,
                } => pb::healthcheck::Check::Postgres(pb::PostgresCheck {
                    address: addr.clone(),
                    user: user.clone(),
                    database: database.clone(),
                }),
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
        resolve_paths: s.resolve_paths,
        mock: s.mock.clone().unwrap_or_default(),
        network: if s.host_network { "host" } else { "" }.into(),
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
            Action::Short { fraction } => pb::fault_rule::Action::Short(pb::Short {
                fraction: fraction.get(),
            }),
            Action::Lie => pb::fault_rule::Action::Lie(pb::Lie {}),
            Action::Volatile => pb::fault_rule::Action::Volatile(pb::Volatile {}),
            Action::PowerLoss { mode } => pb::fault_rule::Action::PowerLoss(pb::PowerLoss {
                mode: mode.as_str().to_owned(),
                seed: None,
            }),
        }),
        probability: r.probability,
        label: r.label.clone().unwrap_or_default(),
        backend: String::new(),
        after: r.trigger.after,
        max_fires: r.trigger.max_fires,
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
        proxy_rules: set.proxy_rules.iter().map(proxy_rule).collect(),
    }
}

/// One protocol fault.
pub fn proxy_rule(r: &ProxyRule) -> pb::ProxyRule {
    let m = |k: &str| r.matchers.get(k).cloned().unwrap_or_default();
    pb::ProxyRule {
        service: r.service.clone(),
        interface: r.interface.clone(),
        r#match: Some(pb::ProxyMatch {
            method: m("method"),
            path: m("path"),
            command: m("command"),
            key: m("key"),
            query: m("query"),
        }),
        action: Some(match &r.action {
            ProxyAction::Error {
                status,
                message,
                sqlstate,
            } => pb::proxy_rule::Action::Error(pb::ProxyError {
                status: status.map_or(0, u32::from),
                message: message.clone().unwrap_or_default(),
                sqlstate: sqlstate.clone().unwrap_or_default(),
            }),
            ProxyAction::Response {
                status,
                body,
                headers,
            } => pb::proxy_rule::Action::Response(pb::ProxyResponse {
                status: status.map_or(0, u32::from),
                body: body.clone().into_bytes(),
                headers: headers.clone().into_iter().collect(),
            }),
            ProxyAction::Delay(d) => pb::proxy_rule::Action::Delay(pb::Delay {
                duration_us: u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            }),
            ProxyAction::Drop => pb::proxy_rule::Action::Drop(pb::ProxyDrop {}),
        }),
        probability: r.probability,
        label: r.label.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_names_faultd_accepts() {
        assert_eq!(
            session_name("matrix_persist_wal_broken"),
            "matrix_persist_wal_broken"
        );
        assert_eq!(session_name("WAL broken: fsync"), "WAL-broken-fsync");
        assert_eq!(session_name("../.."), "test");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
        assert_eq!(allowed_name("../etc/passwd").as_deref(), Some("etc-passwd"));
    }
}
