//! The evaluated spec as plain data: what the Starlark side hands to the runner.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::report::model::TestKind;

/// Everything a spec declares, in the order the runner uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// Path of the spec as given.
    pub path: PathBuf,
    /// Services, in declaration order (faultd starts them in `depends_on` order).
    pub services: Vec<Service>,
    /// Tests in source order: by the position of the `def`, `scenario(...)`, `fault_scenario(...)` or
    /// `fault_matrix(...)` that declared them; matrix cells row by row.
    pub tests: Vec<Test>,
    /// One entry per `fault_matrix(...)`, in source order.
    pub matrices: Vec<Matrix>,
}

/// One `service(...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// `[binary, args...]`; a relative binary with a `/` is already resolved against the spec's directory.
    /// Empty for an attached service.
    pub argv: Vec<String>,
    /// `mock_service(...)`: the mock configuration (JSON) faultd serves instead of a program.
    pub mock: Option<String>,
    /// `attach="cgroup:/path"`: the cgroup v2 directory of a running service faultd targets instead
    /// of launching one (no seccomp filter, so only connect faults apply to it).
    pub attach_cgroup: Option<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// `user=`: run as this user of faultd's host (PostgreSQL refuses root).
    pub user: Option<String>,
    /// `cwd=`: working directory (relative paths against the spec's directory).
    pub cwd: Option<String>,
    /// Declared interfaces, in order.
    pub interfaces: Vec<Interface>,
    /// Readiness check, if any.
    pub healthcheck: Option<Healthcheck>,
    /// Names of services that must be ready first.
    pub depends_on: Vec<String>,
    /// Named operations.
    pub ops: Vec<Op>,
    /// Syscall and family names the service's filter must intercept (fixed at launch): its ops'
    /// syscalls, every `fault_assumption` rule on it and every `fault(service, ...)` key in the spec.
    pub intercept: BTreeSet<String>,
    /// Resolve the path of every intercepted syscall (the spec queries its trace: `events`,
    /// `assert_eventually`, `trace`...), not only of those a rule concerns.
    pub resolve_paths: bool,
    /// `network="host"`: the service (and so its session) uses the host's network.
    pub host_network: bool,
}

/// One `interface(name, protocol, port)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name, unique within its service.
    pub name: String,
    /// What speaks on it; decides the steps it offers.
    pub protocol: Protocol,
    /// TCP port on localhost.
    pub port: u16,
    /// Port of the proxy faultd stands in front of it, when it is proxied (`proxy=True`, or a
    /// protocol fault targets it).
    pub proxy_port: Option<u16>,
}

/// Interface protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Newline-delimited text over TCP: `send(data=)`.
    Tcp,
    /// HTTP/1.1: `get/post/put/delete/patch`.
    Http,
    /// RESP: `command/get/set/del/incr/ping`.
    Redis,
    /// PostgreSQL: `query/exec`.
    Postgres,
}

impl Protocol {
    /// The spec-language name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Redis => "redis",
            Protocol::Postgres => "postgres",
        }
    }
}

/// `tcp(addr)` or `http(url)` with an optional timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// What to probe.
    pub check: Check,
    /// How long to keep trying; `None` means faultd's default (10 s).
    pub timeout: Option<Duration>,
}

/// A readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Connect to `host:port`.
    Tcp(String),
    /// GET `host:port/path`; 2xx or 3xx means ready.
    Http(String),
    /// redis `PING` at `host:port` answers `PONG`.
    Redis(String),
    /// A postgres session at `host:port` (as `user`, empty: postgres) runs `SELECT 1`.
    Postgres {
        /// `host:port`.
        addr: String,
        /// Role.
        user: String,
        /// Database.
        database: String,
    },
}

/// One entry of `ops={name: op(syscalls=[...], path=...)}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The op's name, usable as a fault keyword.
    pub name: String,
    /// Syscall or family names.
    pub syscalls: Vec<String>,
    /// Path glob for file syscalls.
    pub path: Option<String>,
}

/// A named set of rules: one `fault_assumption(...)` with its `faults=` children merged.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSet {
    /// The assumption's name.
    pub name: String,
    /// Its rules, own rules first, then each child's, in keyword order.
    pub rules: Vec<Rule>,
    /// Traffic cuts between services (`partition(a, b)`), own first, then each child's.
    pub partitions: Vec<Partition>,
    /// Protocol faults on proxied interfaces, own first, then each child's.
    pub proxy_rules: Vec<ProxyRule>,
}

/// A protocol fault: `error(...)`, `response(...)`, `delay(delay=...)` or `drop()` on an interface.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyRule {
    /// Target service.
    pub service: String,
    /// Its interface.
    pub interface: String,
    /// Matchers by name (`method`, `path`, `command`, `key`, `query`); absent means any.
    pub matchers: BTreeMap<String, String>,
    /// What happens.
    pub action: ProxyAction,
    /// Chance of firing in `[0, 1]`; `None` means always.
    pub probability: Option<f64>,
    /// Label shown in the trace.
    pub label: Option<String>,
}

/// A protocol fault's action.
#[derive(Debug, Clone, PartialEq)]
pub enum ProxyAction {
    /// Answer with an error (HTTP status and `{"error": message}`, redis error reply, postgres
    /// ErrorResponse).
    Error {
        /// HTTP status; `None` means 500.
        status: Option<u16>,
        /// Message.
        message: Option<String>,
        /// Postgres SQLSTATE; `None` means XX000.
        sqlstate: Option<String>,
    },
    /// Answer with a fabricated reply.
    Response {
        /// HTTP status; `None` means 200.
        status: Option<u16>,
        /// Body (redis: the value).
        body: String,
        /// HTTP headers.
        headers: BTreeMap<String, String>,
    },
    /// Forward after a delay.
    Delay(Duration),
    /// Close the connection.
    Drop,
}

/// `partition(a, b)`: traffic from `from` to `to` (and back, when `both`) is cut while it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Service whose connections are cut.
    pub from: String,
    /// Service they can no longer reach.
    pub to: String,
    /// Also cut `to` → `from`.
    pub both: bool,
    /// Label shown in the trace.
    pub label: Option<String>,
}

/// One fault rule, as sent to faultd.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Target service.
    pub service: String,
    /// The op the rule came from, if the keyword was an op name.
    pub op: Option<String>,
    /// Syscall or family names (faultd expands families).
    pub syscalls: Vec<String>,
    /// Path glob (from the op).
    pub path: Option<String>,
    /// What happens when it fires.
    pub action: Action,
    /// Chance of firing in `[0, 1]`; `None` means always.
    pub probability: Option<f64>,
    /// Label shown in the trace.
    pub label: Option<String>,
    /// For `connect`: the destination (`127.0.0.1:5432`) from `deny(..., to=svc.iface)`.
    pub destination: Option<String>,
    /// `after=`, `max_fires=`.
    pub trigger: faultd_model::Trigger,
}

/// A rule's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fail the syscall with this errno name (upper case).
    Deny {
        /// Errno name, e.g. `EIO`.
        errno: String,
    },
    /// Stall the calling thread, then let the syscall run.
    Delay {
        /// How long.
        duration: Duration,
    },
    /// Let it run (useful to override a broader rule or to observe).
    Allow,
    /// Kill the calling process at the syscall's entry, before the syscall takes effect.
    Crash {
        /// Signal name, e.g. `SIGKILL`.
        signal: String,
    },
    /// Transfer only a prefix of a read or write (faultd does the I/O).
    Short {
        /// Share of the request transferred, in (0, 1].
        fraction: faultd_model::Fraction,
    },
    /// A sync that does not sync, or a write that writes nothing, both answering success.
    Lie,
    /// Let it run; track its file as sitting in a volatile write cache.
    Volatile,
    /// Kill the service and restore its tracked files to their durable state.
    PowerLoss {
        /// `drop` or `torn`.
        mode: faultd_model::PowerLossMode,
    },
}

/// One runnable test.
#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    /// Unique name: `test_x` for `def test_x`, the function's name for `scenario(fn)`, the given name
    /// for `fault_scenario`, `matrix_<scenario>_<fault>` for a matrix cell.
    pub name: String,
    /// What declared it.
    pub kind: TestKind,
    /// Scenario function name (scenarios, fault scenarios, matrix cells).
    pub scenario: Option<String>,
    /// Fault assumption names joined with `+` (fault scenarios, matrix cells).
    pub fault: Option<String>,
    /// Fault sets applied before the body runs and cleared after its expectation.
    pub faults: Vec<FaultSet>,
    /// Per-test timeout from the spec (`fault_scenario(timeout=)`), overriding `--timeout`.
    pub timeout: Option<Duration>,
    /// `(matrix index, row, column)` for matrix cells.
    pub cell: Option<(usize, usize, usize)>,
}

/// One `fault_matrix(...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    /// Scenario names (rows).
    pub scenarios: Vec<String>,
    /// Fault assumption names (columns).
    pub faults: Vec<String>,
}
