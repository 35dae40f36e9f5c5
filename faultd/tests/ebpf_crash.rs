//! `crash` enforced by the ebpf-trace backend (root only): `bpf_send_signal` at `sys_enter` kills a
//! service attached by cgroup at the matched syscall, before it takes effect, and the tracer is gone
//! after the session.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use faultd_proto::v1 as pb;
use support::outside::{next_line, spawn_in_cgroup};
use support::*;

/// The tests count faultd's tracer programs host-wide (bpftool may not name their holders): one at
/// a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Ids of the loaded `fd_trace_*` programs the daemon `pid` holds (all of them when bpftool does
/// not report holders).
fn trace_programs(pid: u32) -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool prog show failed: {out:?}");
    let serde_json::Value::Array(progs) =
        serde_json::from_slice(&out.stdout).expect("bpftool --json output")
    else {
        panic!("bpftool prog show: not a list");
    };
    progs
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("fd_trace"))
        })
        .filter(|p| match p["pids"].as_array() {
            Some(pids) => pids.iter().any(|x| x["pid"].as_u64() == Some(pid.into())),
            None => true,
        })
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// [`trace_programs`] once it is empty, or after 5 s. The kernel frees a program after an RCU grace
/// period once its last fd and link are gone.
async fn no_trace_programs(pid: u32) -> Vec<u64> {
    let mut left = trace_programs(pid);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = trace_programs(pid);
    }
    left
}

fn crash(service: &str, syscalls: &[&str], signal: &str) -> pb::FaultRule {
    pb::FaultRule {
        service: service.into(),
        syscalls: syscalls.iter().map(|s| s.to_string()).collect(),
        action: Some(pb::fault_rule::Action::Crash(pb::Crash {
            signal: signal.into(),
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_at_write_kills_an_attached_service_before_the_write_takes_effect() {
    let test = "crash_at_write_kills_an_attached_service_before_the_write_takes_effect";
    if !root_or_skip(test) {
        return;
    }
    let Some(root) = cgroup_v2_root_or_skip(test) else {
        return;
    };
    if !bpftool_or_skip(test) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let Some(trace) = available_backend(&mut client, "ebpf-trace", test).await else {
        return;
    };
    assert!(trace.actions.iter().any(|a| a == "crash"), "{trace:#?}");

    let go1 = format!("/tmp/{}", unique("faultd-crash-go1"));
    let go2 = format!("/tmp/{}", unique("faultd-crash-go2"));
    let wal = format!("/tmp/{}.wal", unique("faultd-crash"));
    let victim = victim();
    // After `quiet` the victim prints nothing, so the WAL write is its only write(2).
    let (mut outside, lines) = spawn_in_cgroup(
        &root,
        &[
            &victim, "wait", &go1, "write", &wal, "a", "quiet", "wait", &go2, "write", &wal, "b",
            "sleep", "60",
        ],
    );
    outside.files = vec![go1.clone(), go2.clone(), wal.clone()];
    let dir = outside.dir.display().to_string();

    let created = create(
        &mut client,
        vec![pb::ServiceSpec {
            name: "db".into(),
            attach_cgroup: dir.clone(),
            ..Default::default()
        }],
    )
    .await;
    let session = created.session_id.clone();
    // Nothing is attached before a crash rule (programs of the probe or of an earlier test's
    // daemon may take a moment to be freed).
    let left = no_trace_programs(daemon.child.id()).await;
    assert!(
        left.is_empty(),
        "fd_trace programs before any rule: {left:?}"
    );

    // A crash rule with a path glob cannot go to ebpf-trace; the refusal says why.
    let mut globbed = crash("db", &["write"], "SIGKILL");
    globbed.path_glob = "/tmp/*.wal".into();
    let err = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules: vec![globbed],
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .expect_err("a crash rule with a path glob on an attached service");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(
        err.message()
            .contains("the seccomp backend needs faultd to launch the service")
            && err.message().contains(
                "the ebpf-trace backend crashes at a syscall only for rules without a path glob"
            )
            && err.message().contains("this rule has a path glob"),
        "{err}"
    );

    std::fs::write(&go1, "").unwrap();
    assert_eq!(next_line(&lines), format!("wait {go1} ok"));
    assert_eq!(next_line(&lines), format!("write {wal} ok"));
    assert_eq!(std::fs::read_to_string(&wal).unwrap(), "a");

    let mut events = client
        .watch_events(pb::WatchEventsRequest {
            session_id: session.clone(),
            from_seq: 1,
            follow: true,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut rule = crash("db", &["write"], "SIGKILL");
    rule.backend = "ebpf-trace".into();
    let applied = apply(&mut client, &session, vec![rule]).await;
    assert_eq!(applied.rules[0].backend, "ebpf-trace");
    let rule_id = applied.rules[0].rule_id;
    assert_eq!(
        trace_programs(daemon.child.id()).len(),
        2,
        "the tracer is attached while the crash rule is active"
    );

    std::fs::write(&go2, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = outside.child.try_wait().expect("wait for the victim") {
            break status;
        }
        assert!(Instant::now() < deadline, "the victim did not die");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert_eq!(
        std::fs::read_to_string(&wal).unwrap(),
        "a",
        "the crashing write must not take effect"
    );

    // The trace names the decision, the signal, the rule and the backend.
    let crashed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(event)) = events.message().await {
            if let Some(pb::event::Kind::Syscall(s)) = event.kind
                && s.decision == pb::Decision::Crash as i32
            {
                return Some(s);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("a crash event");
    assert_eq!(crashed.syscall, "write");
    assert_eq!(crashed.backend, "ebpf-trace");
    assert_eq!(crashed.signal, libc::SIGKILL);
    assert_eq!(crashed.rule_id, rule_id);
    assert_eq!(crashed.pid, outside.child.id());

    let summary = client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .expect("delete session")
        .into_inner();
    assert_eq!(summary.rules.len(), 1, "{:#?}", summary.rules);
    assert_eq!(summary.rules[0].hits, 1, "{:#?}", summary.rules);

    let left = no_trace_programs(daemon.child.id()).await;
    assert!(left.is_empty(), "fd_trace programs left: {left:?}");
    drop(outside);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_forced_to_ebpf_trace_kills_a_launched_service_at_write() {
    let test = "crash_forced_to_ebpf_trace_kills_a_launched_service_at_write";
    if !root_or_skip(test) {
        return;
    }
    if cgroup_v2_root_or_skip(test).is_none() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let go = format!("/tmp/{}", unique("faultd-crash-go"));
    let wal = format!("/tmp/{}.wal", unique("faultd-crash"));
    let victim = victim();
    // Nothing intercepted: seccomp could not enforce a write rule, ebpf-trace needs no filter.
    let created = create(
        &mut client,
        vec![service(
            "db",
            &[
                &victim, "quiet", "write", &wal, "a", "wait", &go, "write", &wal, "b",
            ],
            &[],
        )],
    )
    .await;
    let session = created.session_id.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&wal).unwrap_or_default() != "a" {
        assert!(Instant::now() < deadline, "the first write did not land");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A rule with a probability cannot go to ebpf-trace.
    let mut maybe = crash("db", &["write"], "SIGKILL");
    maybe.backend = "ebpf-trace".into();
    maybe.probability = Some(0.5);
    let err = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules: vec![maybe],
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .expect_err("a crash rule with a probability on ebpf-trace");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains(
            "the ebpf-trace backend crashes at a syscall only for rules without a path glob, \
             destination or probability (its map is keyed by cgroup and syscall number, and an \
             in-kernel draw is not seeded), and this rule has a probability"
        ),
        "{err}"
    );

    let mut rule = crash("db", &["write"], "SIGKILL");
    rule.backend = "ebpf-trace".into();
    let applied = apply(&mut client, &session, vec![rule]).await;
    assert_eq!(applied.rules[0].backend, "ebpf-trace");
    std::fs::write(&go, "").unwrap();
    let events = events_until_exit(&mut client, &session, "db", Duration::from_secs(20)).await;
    let exited = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(pb::event::Kind::Exited(x)) => Some(*x),
            _ => None,
        })
        .expect("db exited");
    assert_eq!(exited.signal, libc::SIGKILL, "{exited:?}");
    assert!(!exited.stopped_by_faultd);
    assert_eq!(std::fs::read_to_string(&wal).unwrap(), "a");

    let summary = client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .expect("delete session")
        .into_inner();
    assert_eq!(summary.rules[0].hits, 1, "{:#?}", summary.rules);
    let crashed: Vec<_> = syscalls(&events)
        .into_iter()
        .filter(|(_, _, s)| s.decision == pb::Decision::Crash as i32)
        .collect();
    assert!(
        crashed.len() <= 1 && crashed.iter().all(|(_, _, s)| s.backend == "ebpf-trace"),
        "{crashed:#?}"
    );
    let _ = std::fs::remove_file(&go);
    let _ = std::fs::remove_file(&wal);
}
