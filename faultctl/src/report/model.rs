//! The result of a run, as plain data: what the runner produces and every reporter consumes.

use serde::Serialize;

/// One run of a spec: every test it selected, in run order, plus the matrices they belong to.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    /// Path of the spec as given on the command line.
    pub spec: String,
    /// The seed every fault set of the run was drawn from.
    pub seed: u64,
    /// Number of tests that passed.
    pub passed: usize,
    /// Number of tests that failed.
    pub failed: usize,
    /// Every selected test, in run order.
    pub tests: Vec<TestReport>,
    /// One table per `fault_matrix` with at least one selected cell.
    #[serde(skip)]
    pub matrices: Vec<MatrixReport>,
}

/// What produced a test.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TestKind {
    /// A `def test_*()` function.
    Test,
    /// A `scenario(fn)` run without faults.
    Scenario,
    /// A `fault_scenario(...)`.
    FaultScenario,
    /// One cell of a `fault_matrix(...)`.
    MatrixCell,
}

/// Pass or fail.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The test ran and every expectation held.
    Pass,
    /// The test raised, an expectation failed, services did not start, or it timed out.
    Fail,
}

/// One test's result, trace and fault rules.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TestReport {
    /// Test name, e.g. `test_place_order`, `persist_failure`, `matrix_place_order_persist_broken`.
    pub name: String,
    /// What produced it.
    pub kind: TestKind,
    /// The scenario function's name, for scenarios, fault scenarios and matrix cells.
    pub scenario: Option<String>,
    /// The fault assumption's name, for fault scenarios and matrix cells.
    pub fault: Option<String>,
    /// Pass or fail.
    pub result: Outcome,
    /// Why it failed (the error or expectation message); `None` when it passed.
    pub reason: Option<String>,
    /// Wall time of the test, services included.
    pub duration_ms: u64,
    /// The seed its faults were drawn from.
    pub seed: u64,
    /// Every fault rule the test applied, with hits.
    pub rules: Vec<RuleReport>,
    /// Syscall events, in sequence order (allowed ones included), at most `--max-events`.
    pub events: Vec<EventReport>,
    /// Syscall events not in `events`: beyond the cap, or lost by faultd to a slow reader.
    pub dropped_events: u64,
    /// Services that ended on their own during the test (not stopped by faultd).
    pub exits: Vec<ExitReport>,
    /// What the test printed with `print()`, line by line (at most 1,000 lines of 4 KiB).
    pub printed: Vec<String>,
}

/// A service's main process that ended during a test.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExitReport {
    /// The service.
    pub service: String,
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal name (or number), when a signal killed it.
    pub signal: Option<String>,
}

/// A fault rule as applied, with how often it fired.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleReport {
    /// Service the rule targets.
    pub service: String,
    /// The op name the rule came from, if any (`persist`).
    pub op: Option<String>,
    /// The expanded syscalls it covers.
    pub syscalls: Vec<String>,
    /// Path glob, if any.
    pub path: Option<String>,
    /// What the rule does.
    pub action: ActionKind,
    /// Errno name for `deny`.
    pub errno: Option<String>,
    /// Delay in milliseconds for `delay`.
    pub delay_ms: Option<u64>,
    /// The rule's label.
    pub label: Option<String>,
    /// How many syscalls it decided.
    pub hits: u64,
    /// The backend that enforced it (`seccomp`, `ebpf-cgroup`; `proxy` for a protocol fault).
    pub backend: Option<String>,
    /// Protocol faults: the proxied interface.
    pub interface: Option<String>,
    /// Protocol faults: the requests it matches (`query=INSERT*`), `None` for any; for `error`, what
    /// it answers is in `errno` (`23505`, `status 503`).
    pub request: Option<String>,
}

/// What a rule does, as the report names it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Fail the syscall with an errno.
    Deny,
    /// Stall it, then let it run.
    Delay,
    /// Let it run.
    Allow,
    /// Kill the caller at the syscall's entry.
    Crash,
    /// Transfer only a prefix of a read or write.
    Short,
    /// Answer a sync or write with success without doing it.
    Lie,
    /// Let it run, tracking its file as volatile.
    Volatile,
    /// Kill the service and restore its tracked files.
    PowerLoss,
    /// Protocol fault: answer with an error.
    Error,
    /// Protocol fault: answer with a fabricated reply.
    Response,
    /// Protocol fault: close the connection.
    Drop,
}

impl ActionKind {
    /// `deny`, `delay`, `allow`, `crash`, `short`, `lie`, `volatile`, `power_loss`, `error`,
    /// `response` or `drop`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Deny => "deny",
            ActionKind::Delay => "delay",
            ActionKind::Allow => "allow",
            ActionKind::Crash => "crash",
            ActionKind::Short => "short",
            ActionKind::Lie => "lie",
            ActionKind::Volatile => "volatile",
            ActionKind::PowerLoss => "power_loss",
            ActionKind::Error => "error",
            ActionKind::Response => "response",
            ActionKind::Drop => "drop",
        }
    }
}

/// One intercepted syscall.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventReport {
    /// Per-session sequence number, in the order the calls entered.
    pub seq: u64,
    /// When the call entered, in nanoseconds since the session started (monotonic clock).
    pub time_ns: u64,
    /// Service that made the call.
    pub service: String,
    /// Process id (thread id is not reported).
    pub pid: u32,
    /// Syscall name (`write`, `fsync`, ...).
    pub syscall: String,
    /// Op name of the deciding rule.
    pub op: Option<String>,
    /// Resolved path or `ip:port`.
    pub path: Option<String>,
    /// `allow`, `deny`, `delay`, `crash`, `observed`, `short`, `lie`, `volatile` or `power_loss`.
    pub decision: String,
    /// Errno name for a deny, signal name for a crash.
    pub errno: Option<String>,
    /// Delay in milliseconds for a delay.
    pub delay_ms: Option<u64>,
    /// Return value, for syscalls the ebpf-trace backend saw return (`--trace all`).
    pub retval: Option<i64>,
    /// From entry to return, with the return value.
    pub latency_ns: Option<u64>,
    /// The backend that decided or observed it (`seccomp`, `ebpf-cgroup`, `ebpf-trace`).
    pub backend: Option<String>,
    /// Label of the deciding rule.
    pub label: Option<String>,
    /// Bytes the call asked for, for short and lie decisions.
    pub io_requested: Option<u64>,
    /// Bytes faultd transferred, for short and lie decisions.
    pub io_done: Option<u64>,
    /// Proxy events: the interface (`syscall` is then `http`, `redis`, `postgres` or `tcp`).
    pub interface: Option<String>,
    /// Proxy events: the request (`GET /orders`, `SET k`, the SQL text).
    pub request: Option<String>,
}

/// One `fault_matrix`: scenarios × faults with a result per cell.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixReport {
    /// Scenario names, in spec order (rows).
    pub scenarios: Vec<String>,
    /// Fault assumption names, in spec order (columns).
    pub faults: Vec<String>,
    /// Row-major cells: `None` when excluded or not selected.
    pub cells: Vec<Vec<Option<MatrixCell>>>,
}

/// One cell's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixCell {
    /// Pass or fail.
    pub result: Outcome,
    /// Wall time of the cell's test.
    pub duration_ms: u64,
    /// Why it failed.
    pub reason: Option<String>,
}
