//! What a client asks for: the services of a session, their interfaces, ops and dependencies, and the
//! partitions of a fault set. Plain data, validated when the session starts.

use std::time::Duration;

use crate::engine::EngineError;
use crate::health::HealthCheck;
use crate::launch::LaunchSpec;
use crate::syscalls::{self, Syscall};

/// An interface a service listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Its name (`main`, `public`).
    pub name: String,
    /// `tcp`, `http`, `redis` or `postgres`.
    pub protocol: Protocol,
    /// Host, `127.0.0.1` when empty.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Port of the proxy faultd stands in front of it, if it has one.
    pub proxy_port: Option<u16>,
}

impl InterfaceConfig {
    /// `host:port`.
    pub fn addr(&self) -> String {
        let host = if self.host.is_empty() {
            "127.0.0.1"
        } else {
            &self.host
        };
        format!("{host}:{}", self.port)
    }

    /// Where consumers and steps reach it: the proxy when it has one, else the service.
    pub fn public_addr(&self) -> String {
        match self.proxy_port {
            Some(port) => format!("{}:{port}", self.host_or_default()),
            None => self.addr(),
        }
    }

    fn host_or_default(&self) -> &str {
        if self.host.is_empty() {
            "127.0.0.1"
        } else {
            &self.host
        }
    }
}

/// How steps talk to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A line protocol over TCP.
    Tcp,
    /// HTTP/1.1.
    Http,
    /// RESP2/RESP3.
    Redis,
    /// PostgreSQL protocol 3.
    Postgres,
}

impl Protocol {
    /// Its name in specs and the trace.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Redis => "redis",
            Protocol::Postgres => "postgres",
        }
    }
}

/// A named group of syscalls with an optional path glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpConfig {
    /// Op name.
    pub name: String,
    /// Syscall or family names.
    pub syscalls: Vec<String>,
    /// Path glob.
    pub path_glob: Option<String>,
}

/// One service to run.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Unique within the session.
    pub name: String,
    /// What to run and how.
    pub launch: LaunchSpec,
    /// Its interfaces.
    pub interfaces: Vec<InterfaceConfig>,
    /// Readiness check, timeout and interval.
    pub healthcheck: Option<(HealthCheck, Duration, Duration)>,
    /// Services that must be ready first.
    pub depends_on: Vec<String>,
    /// Its named ops.
    pub ops: Vec<OpConfig>,
    /// Syscall or family names its filter intercepts.
    pub intercept: Vec<String>,
    /// SIGTERM-to-SIGKILL grace period.
    pub stop_grace: Duration,
    /// An existing cgroup v2 directory whose processes are the service: faultd launches nothing,
    /// never signals them and never removes the directory.
    pub attach_cgroup: Option<std::path::PathBuf>,
    /// Resolve the path of every intercepted syscall for the trace, not only of those a rule concerns.
    pub resolve_paths: bool,
    /// Asked for the host's network (`network="host"`): its whole session shares it.
    pub host_network: bool,
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A label.
    pub name: String,
    /// Its services.
    pub services: Vec<ServiceConfig>,
    /// Lease time.
    pub lease: Duration,
    /// Trace every syscall of the services through the `ebpf-trace` backend, not only the
    /// intercepted ones.
    pub trace_all: bool,
}

/// A network partition between two services, for the length of a fault set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// The service whose connects fail.
    pub from: String,
    /// The service whose interface ports it can no longer reach.
    pub to: String,
    /// Also cut `to` -> `from`.
    pub both_directions: bool,
    /// Shown in the trace.
    pub label: Option<String>,
}

/// The expanded syscalls a service's filter must intercept: its intercept list and its ops' syscalls.
/// An attached service has none: no seccomp filter without a launch (its ops' names are still checked).
pub(super) fn intercept_set(svc: &ServiceConfig) -> Result<Vec<&'static Syscall>, EngineError> {
    if svc.attach_cgroup.is_some() && !svc.intercept.is_empty() {
        return Err(EngineError::InvalidArgument(format!(
            "service {} is attached by cgroup, so it takes no intercept_syscalls: faultd does not \
             launch it and cannot install a seccomp filter in it",
            svc.name
        )));
    }
    let mut out: Vec<&'static Syscall> = Vec::new();
    let names = svc
        .intercept
        .iter()
        .chain(svc.ops.iter().flat_map(|o| o.syscalls.iter()));
    for name in names {
        let expanded = syscalls::expand(name).ok_or_else(|| {
            EngineError::InvalidArgument(format!(
                "service {}: unknown syscall or family {name:?}",
                svc.name
            ))
        })?;
        for sc in expanded {
            if !out.iter().any(|s| s.nr == sc.nr) {
                out.push(sc);
            }
        }
    }
    if svc.attach_cgroup.is_some() {
        out.clear();
    }
    Ok(out)
}

/// A service with this name and dependencies, running `true`: for tests of the session's modules.
#[cfg(test)]
pub(super) fn test_service(name: &str, deps: &[&str]) -> ServiceConfig {
    ServiceConfig {
        name: name.into(),
        launch: LaunchSpec {
            argv: vec!["true".into()],
            env: vec![],
            clear_env: false,
            cwd: None,
            run_as: None,
        },
        interfaces: vec![],
        healthcheck: None,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ops: vec![],
        intercept: vec![],
        stop_grace: Duration::from_secs(1),
        attach_cgroup: None,
        resolve_paths: false,
        host_network: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intercept_sets_expand_families_and_ops() {
        let mut s = test_service("inventory", &[]);
        s.intercept = vec!["fsync".into()];
        s.ops = vec![OpConfig {
            name: "persist".into(),
            syscalls: vec!["write".into(), "fsync".into()],
            path_glob: None,
        }];
        let names: Vec<_> = intercept_set(&s).unwrap().iter().map(|s| s.name).collect();
        assert_eq!(names, ["fsync", "fdatasync", "write", "writev", "pwrite64"]);
        s.intercept = vec!["fsynk".into()];
        assert!(intercept_set(&s).is_err());
    }
}
