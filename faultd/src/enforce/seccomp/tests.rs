//! End-to-end: real processes under the filter, answered by a real supervisor (root only).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::rules::{Action, Rule, RuleSet, RuleSlot, RuleSpec, SeededRng};
use crate::trace::{Batch, Decision, EventBus, EventKind, SyscallEvent};

use crate::skip;

/// Whether these tests can run (root); otherwise skips them, or fails under `CI=true`.
fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let test = std::thread::current()
        .name()
        .unwrap_or("seccomp launch test")
        .to_owned();
    skip::runs_if(euid == 0, &test, || {
        format!("needs root (seccomp launch tests; euid {euid})")
    })
}

/// One rule: syscalls, path glob (`$D` is the fixture's directory), destination, action.
type RuleDef<'a> = (&'a [&'a str], Option<&'a str>, Option<&'a str>, Action);

struct Fixture {
    dir: PathBuf,
    interceptor: Interceptor,
}

impl Fixture {
    fn new(tag: &str, rules: &[RuleDef<'_>]) -> Fixture {
        let dir = std::env::temp_dir().join(format!("faultd-seccomp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rng = Arc::new(SeededRng::new(7));
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(i, (syscalls, glob, dest, action))| {
                let spec = RuleSpec {
                    trigger: Default::default(),
                    service: "svc".into(),
                    op: Some("op".into()),
                    syscalls: syscalls.iter().map(|s| s.to_string()).collect(),
                    path_glob: glob.map(|g| g.replace("$D", dir.to_str().unwrap())),
                    destination: dest.map(str::to_string),
                    action: *action,
                    probability: 1.0,
                    label: Some(format!("rule{}", i + 1)),
                };
                Arc::new(Rule::compile(i as u32 + 1, "fs".into(), &spec, rng.clone()).unwrap())
            })
            .collect();
        let slot = Arc::new(RuleSlot::default());
        slot.store(Arc::new(RuleSet::new(compiled)));
        Fixture {
            dir,
            interceptor: Interceptor {
                service: "svc".into(),
                rules: slot,
                bus: Arc::new(EventBus::new(1 << 14)),
                resolve_paths: false,
                storage: Arc::default(),
            },
        }
    }

    fn syscalls(&self, names: &[&str]) -> Vec<&'static Syscall> {
        names
            .iter()
            .flat_map(|n| syscalls::expand(n).unwrap())
            .collect()
    }

    /// Runs `program args` under a filter for `names`; returns its output and the supervisor.
    fn run(&self, names: &[&str], program: &str, args: &[&str]) -> (Output, Supervisor) {
        let launch = SeccompLaunch::new(&self.syscalls(names)).unwrap();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("D", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (child, supervisor) = launch.spawn(&mut cmd, self.interceptor.clone()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out, supervisor)
    }

    fn events(&self) -> Vec<SyscallEvent> {
        let mut sub = self.interceptor.bus.subscribe(1);
        let Batch::Events(events) = sub.poll(1 << 14) else {
            return Vec::new();
        };
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Syscall(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

const EIO: Action = Action::Deny { errno: libc::EIO };

/// Without rules, intercepted calls carry no path unless the service asked for every path
/// (`resolve_paths`): then the allowed openat and write of a file name it.
#[test]
fn resolve_paths_puts_paths_on_allowed_calls_without_rules() {
    if !root() {
        return;
    }
    let script = r#"echo hello | tee "$D/a.wal" >/dev/null"#;
    let mut fx = Fixture::new("resolve-off", &[]);
    fx.run(&["openat", "write"], "/bin/sh", &["-c", script])
        .1
        .shutdown();
    let events = fx.events();
    assert!(events.iter().any(|e| e.syscall == "openat"), "{events:#?}");
    assert!(events.iter().all(|e| e.path.is_none()), "{events:#?}");

    fx = Fixture::new("resolve-on", &[]);
    fx.interceptor.resolve_paths = true;
    fx.run(&["openat", "write"], "/bin/sh", &["-c", script])
        .1
        .shutdown();
    let wal = fx.path("a.wal");
    let events = fx.events();
    for syscall in ["openat", "write"] {
        assert!(
            events.iter().any(|e| e.syscall == syscall
                && e.decision == Decision::Allow
                && e.path.as_deref() == wal.to_str()),
            "{syscall}: {events:#?}"
        );
    }
}

#[test]
fn write_to_matching_path_fails_with_eio_others_and_stdout_succeed() {
    if !root() {
        return;
    }
    let fx = Fixture::new("write", &[(&["write"], Some("$D/*.wal"), None, EIO)]);
    let script = r#"echo hello | tee "$D/a.wal" >/dev/null; echo "wal=$?"
                    echo hello | tee "$D/b.txt" >/dev/null; echo "txt=$?""#;
    let (out, supervisor) = fx.run(&["write"], "/bin/sh", &["-c", script]);
    let text = stdout(&out);
    assert!(text.contains("wal=1"), "{text}");
    assert!(text.contains("txt=0"), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Input/output error"), "{stderr}");
    assert_eq!(len(&fx.path("a.wal")), 0);
    assert_eq!(len(&fx.path("b.txt")), 6);

    let events = fx.events();
    let wal = fx.path("a.wal");
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e.decision == Decision::Deny)
        .collect();
    assert_eq!(denied.len(), 1, "{events:#?}");
    let e = denied[0];
    assert_eq!(e.path.as_deref(), wal.to_str());
    assert_eq!((e.errno, e.rule_id, e.syscall), (libc::EIO, 1, "write"));
    assert_eq!(e.label.as_deref(), Some("rule1"));
    assert_eq!(e.op.as_deref(), Some("op"));
    assert_ne!(e.pid, 0);
    assert!(
        events.iter().any(
            |e| e.decision == Decision::Allow && e.path.as_deref() == fx.path("b.txt").to_str()
        )
    );
    // Writes to fds 0-2 never reach faultd.
    assert!(
        events
            .iter()
            .all(|e| !e.path.as_deref().unwrap_or("").starts_with("pipe:"))
    );
    supervisor.wait_attached(Duration::from_secs(1)).unwrap();
    let stats = supervisor.stats();
    assert_eq!(stats.denied, 1);
    assert!(stats.received >= 2);
    supervisor.shutdown();
}

#[test]
fn openat_denied_by_path_while_the_loader_is_answered() {
    if !root() {
        return;
    }
    let deny = Action::Deny {
        errno: libc::EACCES,
    };
    let fx = Fixture::new("open", &[(&["open"], Some("$D/*.secret"), None, deny)]);
    std::fs::write(fx.path("x.secret"), "s").unwrap();
    std::fs::write(fx.path("y.txt"), "visible").unwrap();
    // Relative paths resolve against the cwd.
    let script =
        r#"cd "$D" && cat ./sub/../x.secret; echo "secret=$?"; cat y.txt; echo; echo "txt=$?""#;
    let (out, supervisor) = fx.run(&["open"], "/bin/sh", &["-c", script]);
    let text = stdout(&out);
    assert!(text.contains("secret=1"), "{text}");
    assert!(text.contains("visible"), "{text}");
    assert!(text.contains("txt=0"), "{text}");
    let events = fx.events();
    // The dynamic loader's openat calls were intercepted (and answered) before exec completed.
    assert!(
        events
            .iter()
            .any(|e| e.path.as_deref().is_some_and(|p| p.contains("libc.so")))
    );
    let secret = fx.path("x.secret");
    assert!(events.iter().any(|e| e.decision == Decision::Deny
        && e.errno == libc::EACCES
        && e.path.as_deref() == secret.to_str()));
    supervisor.shutdown();
}

#[test]
fn delays_hold_only_the_delayed_calls() {
    if !root() {
        return;
    }
    let delay = Action::Delay(Duration::from_millis(300));
    let fx = Fixture::new("delay", &[(&["write"], Some("$D/*.wal"), None, delay)]);
    // Three processes each make one delayed write at the same time: the delays overlap.
    let script =
        r#"for i in 1 2 3; do echo x | tee "$D/$i.wal" >/dev/null & done; wait; echo done"#;
    let start = Instant::now();
    let (out, supervisor) = fx.run(&["write"], "/bin/sh", &["-c", script]);
    let took = start.elapsed();
    assert!(stdout(&out).contains("done"));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_millis(850),
        "delays serialized: {took:?}"
    );
    for i in 1..=3 {
        assert_eq!(
            len(&fx.path(&format!("{i}.wal"))),
            2,
            "the delayed write happened"
        );
    }
    let delayed = fx
        .events()
        .iter()
        .filter(|e| e.decision == Decision::Delay)
        .count();
    assert_eq!(delayed, 3);
    assert_eq!(supervisor.stats().delayed, 3);
}

#[test]
fn connect_denied_to_one_port_only() {
    if !root() {
        return;
    }
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let (pa, pb) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let refuse = Action::Deny {
        errno: libc::ECONNREFUSED,
    };
    let dest = format!(":{pa}");
    let fx = Fixture::new("connect", &[(&["connect"], None, Some(&dest), refuse)]);
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{pa} && echo a=ok || echo a=fail; \
         exec 4<>/dev/tcp/127.0.0.1/{pb} && echo b=ok || echo b=fail"
    );
    let (out, supervisor) = fx.run(&["connect"], "/bin/bash", &["-c", &script]);
    let text = stdout(&out);
    assert!(text.contains("a=fail") && text.contains("b=ok"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Connection refused"));
    let events = fx.events();
    let denied = format!("127.0.0.1:{pa}");
    assert!(
        events
            .iter()
            .any(|e| e.decision == Decision::Deny && e.path.as_deref() == Some(&denied))
    );
    let allowed = format!("127.0.0.1:{pb}");
    assert!(
        events
            .iter()
            .any(|e| e.decision == Decision::Allow && e.path.as_deref() == Some(&allowed))
    );
    supervisor.shutdown();
}

#[test]
fn passthrough_answers_everything() {
    if !root() {
        return;
    }
    let fx = Fixture::new("pass", &[(&["write"], None, None, EIO)]);
    let launch = SeccompLaunch::new(&fx.syscalls(&["write", "open"])).unwrap();
    let hook = launch.child_hook();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", r#"echo hi | tee "$D/p.wal" >/dev/null && echo ok"#])
        .env("D", &fx.dir)
        .stdout(Stdio::piped());
    // SAFETY: install is async-signal-safe; the launch (then the supervisor) outlives the spawn.
    unsafe { cmd.pre_exec(move || hook.install()) };
    let supervisor = launch.start_passthrough("pass").unwrap();
    let child = cmd.spawn().unwrap();
    supervisor.child_spawned();
    let out = child.wait_with_output().unwrap();
    assert!(stdout(&out).contains("ok"));
    assert_eq!(len(&fx.path("p.wal")), 3);
    assert!(supervisor.stats().received > 0);
    assert!(fx.events().is_empty(), "passthrough reports nothing");
}

#[test]
fn a_child_that_never_sends_ends_the_thread() {
    if !root() {
        return;
    }
    let launch = SeccompLaunch::new(&syscalls::expand("write").unwrap()).unwrap();
    let supervisor = launch.start_passthrough("gone").unwrap();
    // No child ever forked: once our copy of its end is closed, the thread sees EOF.
    supervisor.child_spawned();
    let err = supervisor
        .wait_attached(Duration::from_secs(5))
        .unwrap_err();
    assert!(err.to_string().contains("exited before"), "{err}");
    assert!(!supervisor.is_running());

    // A program that does not exist: spawn fails, and so does the launch.
    let fx = Fixture::new("nope", &[]);
    let launch = SeccompLaunch::new(&syscalls::expand("write").unwrap()).unwrap();
    let mut cmd = Command::new("/nonexistent/faultd-test");
    assert!(matches!(
        launch.spawn(&mut cmd, fx.interceptor.clone()),
        Err(SeccompError::Spawn(_))
    ));
}

#[test]
fn io_uring_setup_is_added_for_file_syscalls() {
    let launch = SeccompLaunch::new(&syscalls::expand("fsync").unwrap()).unwrap();
    let names: Vec<_> = launch.syscalls().iter().map(|s| s.name).collect();
    assert_eq!(names[..3], ["fsync", "fdatasync", "io_uring_setup"]);
    assert!(
        names.contains(&"close") && names.contains(&"dup3"),
        "{names:?}"
    );
    let launch = SeccompLaunch::new(&syscalls::expand("connect").unwrap()).unwrap();
    assert_eq!(launch.syscalls().len(), 1);
    assert!(matches!(
        SeccompLaunch::new(&[]),
        Err(SeccompError::Filter(FilterError::Empty))
    ));
}

#[test]
fn the_handoff_survives_an_intercepted_sendmsg() {
    if !root() {
        return;
    }
    // sendmsg is intercepted, so only the filter's handoff exemption keeps the child's own sendmsg of
    // the listener from waiting for a supervisor that does not have the listener yet.
    let fx = Fixture::new("sendmsg", &[(&["sendto"], None, None, EIO)]);
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = fx.dir.clone();
    let interceptor = fx.interceptor.clone();
    std::thread::spawn(move || {
        let launch = SeccompLaunch::new(&syscalls::expand("sendto").unwrap()).unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo alive"])
            .env("D", dir)
            .stdout(Stdio::piped());
        let (child, supervisor) = launch.spawn(&mut cmd, interceptor).unwrap();
        let out = child.wait_with_output().unwrap();
        supervisor.shutdown();
        tx.send(out).unwrap();
    });
    let out = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the launch deadlocked on its own sendmsg");
    assert_eq!(stdout(&out), "alive\n");
}
