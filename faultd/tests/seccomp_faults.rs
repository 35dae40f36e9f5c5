//! Faults enforced by the seccomp backend on a real program launched by a real faultd (root only).

mod support;

use std::time::Duration;

use faultd_proto::v1 as pb;
use support::*;

const EXIT_WAIT: Duration = Duration::from_secs(20);

/// A scratch directory and the "go" file the victim waits for before its ops, so faults are in place.
struct Scratch {
    dir: String,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = format!("/tmp/{}", unique("faultd-it"));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }
    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }
    fn go(&self) {
        std::fs::write(self.path("go"), "").unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the victim with `ops` under `rules`, returns its stdout lines and all events.
async fn run_victim(
    scratch: &Scratch,
    intercept: &[&str],
    rules: Vec<pb::FaultRule>,
    ops: &[&str],
) -> (Vec<String>, Vec<pb::Event>) {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let go = scratch.path("go");
    let victim = victim();
    let mut argv = vec![victim.as_str(), "wait", go.as_str()];
    argv.extend_from_slice(ops);
    let mut svc = service("victim", &argv, intercept);
    svc.ops = vec![pb::Op {
        name: "persist".into(),
        syscalls: vec!["write".into(), "fsync".into()],
        path_glob: format!("{}/*.wal", scratch.dir),
    }];
    let session = create(&mut client, vec![svc]).await.session_id;
    apply(&mut client, &session, rules).await;
    scratch.go();
    let events = events_until_exit(&mut client, &session, "victim", EXIT_WAIT).await;
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
    (stdout_lines(&events, "victim"), events)
}

fn line_for<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn write_to_a_matching_path_fails_with_eio_while_others_succeed() {
    if !root_or_skip("write_to_a_matching_path_fails_with_eio_while_others_succeed") {
        return;
    }
    let s = Scratch::new();
    let (wal, log) = (s.path("a.wal"), s.path("a.log"));
    let glob = format!("{}/*.wal", s.dir);
    let (lines, _) = run_victim(
        &s,
        &["write"],
        vec![deny("victim", &["write"], &glob, "EIO")],
        &[
            "write",
            &wal,
            "x",
            "write",
            &log,
            "y",
            "stdout",
            "still-here",
        ],
    )
    .await;
    assert_eq!(
        line_for(&lines, &format!("write {wal}")),
        format!("write {wal} err EIO")
    );
    assert_eq!(
        line_for(&lines, &format!("write {log}")),
        format!("write {log} ok")
    );
    assert!(
        lines.iter().any(|l| l.contains("still-here")),
        "stdout works: {lines:#?}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "y");
    assert_eq!(std::fs::read_to_string(&wal).unwrap_or_default(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn fsync_and_fdatasync_are_denied() {
    if !root_or_skip("fsync_and_fdatasync_are_denied") {
        return;
    }
    let s = Scratch::new();
    let wal = s.path("b.wal");
    let (lines, _) = run_victim(
        &s,
        &["fsync"],
        vec![deny("victim", &["fsync"], "", "EIO")],
        &["fsync", &wal, "fdatasync", &wal],
    )
    .await;
    assert_eq!(line_for(&lines, "fsync"), format!("fsync {wal} err EIO"));
    assert_eq!(
        line_for(&lines, "fdatasync"),
        format!("fdatasync {wal} err EIO")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openat_is_denied_by_path() {
    if !root_or_skip("openat_is_denied_by_path") {
        return;
    }
    let s = Scratch::new();
    let (secret, other) = (s.path("secret.db"), s.path("other.txt"));
    let (lines, _) = run_victim(
        &s,
        &["open"],
        vec![deny(
            "victim",
            &["open"],
            &format!("{}/*.db", s.dir),
            "EACCES",
        )],
        &["open", &secret, "open", &other],
    )
    .await;
    assert_eq!(
        line_for(&lines, &format!("open {secret}")),
        format!("open {secret} err EACCES")
    );
    assert_eq!(
        line_for(&lines, &format!("open {other}")),
        format!("open {other} ok")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_is_refused_to_one_port_only() {
    if !root_or_skip("connect_is_refused_to_one_port_only") {
        return;
    }
    // Two ports free on the host now; the victim listens on both itself, in its session's network,
    // so only the rule refuses the first.
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (fp, op) = (port(), port());
    let s = Scratch::new();
    let mut rule = deny("victim", &["connect"], "", "ECONNREFUSED");
    rule.destination = format!(":{fp}");
    // Connect denials go to ebpf-cgroup where it is available; this test is about seccomp.
    rule.backend = "seccomp".into();
    let (a, b) = (format!("127.0.0.1:{fp}"), format!("127.0.0.1:{op}"));
    let (lines, events) = run_victim(
        &s,
        &["connect"],
        vec![rule],
        &["listen", &a, "listen", &b, "connect", &a, "connect", &b],
    )
    .await;
    assert_eq!(
        line_for(&lines, &format!("connect {a}")),
        format!("connect {a} err ECONNREFUSED")
    );
    assert_eq!(
        line_for(&lines, &format!("connect {b}")),
        format!("connect {b} ok")
    );
    let denied: Vec<_> = syscalls(&events)
        .into_iter()
        .filter(|(_, _, s)| s.decision == pb::Decision::Deny as i32)
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0].2.path, a);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_adds_its_duration_without_stalling_another_thread() {
    if !root_or_skip("a_delay_adds_its_duration_without_stalling_another_thread") {
        return;
    }
    let s = Scratch::new();
    let wal = s.path("slow.wal");
    let rule = pb::FaultRule {
        service: "victim".into(),
        syscalls: vec!["write".into()],
        path_glob: format!("{}/*.wal", s.dir),
        action: Some(pb::fault_rule::Action::Delay(pb::Delay {
            duration_us: 1_000_000,
        })),
        ..Default::default()
    };
    let (lines, events) = run_victim(&s, &["write"], vec![rule], &["delay-probe", &wal]).await;
    let line = line_for(&lines, "delay-probe");
    // delay-probe PATH write_us=N other_iterations=N other_max_gap_us=N
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .parse()
            .unwrap()
    };
    assert!(
        field("write_us") >= 1_000_000,
        "the write took its delay: {line}"
    );
    assert!(field("other_iterations") > 0, "{line}");
    assert!(
        field("other_max_gap_us") < 500_000,
        "the other thread kept running while the write waited: {line}"
    );
    let delayed = syscalls(&events)
        .into_iter()
        .find(|(_, _, s)| s.decision == pb::Decision::Delay as i32)
        .expect("a delay event");
    assert_eq!(delayed.2.delay_us, 1_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forked_grandchild_is_covered() {
    if !root_or_skip("a_forked_grandchild_is_covered") {
        return;
    }
    let s = Scratch::new();
    let wal = s.path("child.wal");
    let (lines, events) = run_victim(
        &s,
        &["write"],
        vec![deny(
            "victim",
            &["write"],
            &format!("{}/*.wal", s.dir),
            "EIO",
        )],
        &["grandchild", &wal, "sleep", "0.3"],
    )
    .await;
    assert!(
        lines.iter().any(|l| l == &format!("write {wal} err EIO")),
        "the grandchild's write failed: {lines:#?}"
    );
    let main_pid = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(pb::event::Kind::Started(s)) => Some(s.pid),
            _ => None,
        })
        .unwrap();
    let denied = syscalls(&events)
        .into_iter()
        .find(|(_, _, s)| s.decision == pb::Decision::Deny as i32)
        .expect("a deny event");
    assert_ne!(denied.2.pid, main_pid, "the deny came from another process");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_arrive_in_order_with_op_and_label() {
    if !root_or_skip("events_arrive_in_order_with_op_and_label") {
        return;
    }
    let s = Scratch::new();
    let wal = s.path("order.wal");
    let rule = pb::FaultRule {
        service: "victim".into(),
        op: "persist".into(),
        action: Some(pb::fault_rule::Action::Deny(pb::Deny {
            errno: "EIO".into(),
        })),
        label: "persist broken".into(),
        ..Default::default()
    };
    let (_, events) = run_victim(
        &s,
        &[],
        vec![rule],
        &[
            "write",
            &wal,
            "a",
            "fsync",
            &wal,
            "write",
            &s.path("x.log"),
            "b",
        ],
    )
    .await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "monotonic: {seqs:?}");
    let denied: Vec<_> = syscalls(&events)
        .into_iter()
        .filter(|(_, _, s)| s.decision == pb::Decision::Deny as i32)
        .map(|(_, svc, s)| (svc, s.op, s.syscall, s.errno_name, s.label, s.path))
        .collect();
    let expect = |sc: &str| {
        (
            "victim".to_string(),
            "persist".to_string(),
            sc.to_string(),
            "EIO".to_string(),
            "persist broken".to_string(),
            wal.clone(),
        )
    };
    assert_eq!(denied, vec![expect("write"), expect("fsync")]);
    let allowed_log = syscalls(&events)
        .into_iter()
        .any(|(_, _, s)| s.path.ends_with("x.log") && s.decision == pb::Decision::Allow as i32);
    assert!(
        allowed_log,
        "the write outside the op's glob is an allow event"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_on_a_syscall_outside_the_filter_is_refused_clearly() {
    if !root_or_skip("a_fault_on_a_syscall_outside_the_filter_is_refused_clearly") {
        return;
    }
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let victim = victim();
    let session = create(
        &mut client,
        vec![service("victim", &[&victim, "sleep", "30"], &["write"])],
    )
    .await
    .session_id;
    let err = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules: vec![deny("victim", &["fsync"], "", "EIO")],
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("does not intercept"),
        "{}",
        err.message()
    );
    let err = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules: vec![deny("victim", &["write"], "", "EWHAT")],
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_write_kills_the_service_before_the_bytes_land() {
    if !root_or_skip("a_crash_at_write_kills_the_service_before_the_bytes_land") {
        return;
    }
    let s = Scratch::new();
    let wal = s.path("crash.wal");
    let (go, go2) = (s.path("go"), s.path("go2"));
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let victim = victim();
    let argv = [
        victim.as_str(),
        "wait",
        &go,
        "write",
        &wal,
        "committed;",
        "wait",
        &go2,
        "write",
        &wal,
        "lost;",
        "stdout",
        "survived",
    ];
    let session = create(&mut client, vec![service("victim", &argv, &["write"])])
        .await
        .session_id;
    s.go();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&wal).unwrap_or_default() != "committed;" {
        assert!(
            std::time::Instant::now() < deadline,
            "the first write never landed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let crash = pb::FaultRule {
        service: "victim".into(),
        syscalls: vec!["write".into()],
        path_glob: format!("{}/*.wal", s.dir),
        action: Some(pb::fault_rule::Action::Crash(pb::Crash::default())),
        label: "crash before write".into(),
        ..Default::default()
    };
    apply(&mut client, &session, vec![crash]).await;
    std::fs::write(&go2, "").unwrap();
    let events = events_until_exit(&mut client, &session, "victim", EXIT_WAIT).await;
    assert_eq!(std::fs::read_to_string(&wal).unwrap(), "committed;");
    let exit = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(pb::event::Kind::Exited(x)) => Some(*x),
            _ => None,
        })
        .expect("an exit event");
    assert_eq!(exit.signal, libc::SIGKILL, "{exit:?}");
    assert!(!exit.stopped_by_faultd);
    let crashed = syscalls(&events)
        .into_iter()
        .find(|(_, _, s)| s.decision == pb::Decision::Crash as i32)
        .expect("a crash event");
    assert_eq!(
        (crashed.2.signal, crashed.2.path.as_str()),
        (libc::SIGKILL, wal.as_str())
    );
    assert!(
        !stdout_lines(&events, "victim")
            .iter()
            .any(|l| l == "survived")
    );
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn io_uring_setup_is_refused_while_a_file_rule_is_active() {
    if !root_or_skip("io_uring_setup_is_refused_while_a_file_rule_is_active") {
        return;
    }
    let s = Scratch::new();
    let glob = format!("{}/*.wal", s.dir);
    let (lines, _) = run_victim(
        &s,
        &["write"],
        vec![deny("victim", &["write"], &glob, "EIO")],
        &["io-uring"],
    )
    .await;
    assert_eq!(line_for(&lines, "io-uring"), "io-uring err ENOSYS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_fd_number_is_resolved_to_its_new_file() {
    if !root_or_skip("a_reused_fd_number_is_resolved_to_its_new_file") {
        return;
    }
    // Each `write` op opens, writes once and closes, so every file gets the same fd number: faultd's
    // fd → path cache must forget it at each close.
    let s = Scratch::new();
    let (wal, log) = (s.path("reuse.wal"), s.path("reuse.log"));
    let glob = format!("{}/*.wal", s.dir);
    let ops = [
        "write", &log, "a", "write", &wal, "b", "write", &log, "c", "write", &wal, "d", "write",
        &log, "e",
    ];
    let (lines, events) = run_victim(
        &s,
        &["write"],
        vec![deny("victim", &["write"], &glob, "EIO")],
        &ops,
    )
    .await;
    let writes: Vec<&String> = lines.iter().filter(|l| l.starts_with("write ")).collect();
    let expect = [
        format!("write {log} ok"),
        format!("write {wal} err EIO"),
        format!("write {log} ok"),
        format!("write {wal} err EIO"),
        format!("write {log} ok"),
    ];
    assert_eq!(writes, expect.iter().collect::<Vec<_>>(), "{lines:#?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ace");
    let paths: Vec<String> = syscalls(&events)
        .into_iter()
        .filter(|(_, _, e)| e.syscall == "write" && e.path.starts_with(&s.dir))
        .map(|(_, _, e)| e.path)
        .collect();
    assert_eq!(
        paths,
        [&log, &wal, &log, &wal, &log].map(String::clone),
        "{paths:#?}"
    );
}
