//! Unit tests of the peer's (Faultbox's) builtins as its specs use them: loading, interception from
//! launch, argument errors at `file:line:col` with a suggestion, and the bodies that need no daemon.

use super::tests::{SERVICES, err_at, offline_session, ok, run, with_services};
use crate::spec::model::Partition;

#[test]
fn trace_and_fault_start_keys_are_intercepted_from_launch() {
    let rt = ok(&with_services(
        r#"
def test_traced():
    trace(inventory, syscalls=["openat", "fsync"], run=lambda: None)
    trace_start(orders, syscalls=["connect"])
    fault_start(inventory, wal_write=deny("EIO"))
    fault_stop(inventory)
    trace_stop(orders)
"#,
    ));
    let [inv, ord] = rt.spec().services.as_slice() else {
        panic!()
    };
    assert_eq!(
        inv.intercept.iter().map(String::as_str).collect::<Vec<_>>(),
        ["fsync", "openat", "write"]
    );
    assert_eq!(
        ord.intercept.iter().map(String::as_str).collect::<Vec<_>>(),
        ["connect"]
    );
    // The spec queries its trace: every service resolves the paths of allowed calls too.
    assert!(inv.resolve_paths && ord.resolve_paths);
    assert!(!ok(SERVICES).spec().services[0].resolve_paths);
    let rt = ok(&with_services(
        "def test_q():\n    assert_never(decision=\"deny\")\n",
    ));
    assert!(rt.spec().services.iter().all(|s| s.resolve_paths));
}

#[test]
fn trace_and_fault_start_argument_errors_point_at_the_source() {
    let e = err_at(
        &format!(
            "{SERVICES}def test_t():\n    trace(inventory, syscalls=[\"opnat\"], run=lambda: None)\n"
        ),
        18,
        32,
    );
    assert_eq!(e.message, "unknown syscall or family `opnat`");
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `openat`?"));
    let e = err_at(
        &format!("{SERVICES}def test_t():\n    fault_start(inventory, persit=deny(\"EIO\"))\n"),
        18,
        28,
    );
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `persist`?"));
    // Outside a test they have no services to act on.
    for call in [
        "trace_start(inventory, syscalls=[\"openat\"])",
        "fault_start(inventory, write=deny(\"EIO\"))",
        "fault_stop(inventory)",
        "partition_start(orders, inventory)",
        "events()",
        "assert_eventually(syscall=\"openat\")",
    ] {
        let e = err_at(&format!("{SERVICES}{call}\n"), 17, 1);
        assert!(e.message.contains("call it inside a test"), "{call}: {e}");
    }
}

#[test]
fn partition_directions_accept_the_peers_names() {
    let rt = ok(&with_services(
        r#"
a = partition(orders, inventory, direction="a_to_b")
b = partition(orders, inventory, direction="b_to_a", label="back")
fault_scenario("a", scenario=lambda: None, faults=a)
fault_scenario("b", scenario=lambda: None, faults=b)
"#,
    ));
    let tests = &rt.spec().tests;
    assert_eq!(
        tests[0].faults[0].partitions,
        vec![Partition {
            from: "orders".into(),
            to: "inventory".into(),
            both: false,
            label: None
        }]
    );
    assert_eq!(
        tests[1].faults[0].partitions,
        vec![Partition {
            from: "inventory".into(),
            to: "orders".into(),
            both: false,
            label: Some("back".into())
        }]
    );
    let e = err_at(
        &format!("{SERVICES}x = partition(orders, inventory, direction=\"a_to_c\")\n"),
        17,
        34,
    );
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `a_to_b`?"));
    let e = err_at(
        &format!("{SERVICES}x = partition(orders, inventory, ruin=print)\n"),
        17,
        34,
    );
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `run`?"));
}

#[test]
fn query_filters_are_checked_before_the_trace_is_read() {
    let rt = ok(&with_services(
        r#"
def test_typo():
    assert_eventually(sycall="openat")
def test_type():
    events(path=3)
def test_before():
    assert_before(first="fsync", then={"syscall": "write"})
def test_where():
    assert_never(where="e.retval < 0")
"#,
    ));
    let e = run(&rt, "test_typo").unwrap_err();
    assert!(
        e.contains("unknown filter `sycall`; did you mean `syscall`?"),
        "{e}"
    );
    let e = run(&rt, "test_type").unwrap_err();
    assert!(e.contains("path= takes a string"), "{e}");
    let e = run(&rt, "test_before").unwrap_err();
    assert!(e.contains("assert_before(first=) takes a dict"), "{e}");
    let e = run(&rt, "test_where").unwrap_err();
    assert!(e.contains("where= takes a function"), "{e}");
}

#[test]
fn services_get_the_peers_interface_variables() {
    let rt = ok(SERVICES);
    let inv = &rt.spec().services[0];
    assert_eq!(inv.env["FAULTBOX_ORDERS_PUBLIC_ADDR"], "localhost:8080");
    assert_eq!(inv.env["FAULTBOX_INVENTORY_MAIN_PORT"], "5432");
    assert_eq!(inv.env["FAULTD_ORDERS_PUBLIC_HOST"], "localhost");
}

#[test]
fn probabilities_in_the_peers_forms_and_ambiguous_ones_refused() {
    let rt = ok(&with_services(
        r#"
a = fault_assumption("a", target=inventory,
    write = deny("EIO", probability=20),
    fsync = deny("EIO", probability="0.2"),
    openat = deny("EIO", probability="20"),
)
fault_scenario("s", scenario=lambda: None, faults=a)
"#,
    ));
    let rules = &rt.spec().tests[0].faults[0].rules;
    assert!(
        rules.iter().all(|r| r.probability == Some(0.2)),
        "{rules:?}"
    );
    let e = err_at(
        &format!("{SERVICES}x = deny(\"EIO\", probability=1)\n"),
        17,
        17,
    );
    assert!(e.message.contains("ambiguous"), "{e}");
    assert!(e.message.contains("\"1%\""), "{e}");
}

#[test]
fn load_reads_helpers_relative_to_the_spec() {
    let dir = std::env::temp_dir().join(format!("faultctl-load-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(
        dir.join("lib/ops.star"),
        "def wal():\n    return op(syscalls=[\"write\"], path=\"/tmp/*.wal\")\nEIO = deny(\"EIO\", label=\"lib\")\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("lib/bad.star"),
        "def f():\n    return scenario(f)\nf()\n",
    )
    .unwrap();
    let spec = dir.join("spec.star");
    std::fs::write(
        &spec,
        "load(\"lib/ops.star\", \"wal\", \"EIO\")\ns = service(\"s\", \"/bin/true\", ops={\"wal\": wal()})\na = fault_assumption(\"a\", target=s, wal=EIO)\nfault_scenario(\"x\", scenario=lambda: None, faults=a)\n",
    )
    .unwrap();
    let rt = crate::spec::load(&spec).unwrap_or_else(|e| panic!("{e}"));
    let rule = &rt.spec().tests[0].faults[0].rules[0];
    assert_eq!(rule.path.as_deref(), Some("/tmp/*.wal"));
    assert_eq!(rule.label.as_deref(), Some("lib"));
    std::fs::write(&spec, "load(\"lib/bad.star\", \"f\")\n").unwrap();
    let e = crate::spec::load(&spec).err().unwrap();
    assert!(
        e.message
            .contains("a load()ed module may only define helpers"),
        "{e}"
    );
    let loc = e.location.unwrap();
    assert!(
        loc.file.ends_with("lib/bad.star") && loc.line == 2,
        "{loc:?}"
    );
    std::fs::write(&spec, "load(\"missing.star\", \"f\")\n").unwrap();
    let e = crate::spec::load(&spec).err().unwrap();
    assert!(
        e.message.contains("relative to the spec's directory"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_and_print_in_a_test() {
    let rt = ok(r#"
def test_json():
    v = json.decode('{"sku": "widget", "qty": [1, 2]}')
    assert_eq(v["qty"][1], 2)
    assert_eq(json.decode(json.encode(v)), v)
    print("stock", v["sku"])
"#);
    let index = rt
        .spec()
        .tests
        .iter()
        .position(|t| t.name == "test_json")
        .unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (session, _cancel) = offline_session(&tokio);
    let printed = session.printed.clone();
    tokio.block_on(rt.run_body(index, session)).unwrap();
    assert_eq!(*printed.lock().unwrap(), ["stock widget"]);
}

#[test]
fn scenario_on_a_test_function_runs_it_once() {
    let rt = ok("def test_happy_path():\n    pass\nscenario(test_happy_path)\n");
    let names: Vec<&str> = rt.spec().tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["test_happy_path"]);
    let selected = crate::runner::select(rt.spec(), Some("test_test_happy_path")).unwrap();
    assert_eq!(selected, [0]);
    assert_eq!(
        crate::runner::select(rt.spec(), Some("happy_path")).unwrap(),
        [0]
    );
}

/// The README's table of the peer's builtins says what exists: every `supported` or `differs` row is
/// a builtin here, no `not supported` row is, and the peer's builtins we have are all in it.
#[test]
fn readme_table_of_the_peers_builtins_matches_the_builtins() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("<!-- peer-builtins")
        .expect("the README has the peer-builtins table");
    let end = readme.find("<!-- /peer-builtins -->").expect("table end");
    let globals = super::worker::globals();
    let ours: std::collections::BTreeSet<String> =
        globals.names().map(|n| n.as_str().to_owned()).collect();
    let mut rows = Vec::new();
    for line in readme[start..end].lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`');
        let status = cells[2];
        assert!(
            ["supported", "differs", "not supported"].contains(&status),
            "{name}: status `{status}`"
        );
        // `load` is a statement of the language, not a builtin.
        let exists = ours.contains(name) || name == "load";
        assert_eq!(
            exists,
            status != "not supported",
            "README says `{name}` is {status}, but it {} a builtin",
            if exists { "is" } else { "is not" }
        );
        if status != "supported" {
            assert!(
                !cells[3].is_empty(),
                "{name}: say how it differs or why not"
            );
        }
        rows.push(name.to_owned());
    }
    assert!(rows.len() > 40, "{rows:?}");
    // The peer's builtins this issue brings are all listed.
    let peer_names = [
        "service",
        "interface",
        "tcp",
        "http",
        "op",
        "deny",
        "delay",
        "allow",
        "fault",
        "fault_start",
        "fault_stop",
        "trace",
        "trace_start",
        "trace_stop",
        "partition",
        "partition_start",
        "partition_stop",
        "fault_assumption",
        "fault_scenario",
        "fault_matrix",
        "scenario",
        "assert_true",
        "assert_eq",
        "assert_eventually",
        "assert_never",
        "assert_before",
        "events",
        "print",
        "json",
        "struct",
        "mock_service",
        "json_response",
        "text_response",
        "status_only",
        "dynamic",
    ];
    for name in peer_names {
        assert!(
            rows.iter().any(|r| r == name),
            "`{name}` missing from the README table"
        );
    }
}
