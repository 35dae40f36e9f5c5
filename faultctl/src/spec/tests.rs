//! Unit tests of the spec language: every builtin and every load error (message and position).
//! None needs a daemon: test bodies that only assert run against a client that never connects.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::model::{Action, Check, Partition, Protocol, Rule};
use super::{SpecError, SpecRuntime, TestSession, load};
use crate::report::model::TestKind;

/// Writes `source` to a fresh directory as `spec.star`, loads it (the file is read while loading),
/// and removes the directory.
pub(super) fn load_src(source: &str) -> Result<SpecRuntime, SpecError> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "faultctl-spec-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spec.star");
    std::fs::write(&path, source).unwrap();
    let loaded = load(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    loaded
}

pub(super) fn ok(source: &str) -> SpecRuntime {
    load_src(source).unwrap_or_else(|e| panic!("spec should load:\n{e}"))
}

/// The load error of `source`, wherever it points.
pub(super) fn load_err(source: &str) -> SpecError {
    match load_src(source) {
        Ok(_) => panic!("spec should not load"),
        Err(e) => e,
    }
}

/// The error, checking it points at `line:column` (1-based).
pub(super) fn err_at(source: &str, line: usize, column: usize) -> SpecError {
    let e = match load_src(source) {
        Ok(_) => panic!("spec should not load"),
        Err(e) => e,
    };
    let loc = e
        .location
        .as_ref()
        .unwrap_or_else(|| panic!("no location: {e}"));
    assert_eq!((loc.line, loc.column), (line, column), "{e}");
    assert!(loc.file.ends_with("spec.star"), "{}", loc.file);
    e
}

pub(super) const SERVICES: &str = r#"
inventory = service("inventory", "bin/inventory-svc",
    interface("main", "tcp", 5432),
    env = {"PORT": "5432", "WAL_PATH": "/tmp/inventory.wal"},
    healthcheck = tcp("localhost:5432"),
    ops = {
        "persist": op(syscalls=["write", "fsync"]),
        "wal_write": op(syscalls=["write", "fsync"], path="/tmp/*.wal"),
    },
)
orders = service("orders", "bin/order-svc",
    interface("public", "http", 8080),
    env = {"PORT": "8080", "INVENTORY_ADDR": inventory.main.addr},
    depends_on = [inventory],
    healthcheck = http("localhost:8080/health", timeout="5s"),
)
"#;

pub(super) fn with_services(rest: &str) -> String {
    format!("{SERVICES}{rest}")
}

/// A session whose client never connects: enough for bodies that do not talk to faultd.
pub(super) fn offline_session(rt: &tokio::runtime::Runtime) -> (TestSession, watch::Sender<bool>) {
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy()
    });
    let (cancel_tx, cancel) = watch::channel(false);
    let session = TestSession {
        runtime: rt.handle().clone(),
        client: crate::client::daemon_client(channel, crate::client::Credentials::default()),
        session_id: "s".into(),
        seed: 1,
        backend: None,
        cancel,
        intercepted: Default::default(),
        started: Default::default(),
        printed: Default::default(),
    };
    (session, cancel_tx)
}

pub(super) fn run(spec: &SpecRuntime, name: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (session, _cancel) = offline_session(&rt);
    let index = spec
        .spec()
        .tests
        .iter()
        .position(|t| t.name == name)
        .unwrap_or_else(|| panic!("no test {name}"));
    rt.block_on(spec.run_body(index, session))
}

// ------------------------------------------------------------------------------------ builtins

#[test]
fn service_interface_healthchecks_env_and_depends_on() {
    let rt = ok(SERVICES);
    let spec = rt.spec();
    let [inv, ord] = spec.services.as_slice() else {
        panic!("two services")
    };
    assert_eq!(inv.name, "inventory");
    let spec_dir = spec.path.parent().unwrap();
    assert_eq!(
        inv.argv,
        [spec_dir
            .join("bin/inventory-svc")
            .to_string_lossy()
            .into_owned()]
    );
    assert!(PathBuf::from(&inv.argv[0]).is_absolute());
    assert_eq!(inv.interfaces[0].protocol, Protocol::Tcp);
    assert_eq!(inv.interfaces[0].port, 5432);
    assert_eq!(inv.env["WAL_PATH"], "/tmp/inventory.wal");
    assert_eq!(
        inv.healthcheck.as_ref().unwrap().check,
        Check::Tcp("localhost:5432".into())
    );
    assert_eq!(ord.env["INVENTORY_ADDR"], "localhost:5432");
    assert_eq!(ord.depends_on, ["inventory"]);
    let hc = ord.healthcheck.as_ref().unwrap();
    assert_eq!(hc.check, Check::Http("localhost:8080/health".into()));
    assert_eq!(hc.timeout, Some(Duration::from_secs(5)));
    assert_eq!(ord.interfaces[0].protocol, Protocol::Http);
}

#[test]
fn service_args_bare_binaries_and_lenient_env_values() {
    let rt =
        ok(r#"s = service("s", "sleep", args=["10"], env={"N": 3, "B": True}, depends_on=[])"#);
    let s = &rt.spec().services[0];
    assert_eq!(s.argv, ["sleep", "10"]);
    assert_eq!(s.env["N"], "3");
    assert_eq!(s.env["B"], "True");
    assert!(s.healthcheck.is_none());
    let rt = ok(r#"s = service("s", "/bin/true")"#);
    assert_eq!(rt.spec().services[0].argv, ["/bin/true"]);
}

#[test]
fn interface_attributes() {
    let rt = ok(&with_services(
        r#"
assert_eq(inventory.main.addr, "localhost:5432")
assert_eq(inventory.main.host, "localhost")
assert_eq(inventory.main.port, 5432)
assert_eq(inventory.name, "inventory")
assert_eq(orders.public.protocol, "http")
assert_true(hasattr(orders, "public"))
assert_true("main" in dir(inventory) and "name" in dir(inventory))
"#,
    ));
    assert_eq!(rt.spec().services.len(), 2);
}

#[test]
fn ops_and_intercept_sets() {
    let rt = ok(&with_services(
        r#"
def test_scoped():
    fault(orders, connect=deny("ECONNREFUSED"), run=lambda: None)
a = fault_assumption("a", target=inventory, openat=deny("EACCES"))
"#,
    ));
    let [inv, ord] = rt.spec().services.as_slice() else {
        panic!()
    };
    assert_eq!(inv.ops[1].name, "wal_write");
    assert_eq!(inv.ops[1].syscalls, ["write", "fsync"]);
    assert_eq!(inv.ops[1].path.as_deref(), Some("/tmp/*.wal"));
    assert_eq!(
        inv.intercept.iter().map(String::as_str).collect::<Vec<_>>(),
        ["fsync", "openat", "write"]
    );
    assert_eq!(
        ord.intercept.iter().map(String::as_str).collect::<Vec<_>>(),
        ["connect"]
    );
}

#[test]
fn actions_deny_delay_allow() {
    let rt = ok(&with_services(
        r#"
a = fault_assumption("a", target=inventory,
    write = deny("eio", label="disk", probability="20%"),
    fsync = delay("1m30s", probability=0.5),
    openat = allow(),
    connect = deny("ECONNREFUSED", probability=1.0),
)
fault_scenario("s", scenario=lambda: None, faults=a)
"#,
    ));
    let rules = &rt.spec().tests[0].faults[0].rules;
    let rule = |i: usize| -> &Rule { &rules[i] };
    assert_eq!(
        rule(0).action,
        Action::Deny {
            errno: "EIO".into()
        }
    );
    assert_eq!(rule(0).label.as_deref(), Some("disk"));
    assert_eq!(rule(0).probability, Some(0.2));
    assert_eq!(
        rule(1).action,
        Action::Delay {
            duration: Duration::from_secs(90)
        }
    );
    assert_eq!(rule(1).probability, Some(0.5));
    assert_eq!(rule(2).action, Action::Allow);
    assert_eq!(rule(3).probability, Some(1.0));
    assert!(rules.iter().all(|r| r.service == "inventory"));
}

#[test]
fn crash_and_connect_destinations() {
    let rt = ok(&with_services(
        r#"
a = fault_assumption("a", target=orders,
    fsync = crash(label="power cut"),
    connect = deny("ECONNREFUSED", to=inventory.main),
)
b = fault_assumption("b", target=inventory, write = crash(signal="segv"))
fault_scenario("s", scenario=lambda: None, faults=[a, b])
"#,
    ));
    let sets = &rt.spec().tests[0].faults;
    assert_eq!(
        sets[0].rules[0].action,
        Action::Crash {
            signal: "SIGKILL".into()
        }
    );
    assert_eq!(sets[0].rules[0].label.as_deref(), Some("power cut"));
    assert_eq!(
        sets[0].rules[1].destination.as_deref(),
        Some("127.0.0.1:5432")
    );
    assert_eq!(
        sets[1].rules[0].action,
        Action::Crash {
            signal: "SIGSEGV".into()
        }
    );
    let e = err_at("x = crash(signal=\"SIGFOO\")\n", 1, 11);
    assert_eq!(e.message, "unknown signal `SIGFOO`");
    let e = err_at("x = deny(\"ECONNREFUSED\", to=3)\n", 1, 26);
    assert!(
        e.message.starts_with("deny(to=) takes a service interface"),
        "{}",
        e.message
    );
}

#[test]
fn partitions_cut_between_services() {
    let rt = ok(&with_services(
        r#"
split = partition(orders, inventory, label="net split")
one_way = partition(orders, inventory, direction="one_way")
both = fault_assumption("both", faults=[split, fault_assumption("disk", target=inventory, write=deny("EIO"))])
fault_scenario("s", scenario=lambda: None, faults=split)
fault_scenario("t", scenario=lambda: None, faults=[one_way, both])
"#,
    ));
    let tests = &rt.spec().tests;
    let p = &tests[0].faults[0];
    assert_eq!(p.name, "partition_orders_inventory");
    assert_eq!(
        p.partitions,
        vec![Partition {
            from: "orders".into(),
            to: "inventory".into(),
            both: true,
            label: Some("net split".into())
        }]
    );
    assert!(!tests[1].faults[0].partitions[0].both);
    assert_eq!(tests[1].faults[1].partitions.len(), 1);
    assert_eq!(tests[1].faults[1].rules.len(), 1);
    let e = err_at("x = partition(1, 2)\n", 1, 15);
    assert!(
        e.message.starts_with("partition() takes two services"),
        "{}",
        e.message
    );
}

#[test]
fn fault_assumption_op_rules_and_children() {
    let rt = ok(&with_services(
        r#"
disk = fault_assumption("disk", target=inventory, persist=deny("EIO", label="persist broken"))
net = fault_assumption("net", target=orders.public, connect=deny("ECONNREFUSED"))
both = fault_assumption("both", faults=[disk, net])
fault_scenario("x", scenario=lambda: None, faults=both)
"#,
    ));
    let set = &rt.spec().tests[0].faults[0];
    assert_eq!(set.name, "both");
    assert_eq!(set.rules.len(), 2);
    let persist = &set.rules[0];
    assert_eq!(persist.op.as_deref(), Some("persist"));
    assert_eq!(persist.syscalls, ["write", "fsync"]);
    assert_eq!(persist.path, None);
    assert_eq!(persist.label.as_deref(), Some("persist broken"));
    assert_eq!(set.rules[1].service, "orders");
    assert_eq!(set.rules[1].syscalls, ["connect"]);
}

#[test]
fn tests_in_source_order_with_kinds_and_names() {
    let rt = ok(&with_services(
        r#"
def place_order():
    return orders.post(path="/orders", body='{"sku":"widget","qty":1}')
scenario(place_order)
def test_plain():
    pass
p = fault_assumption("persist_broken", target=inventory, persist=deny("EIO"))
w = fault_assumption("wal_broken", target=inventory, wal_write=deny("EIO"))
fault_scenario("persist_failure", scenario=place_order, faults=p,
    expect=lambda r: assert_true(r.status != 200, "expected failure"), timeout="5s")
def check_inventory():
    return orders.get(path="/inventory/widget")
scenario(check_inventory)
fault_matrix(scenarios=[place_order, check_inventory], faults=[p, w],
    default_expect=lambda r: None, exclude=[(check_inventory, p)])
"#,
    ));
    let spec = rt.spec();
    let names: Vec<_> = spec.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "place_order",
            "test_plain",
            "persist_failure",
            "check_inventory",
            "matrix_place_order_persist_broken",
            "matrix_place_order_wal_broken",
            "matrix_check_inventory_wal_broken",
        ]
    );
    let kinds: Vec<_> = spec.tests.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds[..4],
        [
            TestKind::Scenario,
            TestKind::Test,
            TestKind::FaultScenario,
            TestKind::Scenario
        ]
    );
    let ps = &spec.tests[2];
    assert_eq!(ps.scenario.as_deref(), Some("place_order"));
    assert_eq!(ps.fault.as_deref(), Some("persist_broken"));
    assert_eq!(ps.timeout, Some(Duration::from_secs(5)));
    let cell = &spec.tests[6];
    assert_eq!(cell.kind, TestKind::MatrixCell);
    assert_eq!(cell.cell, Some((0, 1, 1)));
    assert_eq!(cell.fault.as_deref(), Some("wal_broken"));
    assert_eq!(
        spec.matrices[0].scenarios,
        ["place_order", "check_inventory"]
    );
    assert_eq!(spec.matrices[0].faults, ["persist_broken", "wal_broken"]);
}

#[test]
fn scenario_of_a_test_function_is_one_test() {
    let rt = ok("def test_happy():\n    pass\nscenario(test_happy)\n");
    let tests = &rt.spec().tests;
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0].name, "test_happy");
    assert_eq!(tests[0].kind, TestKind::Scenario);
}

#[test]
fn matrix_overrides_replace_the_default_expectation() {
    let rt = ok(&with_services(
        r#"
p = fault_assumption("p", target=inventory, persist=deny("EIO"))
def s():
    return 1
fault_matrix(scenarios=[s], faults=[p], expect=lambda r: assert_eq(r, 2, "default"),
    overrides={(s, p): lambda r: assert_eq(r, 1, "override")})
fault_matrix(scenarios=[s], faults=[fault_assumption("q", faults=[p])], expect=lambda r: assert_eq(r, 2, "default"))
"#,
    ));
    assert_eq!(run(&rt, "matrix_s_p"), Ok(()));
    assert_eq!(
        run(&rt, "matrix_s_q"),
        Err("assert_eq failed: 1 != 2 (default) (scenario returned 1)".into())
    );
}

#[test]
fn assertions_and_their_messages() {
    let rt = ok(r#"
def test_eq():
    assert_eq(200, 409, "expected 409 on WAL failure")
def test_eq_no_message():
    assert_eq("a", "b")
def test_true():
    assert_true(False, "expected failure on persist")
def test_true_default():
    assert_true(0)
def test_ne():
    assert_ne(1, 1, "same")
def test_pass():
    assert_true(True)
    assert_eq([1], [1])
    assert_ne(1, 2)
    print("printing goes to stderr")
def test_fail_builtin():
    fail("boom")
"#);
    assert_eq!(
        run(&rt, "test_eq"),
        Err("assert_eq failed: 200 != 409 (expected 409 on WAL failure)".into())
    );
    assert_eq!(
        run(&rt, "test_eq_no_message"),
        Err("assert_eq failed: \"a\" != \"b\"".into())
    );
    assert_eq!(
        run(&rt, "test_true"),
        Err("expected failure on persist".into())
    );
    assert_eq!(
        run(&rt, "test_true_default"),
        Err("assertion failed".into())
    );
    assert_eq!(
        run(&rt, "test_ne"),
        Err("assert_ne failed: 1 == 1 (same)".into())
    );
    assert_eq!(run(&rt, "test_pass"), Ok(()));
    assert!(run(&rt, "test_fail_builtin").unwrap_err().contains("boom"));
}

#[test]
fn fault_scenario_expectation_sees_the_scenario_result() {
    let rt = ok(&with_services(
        r#"
p = fault_assumption("p", target=inventory, persist=deny("EIO"))
def scn():
    return {"status": 200}
fault_scenario("ok", scenario=scn, faults=p, expect=lambda r: assert_eq(r["status"], 200))
fault_scenario("bad", scenario=scn, faults=[p], expect=lambda r: assert_true(r["status"] != 200, "expected failure under fault"))
fault_scenario("raises", scenario=lambda: fail("scenario broke"), faults=p, expect=lambda r: fail("not called"))
fault_scenario("smoke", scenario=scn)
"#,
    ));
    assert_eq!(run(&rt, "ok"), Ok(()));
    assert_eq!(
        run(&rt, "bad"),
        Err("expected failure under fault (scenario returned {\"status\": 200})".into())
    );
    let raised = run(&rt, "raises").unwrap_err();
    assert!(
        raised.contains("scenario broke") && !raised.contains("not called"),
        "{raised}"
    );
    assert_eq!(run(&rt, "smoke"), Ok(()));
    assert_eq!(rt.spec().tests[3].fault, None);
}

#[test]
fn steps_check_the_protocol_and_need_a_session() {
    let rt = ok(&with_services(
        r#"
def test_send_on_http():
    orders.send("PING")
def test_post_on_tcp():
    inventory.post(path="/")
two = service("two", "x", interface("a", "http", 1), interface("b", "http", 2))
def test_ambiguous():
    two.get()
"#,
    ));
    assert_eq!(
        run(&rt, "test_send_on_http"),
        Err(
            "`orders.public` speaks http; its steps are get/post/put/delete/patch(path=...)".into()
        )
    );
    assert_eq!(
        run(&rt, "test_post_on_tcp"),
        Err("`inventory.main` speaks tcp; its steps are send(data=...)".into())
    );
    assert_eq!(
        run(&rt, "test_ambiguous"),
        Err(
            "service `two` has 2 interfaces (a, b); call the step on one of them, e.g. `two.a.…`"
                .into()
        )
    );
    let e = err_at(&with_services("orders.get(path=\"/\")\n"), 17, 1);
    assert!(e.message.contains("runs against live services"), "{e}");
}

#[test]
fn a_cancelled_body_stops() {
    let spec = ok("def test_forever():\n    for i in range(1000000000):\n        pass\n");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (session, cancel) = offline_session(&rt);
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        cancel.send(true).unwrap();
        cancel
    });
    let result = rt.block_on(spec.run_body(0, session));
    drop(canceller.join());
    assert!(result.unwrap_err().contains("cancelled"));
}
