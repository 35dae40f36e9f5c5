//! The hand-built run the reporter goldens render: the named-ops chapter's scenarios, fault
//! scenarios with deny and short events, a delay rule and a 2 × 2 fault matrix.

use faultctl::report::model::{
    ActionKind, EventReport, MatrixCell, MatrixReport, Outcome, RuleReport, RunReport, TestKind,
    TestReport,
};

pub(crate) const INVENTORY_PID: u32 = 4242;
pub(crate) const ORDERS_PID: u32 = 4243;
pub(crate) const WAL: &str = "/tmp/inventory.wal";
pub(crate) const SOCK: &str = "127.0.0.1:5432";
pub(crate) const WRITE_FAMILY: [&str; 5] = ["write", "writev", "pwrite64", "fsync", "fdatasync"];

pub(crate) fn event(seq: u64, service: &str, syscall: &str, path: Option<&str>) -> EventReport {
    EventReport {
        seq,
        time_ns: seq * 1_000_000,
        service: service.to_string(),
        pid: if service == "orders" {
            ORDERS_PID
        } else {
            INVENTORY_PID
        },
        syscall: syscall.to_string(),
        op: None,
        path: path.map(str::to_string),
        decision: "allow".to_string(),
        errno: None,
        delay_ms: None,
        retval: None,
        latency_ns: None,
        backend: None,
        label: None,
        io_requested: None,
        io_done: None,
        interface: None,
        request: None,
    }
}

/// A write faultd shortened to half on the service's behalf.
pub(crate) fn short_write(seq: u64) -> EventReport {
    let mut e = event(seq, "inventory", "write", Some(WAL));
    e.decision = "short".into();
    e.io_requested = Some(4096);
    e.io_done = Some(2048);
    e
}

pub(crate) fn denied(mut e: EventReport, op: &str, label: &str) -> EventReport {
    e.op = Some(op.to_string());
    e.decision = "deny".to_string();
    e.errno = Some("EIO".to_string());
    e.label = Some(label.to_string());
    e
}

pub(crate) fn deny_rule(op: &str, path: Option<&str>, label: &str, hits: u64) -> RuleReport {
    RuleReport {
        service: "inventory".to_string(),
        op: Some(op.to_string()),
        syscalls: WRITE_FAMILY.iter().map(|s| s.to_string()).collect(),
        path: path.map(str::to_string),
        action: ActionKind::Deny,
        errno: Some("EIO".to_string()),
        delay_ms: None,
        label: Some(label.to_string()),
        hits,
        backend: None,
        interface: None,
        request: None,
    }
}

pub(crate) fn persist_rule(hits: u64) -> RuleReport {
    deny_rule("persist", None, "persist broken", hits)
}

pub(crate) fn wal_rule(hits: u64) -> RuleReport {
    deny_rule("wal_write", Some("/tmp/*.wal"), "WAL broken", hits)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn test(
    name: &str,
    kind: TestKind,
    scenario: Option<&str>,
    fault: Option<&str>,
    reason: Option<&str>,
    duration_ms: u64,
    rules: Vec<RuleReport>,
    events: Vec<EventReport>,
) -> TestReport {
    TestReport {
        name: name.to_string(),
        kind,
        scenario: scenario.map(str::to_string),
        fault: fault.map(str::to_string),
        result: if reason.is_some() {
            Outcome::Fail
        } else {
            Outcome::Pass
        },
        reason: reason.map(str::to_string),
        duration_ms,
        seed: 7,
        rules,
        events,
        dropped_events: 0,
        exits: vec![],
        printed: vec![],
    }
}

/// Startup log line of inventory, intercepted before any fault was applied.
pub(crate) fn startup() -> EventReport {
    event(12, "inventory", "write", None)
}

/// place_order under `persist_broken`: the WAL append and then the reply are denied.
pub(crate) fn place_order_persist_events() -> Vec<EventReport> {
    vec![
        startup(),
        denied(
            event(48, "inventory", "write", Some(WAL)),
            "persist",
            "persist broken",
        ),
        denied(
            event(49, "inventory", "write", Some(SOCK)),
            "persist",
            "persist broken",
        ),
    ]
}

/// place_order under `wal_broken`: the WAL append is denied, the ERR reply goes out.
pub(crate) fn place_order_wal_events() -> Vec<EventReport> {
    vec![
        startup(),
        denied(
            event(51, "inventory", "write", Some(WAL)),
            "wal_write",
            "WAL broken",
        ),
        event(52, "inventory", "write", Some(SOCK)),
    ]
}

pub(crate) const CELL_REASON: &str = "expected failure under fault (status 200)";

pub(crate) fn sample() -> RunReport {
    let slow = RuleReport {
        service: "orders".to_string(),
        op: None,
        syscalls: vec!["connect".to_string()],
        path: None,
        action: ActionKind::Delay,
        errno: None,
        delay_ms: Some(500),
        label: None,
        hits: 1,
        backend: None,
        interface: None,
        request: None,
    };
    let mut slow_connect = event(9, "orders", "connect", Some(SOCK));
    slow_connect.decision = "delay".to_string();
    slow_connect.delay_ms = Some(500);

    let tests = vec![
        test(
            "test_slow_inventory",
            TestKind::Test,
            None,
            None,
            None,
            640,
            vec![slow],
            vec![slow_connect],
        ),
        test(
            "place_order",
            TestKind::Scenario,
            Some("place_order"),
            None,
            None,
            301,
            vec![],
            vec![
                startup(),
                event(30, "inventory", "write", Some(WAL)),
                event(31, "inventory", "fsync", Some(WAL)),
                event(32, "inventory", "write", Some(SOCK)),
                short_write(33),
            ],
        ),
        test(
            "persist_failure",
            TestKind::FaultScenario,
            Some("place_order"),
            Some("persist_broken"),
            None,
            412,
            vec![persist_rule(2)],
            place_order_persist_events(),
        ),
        test(
            "wal_failure",
            TestKind::FaultScenario,
            Some("place_order"),
            Some("wal_broken"),
            None,
            388,
            vec![wal_rule(1)],
            place_order_wal_events(),
        ),
        test(
            "check_inventory",
            TestKind::Scenario,
            Some("check_inventory"),
            None,
            None,
            95,
            vec![],
            vec![startup(), event(40, "inventory", "write", Some(SOCK))],
        ),
        test(
            "matrix_place_order_persist_broken",
            TestKind::MatrixCell,
            Some("place_order"),
            Some("persist_broken"),
            None,
            405,
            vec![persist_rule(2)],
            place_order_persist_events(),
        ),
        test(
            "matrix_place_order_wal_broken",
            TestKind::MatrixCell,
            Some("place_order"),
            Some("wal_broken"),
            None,
            391,
            vec![wal_rule(1)],
            place_order_wal_events(),
        ),
        test(
            "matrix_check_inventory_persist_broken",
            TestKind::MatrixCell,
            Some("check_inventory"),
            Some("persist_broken"),
            None,
            120,
            vec![persist_rule(1)],
            vec![
                startup(),
                denied(
                    event(40, "inventory", "write", Some(SOCK)),
                    "persist",
                    "persist broken",
                ),
            ],
        ),
        test(
            "matrix_check_inventory_wal_broken",
            TestKind::MatrixCell,
            Some("check_inventory"),
            Some("wal_broken"),
            Some(CELL_REASON),
            96,
            vec![wal_rule(0)],
            vec![startup(), event(40, "inventory", "write", Some(SOCK))],
        ),
    ];
    let cell = |ms, reason: Option<&str>| {
        Some(MatrixCell {
            result: if reason.is_some() {
                Outcome::Fail
            } else {
                Outcome::Pass
            },
            duration_ms: ms,
            reason: reason.map(str::to_string),
        })
    };
    let matrix = MatrixReport {
        scenarios: vec!["place_order".to_string(), "check_inventory".to_string()],
        faults: vec!["persist_broken".to_string(), "wal_broken".to_string()],
        cells: vec![
            vec![cell(405, None), cell(391, None)],
            vec![cell(120, None), cell(96, Some(CELL_REASON))],
        ],
    };
    RunReport {
        spec: "specs/named-ops.star".to_string(),
        seed: 7,
        passed: 8,
        failed: 1,
        tests,
        matrices: vec![matrix],
    }
}
