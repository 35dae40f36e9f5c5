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
fn load_src(source: &str) -> Result<SpecRuntime, SpecError> {
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

fn ok(source: &str) -> SpecRuntime {
    load_src(source).unwrap_or_else(|e| panic!("spec should load:\n{e}"))
}

/// The error, checking it points at `line:column` (1-based).
fn err_at(source: &str, line: usize, column: usize) -> SpecError {
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

const SERVICES: &str = r#"
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

fn with_services(rest: &str) -> String {
    format!("{SERVICES}{rest}")
}

/// A session whose client never connects: enough for bodies that do not talk to faultd.
fn offline_session(rt: &tokio::runtime::Runtime) -> (TestSession, watch::Sender<bool>) {
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
    };
    (session, cancel_tx)
}

fn run(spec: &SpecRuntime, name: &str) -> Result<(), String> {
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
    connect = deny("ECONNREFUSED", probability=1),
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

#[test]
fn declarations_are_top_level_only_and_fault_needs_a_test() {
    let rt = ok("def test_declares():\n    service(\"late\", \"x\")\n");
    let e = run(&rt, "test_declares").unwrap_err();
    assert!(e.contains("service() declares part of the spec"), "{e}");
    let e = err_at(
        &with_services("fault(inventory, write=deny(\"EIO\"), run=lambda: None)\n"),
        17,
        1,
    );
    assert!(
        e.message.contains("fault() runs against live services"),
        "{e}"
    );
}

// --------------------------------------------------------------------------------- load errors

#[test]
fn unknown_syscall_in_op_points_at_the_string() {
    let e = err_at(
        "s = service(\"s\", \"x\", ops = {\n    \"p\": op(syscalls=[\"write\", \"wirte\"]),\n})\n",
        2,
        32,
    );
    assert_eq!(e.message, "unknown syscall or family `wirte`");
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `write`?"));
    assert_eq!(
        e.location.as_ref().unwrap().source_line,
        "    \"p\": op(syscalls=[\"write\", \"wirte\"]),"
    );
    assert_eq!(e.location.as_ref().unwrap().width, 7);
}

#[test]
fn unknown_family_or_syscall_as_fault_keyword() {
    let e = err_at(
        &with_services("a = fault_assumption(\"a\", target=inventory, fsyn=deny(\"EIO\"))\n"),
        17,
        45,
    );
    assert!(
        e.message
            .starts_with("`fsyn` is neither an op of service `inventory`"),
        "{e}"
    );
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `fsync`?"));
}

#[test]
fn unknown_op_name_suggests_the_op() {
    let e = err_at(
        &with_services(
            "a = fault_assumption(\"a\", target=inventory,\n    persit=deny(\"EIO\"))\n",
        ),
        18,
        5,
    );
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `persist`?"));
    assert!(e.message.contains("its ops: `persist`, `wal_write`"), "{e}");
}

#[test]
fn op_of_another_service() {
    let e = err_at(
        &with_services("a = fault_assumption(\"a\", target=orders, persist=deny(\"EIO\"))\n"),
        17,
        42,
    );
    assert_eq!(
        e.message,
        "service `orders` has no op `persist` (it defines no ops); `persist` is an op of `inventory`"
    );
}

#[test]
fn unknown_keyword_in_scoped_fault_is_a_load_error() {
    let e = err_at(
        &with_services(
            "def test_x():\n    fault(inventory, run=lambda: None,\n          wal_wirte=deny(\"EIO\"))\n",
        ),
        19,
        11,
    );
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `wal_write`?"));
}

#[test]
fn unknown_errno() {
    let e = err_at("x = deny(\"EIOO\")\n", 1, 10);
    assert_eq!(e.message, "unknown errno `EIOO`");
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `EIO`?"));
    let e = err_at("x = deny(\"NOPE_NOT_AN_ERRNO\")\n", 1, 10);
    assert!(e.suggestion.unwrap().starts_with("known errno names: "));
}

#[test]
fn unknown_keyword_arguments() {
    let e = err_at(
        "s = service(\"s\", \"x\",\n    healthchek = tcp(\"localhost:1\"))\n",
        2,
        5,
    );
    assert_eq!(
        e.message,
        "unknown keyword argument `healthchek` for service()"
    );
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `healthcheck`?"));
    let e = err_at("x = deny(\"EIO\", count=3)\n", 1, 17);
    assert_eq!(e.message, "unknown keyword argument `count` for deny()");
    assert_eq!(
        e.suggestion.as_deref(),
        Some("deny() takes label=, probability=, to=")
    );
    let e = err_at(
        "fault_matrix(scenarios=[], faults=[], defualt_expect=None)\n",
        1,
        39,
    );
    assert_eq!(
        e.suggestion.as_deref(),
        Some("did you mean `default_expect`?")
    );
}

#[test]
fn depends_on_cycles_and_unknown_names() {
    let e = err_at(
        "a = service(\"a\", \"x\", depends_on=[\"b\"])\nb = service(\"b\", \"x\", depends_on=[a])\n",
        1,
        5,
    );
    assert_eq!(e.message, "depends_on cycle: a → b → a");
    let e = err_at("a = service(\"a\", \"x\", depends_on=[\"a\"])\n", 1, 5);
    assert_eq!(e.message, "depends_on cycle: a → a");
    let e = err_at(
        "inventory = service(\"inventory\", \"x\")\nb = service(\"b\", \"x\", depends_on=[\"inventroy\"])\n",
        2,
        5,
    );
    assert_eq!(
        e.message,
        "service `b` depends on `inventroy`, which is not declared"
    );
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `inventory`?"));
}

#[test]
fn duplicate_names() {
    let e = err_at(
        "a = service(\"a\", \"x\")\nb = service(\"a\", \"y\")\n",
        2,
        13,
    );
    assert_eq!(e.message, "duplicate service name `a`");
    let e = err_at(
        "a = service(\"a\", \"x\", interface(\"m\", \"tcp\", 1), interface(\"m\", \"tcp\", 2))\n",
        1,
        49,
    );
    assert_eq!(e.message, "duplicate interface name `m` in service `a`");
    let e = err_at(
        &with_services(
            "x = fault_assumption(\"p\", target=inventory, write=deny(\"EIO\"))\ny = fault_assumption(\"p\", target=inventory, fsync=deny(\"EIO\"))\n",
        ),
        18,
        22,
    );
    assert_eq!(e.message, "duplicate fault_assumption name `p`");
    let e = err_at(
        "def f():\n    pass\nscenario(f)\nfault_scenario(\"f\", scenario=f)\n",
        4,
        1,
    );
    assert_eq!(e.message, "duplicate test name `f`");
    let e = err_at(
        "def f():\n    pass\nfault_scenario(\"test_f\", scenario=f)\ndef test_f():\n    pass\n",
        3,
        1,
    );
    assert_eq!(e.message, "duplicate test name `test_f`");
}

#[test]
fn bad_values() {
    let e = err_at("i = interface(\"m\", \"htp\", 80)\n", 1, 20);
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `http`?"));
    let e = err_at("i = interface(\"m\", \"tcp\", 70000)\n", 1, 27);
    assert_eq!(e.message, "port 70000 is not in 1..65535");
    let e = err_at("x = deny(\"EIO\", probability=20)\n", 1, 17);
    assert!(e.message.contains("not in [0, 1]"), "{e}");
    let e = err_at("x = delay(\"5 parsecs\")\n", 1, 11);
    assert!(e.message.starts_with("invalid duration"), "{e}");
    let e = err_at("a = fault_assumption(\"a\")\n", 1, 5);
    assert_eq!(e.message, "fault_assumption `a` has no rules");
    let e = err_at(
        "s = service(\"s\", \"x\")\na = fault_assumption(\"a\", target=s, write=\"EIO\")\n",
        2,
        37,
    );
    assert!(
        e.message
            .starts_with("`write=` takes deny(...), delay(...) or allow()"),
        "{e}"
    );
    let e = err_at(
        "fault_scenario(\"x\", scenario=\"not a function\")\n",
        1,
        21,
    );
    assert!(e.message.starts_with("expected a function"), "{e}");
}

#[test]
fn starlark_errors_keep_their_location() {
    let e = err_at("x = 1\ny = (2\n", 3, 1);
    assert!(e.message.contains("Parse error"), "{e}");
    let e = err_at("x = 1\ny = undefined_name + 1\n", 2, 5);
    assert!(e.message.contains("undefined_name"), "{e}");
}

#[test]
fn missing_file() {
    let e = load(std::path::Path::new("/nonexistent/spec.star"))
        .err()
        .unwrap();
    assert!(
        e.message
            .starts_with("cannot read spec /nonexistent/spec.star"),
        "{e}"
    );
    assert!(e.location.is_none());
}

// ------------------------------------------------------------------------------ attach by cgroup

const ATTACHED: &str = r#"
db = service("db", interface("main", "tcp", 5432),
    attach = "cgroup:/sys/fs/cgroup/unified/db",
    healthcheck = tcp("localhost:5432"),
    ops = {"dial": op(syscalls=["connect"]), "persist": op(syscalls=["write"])},
)
web = service("web", "bin/web", interface("http", "http", 8080), depends_on=[db])
"#;

#[test]
fn attached_services_have_no_argv_and_no_intercept_set() {
    let rt = ok(&format!(
        "{ATTACHED}{}",
        r#"
refused = fault_assumption("refused", target=db, connect=deny("ECONNREFUSED", to=web.http))
by_op = fault_assumption("by_op", target=db, dial=deny("ETIMEDOUT"))
split = partition(db, web)
def test_scoped():
    fault(db, connect=deny("ECONNREFUSED"), run=lambda: None)
assert_eq(db.main.addr, "localhost:5432")
"#
    ));
    let [db, web] = rt.spec().services.as_slice() else {
        panic!("two services")
    };
    assert!(db.argv.is_empty());
    assert_eq!(
        db.attach_cgroup.as_deref(),
        Some("/sys/fs/cgroup/unified/db")
    );
    assert_eq!(db.interfaces[0].port, 5432);
    assert_eq!(web.attach_cgroup, None);
    assert_eq!(web.depends_on, ["db"]);
    let wire = super::wire::service(db);
    assert_eq!(wire.attach_cgroup, "/sys/fs/cgroup/unified/db");
    assert!(wire.argv.is_empty());
    assert!(wire.intercept_syscalls.is_empty(), "{wire:?}");
    assert!(wire.healthcheck.is_some());
    let wire = super::wire::service(web);
    assert_eq!(wire.attach_cgroup, "");
    assert_eq!(wire.argv.len(), 1);
}

#[test]
fn binary_and_attach_are_mutually_exclusive() {
    let e = err_at(
        "s = service(\"s\", \"/bin/true\", attach=\"cgroup:/sys/fs/cgroup/s\")\n",
        1,
        31,
    );
    assert!(
        e.message
            .starts_with("service `s` has both a binary and attach="),
        "{}",
        e.message
    );
    let e = err_at("s = service(\"s\")\n", 1, 5);
    assert!(e.message.contains("needs a binary"), "{}", e.message);
    let e = err_at("s = service(\"s\", attach=\"/sys/fs/cgroup/s\")\n", 1, 18);
    assert!(
        e.message
            .starts_with("attach= takes \"cgroup:/absolute/path\""),
        "{}",
        e.message
    );
    let e = err_at("s = service(\"s\", attach=\"cgroup:rel\")\n", 1, 18);
    assert!(e.message.starts_with("attach= takes"), "{}", e.message);
    let e = err_at(
        "s = service(\"s\", attach=\"cgroup:/x\", args=[\"1\"])\n",
        1,
        38,
    );
    assert!(
        e.message.starts_with("args= does not apply to service `s`"),
        "{}",
        e.message
    );
}

#[test]
fn seccomp_only_faults_on_an_attached_service_are_load_errors() {
    // A delay on a file syscall: no backend but seccomp delays (line 8 of ATTACHED + this text).
    let e = err_at(
        &format!("{ATTACHED}a = fault_assumption(\"a\", target=db,\n    write=delay(\"1s\"))\n"),
        9,
        5,
    );
    assert!(
        e.message.starts_with(
            "service `db` is attached by cgroup (attach=), so faultd does not launch it and \
             cannot install the seccomp filter that `write=` needs"
        ),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("the ebpf-override backend cannot delay a syscall"),
        "{}",
        e.message
    );
    assert!(
        e.suggestion
            .as_deref()
            .unwrap_or_default()
            .contains("the in-kernel backends take deny and allow"),
        "{e}"
    );
    // Denials of file syscalls, globbed ops included, are the in-kernel backends' (checked again by
    // faultd, which knows whether this kernel has them).
    ok(&format!(
        "{ATTACHED}a = fault_assumption(\"a\", target=db, persist=deny(\"EIO\"), write=deny(\"EIO\"))\n"
    ));
    // A delay on connect.
    let e = err_at(
        &format!("{ATTACHED}a = fault_assumption(\"a\", target=db.main, connect=delay(\"1s\"))\n"),
        8,
        43,
    );
    assert!(
        e.message
            .contains("the ebpf-cgroup backend cannot delay a connect"),
        "{}",
        e.message
    );
    // A connect denial with a probability is drawn in the kernel from the seed (ebpf-override).
    ok(&format!(
        "{ATTACHED}a = fault_assumption(\"a\", target=db.main, connect=deny(\"ECONNREFUSED\", probability=0.5))\n"
    ));
    // A scoped fault() keyword is checked when the spec loads, whatever its action: fsync can be
    // denied in the kernel, so it loads (its action is checked when the call runs).
    ok(&format!(
        "{ATTACHED}def test_x():\n    fault(db, run=lambda: None, fsync=delay(\"1s\"))\n"
    ));
    // A crash at a syscall alone goes to ebpf-trace (bpf_send_signal), which needs no launch.
    ok(&format!(
        "{ATTACHED}a = fault_assumption(\"a\", target=db, persist=crash(), fsync=crash(signal=\"SIGABRT\"))\n"
    ));
    // The same rules on a launched service are fine.
    ok(&format!(
        "{ATTACHED}a = fault_assumption(\"a\", target=web, write=deny(\"EIO\"), connect=delay(\"1s\"))\n"
    ));
}

// ------------------------------------------------------------------------------ names and limits

#[test]
fn names_that_could_be_paths_are_refused_at_load() {
    let e = err_at("a = service(\"../x\", \"bin/a\")\n", 1, 13);
    assert!(
        e.message
            .starts_with("service name \"../x\" is not allowed: use 1 to 64 letters"),
        "{e}"
    );
    assert_eq!(e.suggestion.as_deref(), Some("for example `x`"));
    let e = err_at("a = service(\"a/b\", \"bin/a\")\n", 1, 13);
    assert_eq!(e.suggestion.as_deref(), Some("for example `a-b`"));
    let e = err_at("i = interface(\"..\", \"tcp\", 80)\n", 1, 15);
    assert!(e.message.starts_with("interface name \"..\""), "{e}");
    let e = err_at(
        "a = service(\"a\", \"bin/a\", ops={\"w/../x\": op(syscalls=[\"write\"])})\n",
        1,
        27,
    );
    assert!(e.message.starts_with("op name \"w/../x\""), "{e}");
    let e = err_at(
        "a = service(\"a\", \"bin/a\", depends_on=[\"db\", \"../db\"])\n",
        1,
        45,
    );
    assert!(e.message.starts_with("service name \"../db\""), "{e}");
}

#[test]
fn deep_nesting_is_a_spec_error_not_a_stack_overflow() {
    let e = err_at(
        &format!("x = 1\ny = {}1{}\n", "(".repeat(2000), ")".repeat(2000)),
        2,
        5 + 200,
    );
    assert!(e.message.contains("nest more than 200 deep"), "{e}");
    let e = load_src(&format!("x = {}1\n", "not ".repeat(50_000)))
        .err()
        .unwrap();
    assert!(e.message.contains("more than 2000 operators"), "{e}");
    // Right at the limit it loads.
    ok(&format!("x = {}1{}\n", "(".repeat(200), ")".repeat(200)));
}

#[test]
fn loading_has_a_memory_budget() {
    let e = err_at(
        "def grow():\n    s = \"x\"\n    for i in range(64):\n        s = s + s\n    return s\nx = grow()\n",
        4,
        9,
    );
    assert_eq!(e.message, "the spec used more than 64 MiB while loading");
    assert!(e.suggestion.is_some());
    // Growth inside one expression is caught by Starlark's own periodic check.
    let e = load_src("x = [str(i) * 1000 for i in range(100000)]\n")
        .err()
        .unwrap();
    assert_eq!(e.message, "the spec used more than 64 MiB while loading");
}

#[test]
fn loading_has_a_step_budget_and_a_call_depth_limit() {
    let e = load_src("def f():\n    for i in range(100000000):\n        pass\nf()\n")
        .err()
        .unwrap();
    assert!(
        e.message
            .starts_with("the spec took more than 1000000 steps"),
        "{e}"
    );
    let e = load_src("def f(n):\n    return f(n + 1)\nf(0)\n")
        .err()
        .unwrap();
    assert!(e.message.contains("nest more than 200 deep"), "{e}");
}

#[test]
fn durations_beyond_a_day_are_errors_not_panics() {
    let e = err_at("x = delay(\"99999999999999999999h\")\n", 1, 11);
    assert!(e.message.contains("longer than the maximum, 24h"), "{e}");
}

#[test]
fn only_regular_files_of_bounded_size_are_read() {
    let dir = std::env::temp_dir().join(format!("faultctl-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("spec.star");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = load(&fifo).err().unwrap();
    assert!(
        e.message
            .ends_with("is a FIFO: faultctl reads specs from regular files only"),
        "{e}"
    );
    let e = load(&dir).err().unwrap();
    assert!(e.message.contains("is a directory"), "{e}");
    let big = dir.join("big.star");
    std::fs::write(&big, "#".repeat((4 << 20) + 1)).unwrap();
    let e = load(&big).err().unwrap();
    assert!(e.message.contains("larger than 4 MiB"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
