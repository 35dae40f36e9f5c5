//! What storage faults cost a target: ns per 1-byte `write(2)` to a regular file, measured inside
//! `faultd-victim bench-write` (process start-up excluded), modes interleaved over several rounds,
//! medians reported as ratios to (d), the plain intercepted-and-allowed write of the same run:
//!
//! - d: `write` intercepted, an `allow()` rule on the file (fd resolved, event emitted, CONTINUE);
//! - v: a `volatile()` rule on the file: each write is also recorded for power loss (the target's fd
//!   duplicated with `pidfd_getfd`, its offset and the file's length read; appends save no bytes);
//! - s: `short(fraction=0.5)`: faultd does each write on the target's behalf (`pidfd_getfd`,
//!   `process_vm_readv`, `write`) and answers the count.
//!
//! Nothing asserts a time. Needs root; otherwise it says so and exits 0 (fails under `CI=true`).
//! Run: `cargo bench -p faultd --bench storage` (env `FAULTD_BENCH_ROUNDS`, default 7).

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;

use common::skip::cannot_run;
use faultd::enforce::Interceptor;
use faultd::enforce::seccomp::SeccompLaunch;
use faultd::rules::{Action, Fraction, Rule, RuleSet, RuleSlot, RuleSpec, SeededRng};
use faultd::syscalls;
use faultd::trace::{DEFAULT_CAPACITY, EventBus};

const VICTIM: &str = env!("CARGO_BIN_EXE_faultd-victim");
const CALLS: u64 = 20_000;

#[derive(Clone, Copy)]
enum Mode {
    Allowed,
    Volatile,
    Short,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Allowed, Mode::Volatile, Mode::Short];

    fn label(self) -> &'static str {
        match self {
            Mode::Allowed => "d  intercepted, allow() rule on the file",
            Mode::Volatile => "v  volatile(): each write recorded for power loss",
            Mode::Short => "s  short(0.5): faultd writes on the target's behalf",
        }
    }

    fn action(self) -> Action {
        match self {
            Mode::Allowed => Action::Allow,
            Mode::Volatile => Action::Volatile,
            Mode::Short => Action::Short {
                fraction: Fraction::new(0.5).expect("a fraction"),
            },
        }
    }
}

fn run(mode: Mode, path: &str) -> f64 {
    // A fresh file each run: the victim opens it O_WRONLY (no O_CREAT) and appends by position.
    std::fs::write(path, b"").expect("bench file");
    let spec = RuleSpec {
        service: "bench".into(),
        op: None,
        syscalls: vec!["write".into()],
        path_glob: Some(path.into()),
        destination: None,
        action: mode.action(),
        probability: 1.0,
        label: None,
        trigger: Default::default(),
    };
    let rule = Rule::compile(1, "bench".into(), &spec, Arc::new(SeededRng::new(1))).expect("rule");
    let slot = Arc::new(RuleSlot::default());
    slot.store(Arc::new(RuleSet::new(vec![Arc::new(rule)])));
    let interceptor = Interceptor {
        service: "bench".into(),
        rules: slot,
        bus: Arc::new(EventBus::new(DEFAULT_CAPACITY)),
        resolve_paths: false,
        storage: Arc::default(),
    };
    let mut cmd = Command::new(VICTIM);
    cmd.args(["bench-write", &CALLS.to_string(), path])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let write = syscalls::expand("write").expect("write family");
    let (child, supervisor) = SeccompLaunch::new(&write)
        .expect("filter")
        .spawn(&mut cmd, interceptor)
        .expect("spawn victim under faultd");
    let out = child.wait_with_output().expect("victim output");
    supervisor.shutdown();
    let written = std::fs::metadata(path).map_or(0, |m| m.len());
    assert_eq!(written, CALLS + CALLS / 10, "every 1-byte write landed");
    common::ns_per_call(&String::from_utf8_lossy(&out.stdout))
}

fn main() {
    if !common::is_root() {
        cannot_run(
            "storage bench",
            "needs root (installing faultd's filter on a child and answering it)",
        );
        return;
    }
    let rounds = common::rounds();
    let path = format!("/tmp/faultd-bench-storage-{}.dat", std::process::id());
    println!(
        "faultd storage bench: 1-byte write(2) to a regular file, {rounds} interleaved rounds"
    );
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); Mode::ALL.len()];
    for _ in 0..rounds {
        for (i, mode) in Mode::ALL.iter().enumerate() {
            samples[i].push(run(*mode, &path));
        }
    }
    let _ = std::fs::remove_file(&path);
    let med: Vec<f64> = samples.iter_mut().map(|s| common::median(s)).collect();
    println!();
    println!("{:<54} {:>10} {:>12}", "mode", "median ns", "vs (d)");
    for (i, mode) in Mode::ALL.iter().enumerate() {
        println!(
            "{:<54} {:>10.1} {:>11.2}×",
            mode.label(),
            med[i],
            med[i] / med[0]
        );
    }
}
