//! What a connect fault costs the target, per backend: ns per `socket` + blocking `connect(2)` to
//! 127.0.0.1 + `close`, measured inside `faultd-victim bench-connect` so process start-up is excluded.
//! Every connect in every mode fails with ECONNREFUSED (the port has no listener). Modes run
//! interleaved, several rounds, and the median per mode is reported:
//!
//! - 0: socket + close without a connect: the part of every round that is not the connect;
//! - a: no fault: the kernel's TCP stack refuses (SYN, RST over loopback);
//! - k: ebpf-cgroup: `fd_connect4` attached to the victim's cgroup refuses with `bpf_set_retval`
//!   before any packet is sent, and reports the decision through its ring buffer to a task that emits
//!   it on a bus, as in the daemon;
//! - s: seccomp: faultd's supervisor receives the notification, decodes the sockaddr, matches the rule
//!   and answers ECONNREFUSED (what `backend="seccomp"` forces).
//!
//! Needs root and a writable cgroup v2 mount; otherwise it says so and exits 0 (fails under `CI=true`).
//!
//! Run: `cargo bench -p faultd --bench connect` (env `FAULTD_BENCH_ROUNDS`, default 7).

mod common;

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::skip::cannot_run;
use faultd::cgroup::{Cgroup, CgroupTree};
use faultd::enforce::Interceptor;
use faultd::enforce::ebpf::cgroup::{ConnectFaults, EventSink};
use faultd::enforce::seccomp::SeccompLaunch;
use faultd::rules::{Action, Rule, RuleSet, RuleSlot, RuleSpec, SeededRng};
use faultd::syscalls;
use faultd::trace::EventBus;

const VICTIM: &str = env!("CARGO_BIN_EXE_faultd-victim");
const CALLS: u64 = 20_000;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Base,
    Plain,
    Kernel,
    Seccomp,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::Base, Mode::Plain, Mode::Kernel, Mode::Seccomp];

    fn label(self) -> &'static str {
        match self {
            Mode::Base => "0  socket + close, no connect",
            Mode::Plain => "a  no fault: TCP refuses (SYN, RST)",
            Mode::Kernel => "k  ebpf-cgroup: fd_connect4 refuses",
            Mode::Seccomp => "s  seccomp: faultd's supervisor refuses",
        }
    }
}

fn rule(port: u16) -> Arc<Rule> {
    let spec = RuleSpec {
        trigger: Default::default(),
        service: "bench".into(),
        op: None,
        syscalls: vec!["connect".into()],
        path_glob: None,
        destination: Some(format!(":{port}")),
        action: Action::Deny {
            errno: libc::ECONNREFUSED,
        },
        probability: 1.0,
        label: None,
    };
    Arc::new(Rule::compile(1, "bench".into(), &spec, Arc::new(SeededRng::new(1))).expect("rule"))
}

/// One run of the victim; in `cgroup` when given, under faultd's seccomp supervisor with `seccomp`.
fn run(addr: &str, cgroup: Option<&Cgroup>, seccomp: Option<Arc<Rule>>) -> f64 {
    let n = CALLS.to_string();
    let mut cmd = Command::new(VICTIM);
    cmd.args(["bench-connect", &n, addr])
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
    let (child, supervisor) = match seccomp {
        None => (cmd.spawn().expect("spawn victim"), None),
        Some(rule) => {
            let slot = Arc::new(RuleSlot::default());
            slot.store(Arc::new(RuleSet::new(vec![rule])));
            let interceptor = Interceptor {
                service: "bench".into(),
                rules: slot,
                bus: Arc::new(EventBus::new(1 << 16)),
                resolve_paths: false,
                storage: Arc::default(),
            };
            let connect = syscalls::expand("connect").expect("connect");
            let (child, supervisor) = SeccompLaunch::new(&connect)
                .expect("filter")
                .spawn(&mut cmd, interceptor)
                .expect("spawn victim under faultd");
            (child, Some(supervisor))
        }
    };
    let out = child.wait_with_output().expect("victim output");
    if let Some(s) = supervisor {
        s.shutdown();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("victim said {text:?}"))
            .to_owned()
    };
    let refused: u64 = field("refused=").parse().expect("refused count");
    let total = CALLS + CALLS / 10;
    if addr != "none" {
        assert_eq!(refused, total, "every connect is refused: {text}");
    }
    field("ns_per_call=").parse().expect("ns per call")
}

fn main() {
    const BENCH: &str = "connect bench";
    if !common::is_root() {
        cannot_run(
            BENCH,
            "needs root (attaching cgroup programs and supervising a child)",
        );
        return;
    }
    if let Err(reason) = faultd::enforce::ebpf::cgroup::available() {
        cannot_run(BENCH, &format!("ebpf-cgroup is not available: {reason}"));
        return;
    }
    let Some(root) = faultd::cgroup::cgroup_v2_root() else {
        cannot_run(
            BENCH,
            "no cgroup v2 mount to attach the connect programs to",
        );
        return;
    };
    // A port bound but never listening: connects to it are refused by TCP itself in mode a, and no
    // other process can take the port while the bench holds the socket.
    let refusing = tokio::net::TcpSocket::new_v4().expect("socket");
    refusing
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let port = refusing.local_addr().expect("addr").port();
    let addr = format!("127.0.0.1:{port}");
    let tree = CgroupTree::create(&root, 9100).expect("create the bench cgroup tree");
    let plain = tree.service("bench", "plain").expect("cgroup");
    let faulted = tree.service("bench", "faulted").expect("cgroup");
    let kernel_rule = rule(port);
    // As in the daemon: a task reads each decision from the ring buffer onto a session bus.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bus = Arc::new(EventBus::new(1 << 16));
    let sink = EventSink {
        service: "bench".into(),
        bus: bus.clone(),
    };
    let mut programs = {
        let _entered = runtime.enter();
        ConnectFaults::attach(faulted.path(), Some(sink)).expect("attach fd_connect4")
    };
    programs
        .set_rules(std::slice::from_ref(&kernel_rule))
        .expect("install the rule");
    let rounds: usize = common::rounds();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "faultd connect bench: socket + connect(2) to {addr} + close, every connect refused, {CALLS} per run, {rounds} interleaved rounds, {cpus} CPUs, nothing pinned"
    );
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); Mode::ALL.len()];
    for _ in 0..rounds {
        samples[0].push(run("none", Some(&plain), None));
        samples[1].push(run(&addr, Some(&plain), None));
        samples[2].push(run(&addr, Some(&faulted), None));
        samples[3].push(run(&addr, Some(&plain), Some(rule(port))));
    }
    programs.sync_hits();
    let kernel_hits = kernel_rule.hits();
    drop(programs);
    let events = bus.total();
    drop(runtime);
    tree.destroy();
    let expected = rounds as u64 * (CALLS + CALLS / 10);
    assert_eq!(kernel_hits, expected, "the kernel counted every refusal");
    let ranges: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            let lo = s.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = s.iter().copied().fold(0.0, f64::max);
            (lo, hi)
        })
        .collect();
    let med: Vec<f64> = samples.iter_mut().map(|s| common::median(s)).collect();
    println!();
    println!(
        "{:<42} {:>10} {:>21} {:>9}",
        "mode", "median ns", "range ns", "vs a"
    );
    let (base, tcp, kernel, seccomp) = (med[0], med[1], med[2], med[3]);
    for (i, mode) in Mode::ALL.iter().enumerate() {
        println!(
            "{:<42} {:>10.1} {:>10.1}–{:<10.1} {:>8.2}×",
            mode.label(),
            med[i],
            ranges[i].0,
            ranges[i].1,
            med[i] / tcp
        );
    }
    println!();
    let (k, s) = (kernel - base, seccomp - base);
    println!(
        "per round (s)/(k) = {:.2}; the connect alone (minus socket + close, mode 0): \
         ebpf-cgroup {k:.0} ns, seccomp {s:.0} ns, (s-0)/(k-0) = {:.1}× ({:+.0} ns per faulted \
         connect); a real TCP refusal costs {:.0} ns; {kernel_hits} in-kernel refusals counted, \
         {events} reached the bus as events",
        seccomp / kernel,
        s / k,
        s - k,
        tcp - base,
    );
}
