//! Per-test overhead of `faultctl run` (issue 12, point 6): the wall time of the example specs that
//! run on the demo services alone, with `--jobs 1` and `--jobs 4`, against a tight loop doing what
//! `specs/named-ops.star` does without faultd: for each of its 8 tests, start `inventory-svc` and
//! `order-svc`, wait for their ports (the spec's healthchecks), send the test's request, stop both.
//! Printed as medians and ratios against the loop, measured in the same run.
//!
//! Nothing here asserts a time. Needs root (faultd launches and intercepts services) and the demo
//! services (`cargo build --release -p faultd-demo`; `cargo xtask bench` builds them).
//!
//! Run: `cargo bench -p faultctl --bench overhead` (env `FAULTD_BENCH_ROUNDS`, default 3).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../faultd/tests/support/skip.rs"]
mod skip;

/// The specs that need nothing but the demo services; named-ops is the one the loop mirrors.
const SPECS: [&str; 4] = [
    "specs/named-ops.star",
    "specs/peer-traces.star",
    "specs/peer-wiring.star",
    "specs/peer-flaky.star",
];

/// The requests of named-ops.star's 8 tests, in order: `place_order` and `check_inventory`, each
/// plainly, under faults, and as matrix cells.
const REQUESTS: [(&str, &str); 8] = [
    ("POST", "/orders"),
    ("POST", "/orders"),
    ("POST", "/orders"),
    ("GET", "/inventory/widget"),
    ("POST", "/orders"),
    ("POST", "/orders"),
    ("GET", "/inventory/widget"),
    ("GET", "/inventory/widget"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("faultctl lives in the workspace")
        .to_owned()
}

fn rounds() -> usize {
    std::env::var("FAULTD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Why the bench cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (faultd launches and intercepts the demo services)".into());
    }
    let release = root().join("target/release");
    ["inventory-svc", "order-svc"]
        .iter()
        .map(|b| release.join(b))
        .find(|p| !p.is_file())
        .map(|p| {
            format!(
                "{} missing: cargo build --release -p faultd-demo",
                p.display()
            )
        })
}

/// Seconds `faultctl run <spec> --jobs <jobs>` takes (an engine in the process, as without a daemon).
fn faultctl(spec: &str, jobs: usize) -> f64 {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_faultctl"))
        .args([
            "run", spec, "--daemon", "embedded", "--seed", "1", "--format", "json",
        ])
        .args(["--jobs", &jobs.to_string()])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("faultctl runs");
    let took = start.elapsed().as_secs_f64();
    // 2: a test failed, as some do on purpose.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "faultctl run {spec}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Retries `attempt` every millisecond until it succeeds (at most 10 s).
fn wait_for(what: &str, mut attempt: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !attempt() {
        assert!(Instant::now() < deadline, "{what} not ready within 10s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One HTTP/1.1 request on a fresh connection; the status, if one came.
fn http(addr: &str, method: &str, path: &str, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn stop(mut child: Child) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// Seconds the tight loop takes: named-ops.star's 8 tests without faultd.
fn tight_loop() -> f64 {
    let bin = root().join("target/release");
    let wal = std::env::temp_dir().join(format!("bench-inventory-{}.wal", std::process::id()));
    let start = Instant::now();
    for (method, path) in REQUESTS {
        let inventory = Command::new(bin.join("inventory-svc"))
            .env("PORT", "5432")
            .env("WAL_PATH", &wal)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("inventory-svc starts");
        wait_for("inventory", || TcpStream::connect("127.0.0.1:5432").is_ok());
        let orders = Command::new(bin.join("order-svc"))
            .env("PORT", "8080")
            .env("INVENTORY_ADDR", "localhost:5432")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("order-svc starts");
        wait_for("orders", || {
            http("127.0.0.1:8080", "GET", "/health", "").is_some_and(|s| s < 400)
        });
        let body = if method == "POST" {
            r#"{"sku":"widget","qty":1}"#
        } else {
            ""
        };
        assert!(
            http("127.0.0.1:8080", method, path, body).is_some(),
            "{method} {path} answered"
        );
        stop(orders);
        stop(inventory);
    }
    let took = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&wal);
    took
}

fn main() {
    if let Some(reason) = skip_reason() {
        skip::cannot_run("overhead bench", &reason);
        return;
    }
    let rounds = rounds();
    let mut lp = Vec::new();
    let mut runs: Vec<[Vec<f64>; 2]> = SPECS.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    // Interleaved, so a change in the machine's load touches every mode alike.
    for _ in 0..rounds {
        lp.push(tight_loop());
        for (spec, times) in SPECS.iter().zip(&mut runs) {
            times[0].push(faultctl(spec, 1));
            times[1].push(faultctl(spec, 4));
        }
    }
    let lp = median(&mut lp);
    println!("per-test overhead, median of {rounds} rounds (wall time, seconds):");
    println!("  tight loop (named-ops.star's 8 tests without faultd): {lp:.3}");
    let (mut all1, mut all4) = (0.0, 0.0);
    for (spec, [one, four]) in SPECS.iter().zip(&mut runs) {
        let (one, four) = (median(one), median(four));
        all1 += one;
        all4 += four;
        println!("  {spec:<24} --jobs 1: {one:.3}  --jobs 4: {four:.3}");
        if *spec == SPECS[0] {
            println!(
                "  named-ops.star vs the tight loop: --jobs 1 {:.2}× (goal 3×), --jobs 4 {:.2}×",
                one / lp,
                four / lp
            );
        }
    }
    println!(
        "  all {} specs: --jobs 1 {all1:.3}, --jobs 4 {all4:.3} ({:.2}× of --jobs 1)",
        SPECS.len(),
        all4 / all1
    );
}
