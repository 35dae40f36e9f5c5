//! `faultctl run --jobs N` (issue 12, point 4): the report is the same with `--jobs 4` as with
//! `--jobs 1` (minus wall times) on every example spec this host can run, tests in source order;
//! a spec whose services listen on no port runs its tests (and matrix cells, and `--runs`) in
//! parallel sessions; progress lines only on a terminal (stderr is a pipe here); a spec on fixed
//! ports runs one test at a time, with a note, while sessions share the host's network.
//!
//! Needs root (faultd launches and intercepts services), the demo services
//! (`cargo build --release -p faultd-demo`) and, for two specs, redis, sqlite3, PostgreSQL and the
//! shop's Python modules (`cargo xtask deps`); skipped with the reason otherwise (failed under
//! `CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "../../faultd/tests/support/skip.rs"]
mod skip;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("faultctl lives in the workspace")
        .to_owned()
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why `spec` cannot run here, if it cannot.
fn skip_reason(spec: &str) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (faultd launches and intercepts services)".into());
    }
    let release = workspace_root().join("target/release");
    for bin in ["inventory-svc", "order-svc", "kv-svc", "sql-svc"] {
        if !release.join(bin).is_file() {
            return Some(format!(
                "{} missing: cargo build --release -p faultd-demo",
                release.join(bin).display()
            ));
        }
    }
    let needs_redis = spec.ends_with("power-loss.star") || spec.ends_with("shop.star");
    if needs_redis && !succeeds("redis-server", &["--version"]) {
        return Some(format!("{spec} needs redis-server (cargo xtask deps)"));
    }
    if spec.ends_with("power-loss.star") && !succeeds("sqlite3", &["-version"]) {
        return Some(format!("{spec} needs the sqlite3 CLI (cargo xtask deps)"));
    }
    if spec.ends_with("shop.star")
        && !(Path::new("/usr/lib/postgresql").is_dir()
            && succeeds("python3", &["-c", "import redis, pg8000"]))
    {
        return Some(format!(
            "{spec} needs PostgreSQL and the Python modules redis and pg8000 (cargo xtask deps)"
        ));
    }
    None
}

/// What the example specs leave in /tmp between runs (a test may read what an earlier one wrote).
fn clean_state() {
    for file in [
        "/tmp/inventory.wal",
        "/tmp/crash-demo.wal",
        "/tmp/kv-demo.log",
        "/tmp/kv-demo-nosync.log",
        "/tmp/sql-demo-full.db",
        "/tmp/sql-demo-full.db-wal",
        "/tmp/sql-demo-full.db-shm",
        "/tmp/sql-demo-off.db",
        "/tmp/sql-demo-off.db-wal",
        "/tmp/sql-demo-off.db-shm",
    ] {
        let _ = std::fs::remove_file(file);
    }
    for dir in ["/tmp/redis-demo-always", "/tmp/redis-demo-no"] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn faultctl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(args)
        // The engine built with this faultctl, not whatever daemon this host runs.
        .args(["--daemon", "embedded", "--format", "json", "--seed", "7"])
        .current_dir(cwd)
        .output()
        .expect("faultctl runs")
}

/// The report without what varies from run to run: wall times, the syscalls no rule decided, when
/// each decided syscall came (its time, its number among every event of the session, its place
/// among other services' syscalls), pids, socket inodes and `mktemp` names.
fn normalized(out: &Output, what: &str) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: JSON on stdout ({e}); stderr:\n{stderr}"));
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                // `exits`: whether a service a fault crashed is seen gone before the test's report
                // is taken depends on timing (noted for the next person: the report could wait
                // for the exit of a crashed service).
                for key in [
                    "duration_ms",
                    "time_ns",
                    "latency_ns",
                    "pid",
                    "seq",
                    "exits",
                ] {
                    map.remove(key);
                }
                if let Some(Value::String(path)) = map.get_mut("path") {
                    *path = stable_path(path);
                }
                if let Some(Value::Array(events)) = map.get_mut("events") {
                    // How many syscalls a service makes that no rule decides depends on timing
                    // (a healthcheck's retries, a server's background writes): the decided ones
                    // are the test's.
                    events.retain(|e| e["decision"] != "allow");
                    // Services start at once (each after its dependencies): how their syscalls
                    // interleave varies, each one's own order does not.
                    events.sort_by_key(|e| e["service"].as_str().unwrap_or_default().to_owned());
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut report);
    report
}

/// `path` without what is new every run: a socket's inode (`socket:[123]`), the random part of a
/// `mktemp -d` directory (`/tmp/faultd-shop-redis.HAVi5o/...`).
fn stable_path(path: &str) -> String {
    if path.starts_with("socket:[") {
        return "socket:[…]".into();
    }
    path.split('/')
        .map(|part| match part.rsplit_once('.') {
            Some((name, random))
                if random.len() == 6 && random.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                format!("{name}.XXXXXX")
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn names(report: &Value) -> Vec<String> {
    report["tests"]
        .as_array()
        .expect("tests is an array")
        .iter()
        .map(|t| t["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// The test names `faultctl check` lists: source order.
fn source_order(spec: &str, cwd: &Path) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args(["check", spec])
        .current_dir(cwd)
        .output()
        .expect("faultctl check runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn jobs_4_and_jobs_1_give_the_same_report_on_every_example_spec() {
    let root = workspace_root();
    let mut specs: Vec<String> = std::fs::read_dir(root.join("specs"))
        .expect("specs/")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            // peer-helpers.star is a module the others load, not a spec.
            (name.ends_with(".star") && name != "peer-helpers.star")
                .then(|| format!("specs/{name}"))
        })
        .collect();
    specs.sort();
    assert!(specs.len() >= 7, "example specs: {specs:?}");
    for spec in &specs {
        if let Some(reason) = skip_reason(spec) {
            skip::cannot_run(&format!("--jobs on {spec}"), &reason);
            continue;
        }
        let mut reports = Vec::new();
        for jobs in ["1", "4"] {
            clean_state();
            let out = faultctl(&["run", spec, "--jobs", jobs], &root);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                matches!(out.status.code(), Some(0 | 2)),
                "{spec} --jobs {jobs}: {:?}\n{stderr}",
                out.status
            );
            assert!(
                !stderr.contains("[1/"),
                "no progress line off a terminal: {stderr}"
            );
            if spec == "specs/named-ops.star" && jobs == "4" {
                // As root, faultd gives each session a network namespace, so the fixed ports do
                // not keep the tests apart; the WAL file they all write does.
                assert!(
                    stderr
                        .contains("the services use fixed files (/tmp/*.wal, /tmp/inventory.wal)")
                        && !stderr.contains("fixed ports"),
                    "{stderr}"
                );
            }
            let report = normalized(&out, &format!("{spec} --jobs {jobs}"));
            assert_eq!(
                names(&report),
                source_order(spec, &root),
                "{spec} --jobs {jobs}"
            );
            reports.push((out.status.code(), report));
        }
        assert_eq!(
            reports[0], reports[1],
            "{spec}: the report with --jobs 4 differs from --jobs 1"
        );
    }
    clean_state();
}

/// A spec whose services listen on no port: nothing keeps its tests apart, so they run 4 at once.
const PORT_FREE: &str = r#"
a = service("a", "/bin/sleep", args = ["60"], ops = {"out": op(syscalls = ["write"])})
b = service("b", "/bin/sleep", args = ["60"], depends_on = [a])

def one():
    return 1

def two():
    return 2

broken_a = fault_assumption("broken_a", target = a, out = deny("EIO"))
broken_b = fault_assumption("broken_b", target = b, write = deny("EIO"))

def test_first():
    print("first")

def test_fails():
    assert_eq(1, 2, "on purpose")

scenario(one)

fault_scenario("one_broken", scenario = one, faults = broken_a,
    expect = lambda r: assert_eq(r, 1))

fault_matrix(
    scenarios = [one, two],
    faults = [broken_a, broken_b],
    expect = lambda r: assert_eq(r, 1, "only one returns 1"),
)

def test_last():
    print("last")
"#;

#[test]
fn a_port_free_spec_runs_its_tests_and_cells_in_parallel_in_source_order() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip::cannot_run(
            "a_port_free_spec_runs_its_tests_and_cells_in_parallel_in_source_order",
            "needs root (faultd launches and intercepts services)",
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("faultctl-jobs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("spec.star"), PORT_FREE).unwrap();
    let order = source_order("spec.star", &dir);
    assert_eq!(order.len(), 9, "{order:?}");
    let mut reports = Vec::new();
    for jobs in ["1", "4"] {
        let out = faultctl(&["run", "spec.star", "--jobs", jobs], &dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // test_fails and the two cells of `two` fail.
        assert_eq!(out.status.code(), Some(2), "--jobs {jobs}: {stderr}");
        assert!(
            !stderr.contains("note:"),
            "nothing shared, no fallback: {stderr}"
        );
        assert!(
            !stderr.contains("[1/"),
            "no progress line off a terminal: {stderr}"
        );
        let report = normalized(&out, &format!("--jobs {jobs}"));
        assert_eq!(names(&report), order, "--jobs {jobs}");
        assert_eq!(
            (report["passed"].as_u64(), report["failed"].as_u64()),
            (Some(6), Some(3))
        );
        reports.push(report);
    }
    assert_eq!(reports[0], reports[1], "--jobs 4 differs from --jobs 1");

    // --runs with --jobs: every run complete, same tests fail each time.
    let out = faultctl(&["run", "spec.star", "--jobs", "4", "--runs", "2"], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("2 runs (seeds 7, 8)"), "{stderr}");
    assert!(stderr.contains("no flaky test"), "{stderr}");
    assert_eq!(names(&normalized(&out, "--runs 2")), order);
    std::fs::remove_dir_all(&dir).unwrap();
}
