//! Spec errors at load: each names what is wrong at its file:line:col, with a suggestion where one
//! helps (unknown names, bad values, attached services, names that could be paths, the loader's
//! budgets).

use super::load;
use super::tests::{err_at, load_src, ok, run, with_services};

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
        Some("deny() takes label=, probability=, to=, after=, max_fires=")
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
    let e = err_at("x = deny(\"EIO\", probability=120)\n", 1, 17);
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
        32,
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

#[test]
fn network_takes_host_or_nothing() {
    let rt = ok(
        "s = service(\"s\", \"/bin/true\", network=\"host\")\nt = service(\"t\", \"/bin/true\")\n",
    );
    let [s, t] = rt.spec().services.as_slice() else {
        panic!("two services")
    };
    assert_eq!(super::wire::service(s).network, "host");
    assert_eq!(super::wire::service(t).network, "");
    let e = err_at(
        "s = service(\"s\", \"/bin/true\", network=\"bridge\")\n",
        1,
        31,
    );
    assert!(
        e.message.starts_with("network= takes \"host\""),
        "{}",
        e.message
    );
    assert!(e.suggestion.is_some());
}
