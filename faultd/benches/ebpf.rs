//! What the ebpf-trace backend costs: ns per 1-byte `write(2)` to /dev/null, measured inside
//! `faultd-victim bench-write` so process start-up is excluded. Modes run interleaved, several rounds,
//! and the median per mode is reported as a ratio to plain:
//!
//! - a: plain, the tracer detached;
//! - u: the tracer attached (tracing another cgroup), the victim not targeted: what every process on
//!   the host pays while a session traces all syscalls;
//! - t: the victim targeted (its cgroup registered): each syscall is recorded and delivered through
//!   the ring buffer (batched wakeups) to a session bus.
//!
//! Needs root and a writable cgroup v2 mount; otherwise it says so and exits 0 (fails under `CI=true`).
//!
//! Run: `cargo bench -p faultd --bench ebpf` (env `FAULTD_BENCH_ROUNDS`, default 7).

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::skip::cannot_run;
use faultd::cgroup::{Cgroup, CgroupTree};
use faultd::enforce::ebpf::trace::Tracer;
use faultd::trace::EventBus;

const VICTIM: &str = env!("CARGO_BIN_EXE_faultd-victim");
const CALLS: u64 = 300_000;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Untargeted,
    Targeted,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Plain, Mode::Untargeted, Mode::Targeted];

    fn label(self) -> &'static str {
        match self {
            Mode::Plain => "a  plain write, tracer detached",
            Mode::Untargeted => "u  tracer attached, process not targeted",
            Mode::Targeted => "t  tracer attached, process targeted (recorded)",
        }
    }
}

/// One run of the victim, in `cgroup` when given; ns per call.
fn run(cgroup: Option<&Cgroup>) -> f64 {
    let n = CALLS.to_string();
    let mut cmd = Command::new(VICTIM);
    cmd.args(["bench-write", &n, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let procs = cgroup.map(|c| c.procs_file().expect("open cgroup.procs"));
    if let Some(procs) = &procs {
        let fd = procs.as_raw_fd();
        // SAFETY: the hook only calls write(2) on an fd that outlives the spawn.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd
        .spawn()
        .expect("spawn victim")
        .wait_with_output()
        .expect("victim output");
    let text = String::from_utf8_lossy(&out.stdout);
    common::ns_per_call(&text)
}

fn main() {
    const BENCH: &str = "ebpf bench";
    if !common::is_root() {
        cannot_run(
            BENCH,
            "needs root (loading the tracer and placing the victim in a cgroup)",
        );
        return;
    }
    if let Some(reason) = faultd::enforce::ebpf::ebpf_trace_unavailable() {
        cannot_run(BENCH, &reason);
        return;
    }
    let Some(root) = faultd::cgroup::cgroup_v2_root() else {
        cannot_run(BENCH, "no cgroup v2 mount to target the victim by");
        return;
    };
    let tree = CgroupTree::create(&root, 9000).expect("create the bench cgroup tree");
    let target = tree
        .service("bench", "victim")
        .expect("create the bench cgroup");
    let id = std::fs::metadata(target.path())
        .expect("cgroup inode")
        .ino();
    let rounds: usize = common::rounds();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "faultd ebpf-trace bench: 1-byte write(2) to /dev/null, {CALLS} calls per run, {rounds} interleaved rounds, {cpus} CPUs, nothing pinned"
    );
    let tracer = Tracer::global();
    let bus = Arc::new(EventBus::new(1 << 16));
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); Mode::ALL.len()];
    let mut delivered = 0;
    for _ in 0..rounds {
        samples[0].push(run(None));
        tracer
            .register("bench", id, "victim".into(), bus.clone())
            .expect("attach the tracer");
        samples[1].push(run(None));
        samples[2].push(run(Some(&target)));
        tracer.unregister("bench");
        delivered = bus.total();
    }
    tree.destroy();
    let ranges: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            let lo = s.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = s.iter().copied().fold(0.0, f64::max);
            (lo, hi)
        })
        .collect();
    let med: Vec<f64> = samples.iter_mut().map(|s| common::median(s)).collect();
    let plain = med[0];
    println!();
    println!(
        "{:<50} {:>10} {:>21} {:>9}",
        "mode", "median ns", "range ns", "vs plain"
    );
    for (i, mode) in Mode::ALL.iter().enumerate() {
        println!(
            "{:<50} {:>10.1} {:>10.1}–{:<10.1} {:>8.2}×",
            mode.label(),
            med[i],
            ranges[i].0,
            ranges[i].1,
            med[i] / plain
        );
    }
    println!();
    println!(
        "(u)/(a) = {:.2} ({:+.0} ns per syscall for every process on the host while attached); \
         (t)/(a) = {:.2} ({:+.0} ns per traced syscall); {delivered} events reached the bus in all",
        med[1] / plain,
        med[1] - plain,
        med[2] / plain,
        med[2] - plain,
    );
}
