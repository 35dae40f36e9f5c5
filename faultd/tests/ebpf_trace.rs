//! The ebpf-trace backend on a real faultd: `trace = TRACE_MODE_ALL` shows every syscall of a
//! session's service with its return value and latency, nothing of other processes, and the programs
//! are gone once the session ends (root only).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use faultd_proto::v1 as pb;
use support::*;

/// The tests inspect host-wide BPF state; run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const EXIT_WAIT: Duration = Duration::from_secs(20);

struct Scratch {
    dir: String,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = format!("/tmp/{}", unique("faultd-trace"));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }
    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A traced session running the victim with `ops` (after the go file appears) under `rules`.
struct Traced {
    session: String,
    pid: u32,
    events: tokio::sync::mpsc::UnboundedReceiver<pb::Event>,
}

async fn start_traced(
    client: &mut pb::faultd_client::FaultdClient<tonic::transport::Channel>,
    scratch: &Scratch,
    rules: Vec<pb::FaultRule>,
    ops: &[&str],
) -> Traced {
    let go = scratch.path("go");
    let victim = victim();
    let mut argv = vec![victim.as_str(), "wait", go.as_str()];
    argv.extend_from_slice(ops);
    let created = client
        .create_session(pb::CreateSessionRequest {
            name: "trace".into(),
            services: vec![service("victim", &argv, &["write"])],
            lease_ms: 0,
            trace: pb::TraceMode::All as i32,
        })
        .await
        .expect("create a traced session")
        .into_inner();
    apply(client, &created.session_id, rules).await;
    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            session_id: created.session_id.clone(),
            from_seq: 1,
            follow: true,
        })
        .await
        .expect("watch")
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(event)) = stream.message().await {
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    Traced {
        session: created.session_id,
        pid: created.services[0].pid,
        events: rx,
    }
}

/// Waits for the victim to exit, deletes the session and returns every event up to the trace's end.
async fn finish(
    client: &mut pb::faultd_client::FaultdClient<tonic::transport::Channel>,
    mut traced: Traced,
) -> Vec<pb::Event> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, traced.events.recv()).await {
        let exited = matches!(event.kind, Some(pb::event::Kind::Exited(_)));
        events.push(event);
        if exited {
            break;
        }
    }
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: traced.session.clone(),
        })
        .await
        .expect("delete session");
    // The bus closes after the ring is drained: everything traced arrives before the stream ends.
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_secs(10), traced.events.recv()).await
    {
        events.push(event);
    }
    events
}

fn observed(events: &[pb::Event]) -> Vec<(u64, pb::SyscallEvent)> {
    syscalls(events)
        .into_iter()
        .filter(|(_, _, s)| s.decision == pb::Decision::Observed as i32)
        .map(|(seq, _, s)| (seq, s))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_all_shows_the_failed_write_and_the_close_after_it_with_results() {
    if !root_or_skip("trace_all_shows_the_failed_write_and_the_close_after_it_with_results") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let s = Scratch::new();
    let (wal, log) = (s.path("a.wal"), s.path("b.log"));
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let traced = start_traced(
        &mut client,
        &s,
        vec![deny(
            "victim",
            &["write"],
            &format!("{}/*.wal", s.dir),
            "EIO",
        )],
        &["write", &wal, "x", "write", &log, "yz"],
    )
    .await;
    let pid = traced.pid;
    // Another process writing while the tracer is attached: none of its syscalls may show up.
    let outsider = Command::new(victim())
        .args(["bench-write", "20000", "/dev/null"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn an outsider");
    let outsider_pid = outsider.id();
    std::fs::write(s.path("go"), "").unwrap();
    let events = finish(&mut client, traced).await;
    let _ = outsider.wait_with_output();

    let lines = stdout_lines(&events, "victim");
    assert!(
        lines.iter().any(|l| l == &format!("write {wal} err EIO")),
        "{lines:#?}"
    );
    let seen = observed(&events);
    assert!(seen.len() > 10, "too few observed syscalls: {seen:#?}");
    for (_, e) in &seen {
        assert_eq!(e.pid, pid, "an event of another process: {e:#?}");
        assert_ne!(e.pid, outsider_pid);
        assert_eq!(e.backend, "ebpf-trace");
    }

    // The write the seccomp rule denied: one event, seccomp's decision with the -EIO the tracer saw
    // it return ...
    let calls: Vec<(u64, pb::SyscallEvent)> = syscalls(&events)
        .into_iter()
        .map(|(seq, _, e)| (seq, e))
        .collect();
    let failed = calls
        .iter()
        .position(|(_, e)| {
            e.syscall == "write" && e.has_retval && e.retval == -i64::from(libc::EIO)
        })
        .unwrap_or_else(|| panic!("no write returning -EIO in {calls:#?}"));
    let write = &calls[failed].1;
    assert_eq!(write.errno_name, "EIO");
    assert_eq!(
        (write.backend.as_str(), write.path.as_str()),
        ("seccomp", wal.as_str())
    );
    // ... and the close of its fd right after it, returning 0, with the fd's path.
    let close = &calls[failed + 1].1;
    assert_eq!(
        (
            close.syscall.as_str(),
            close.has_retval,
            close.retval,
            close.path.as_str()
        ),
        ("close", true, 0, wal.as_str()),
        "{calls:#?}"
    );
    // The other write went through: seccomp's allow, with the 2 bytes the tracer saw it return.
    assert!(
        calls.iter().any(|(_, e)| e.syscall == "write"
            && e.has_retval
            && e.retval == 2
            && e.latency_ns > 0),
        "{seen:#?}"
    );
    // Events are dated when the syscall happened, not when the batch reached faultd: before the exit.
    let exited_at = events
        .iter()
        .find(|e| matches!(e.kind, Some(pb::event::Kind::Exited(_))))
        .map(|e| e.time_unix_ns)
        .expect("an exit event");
    let by_seq = |seq: u64| events.iter().find(|e| e.seq == seq).unwrap().time_unix_ns;
    for (seq, e) in &seen {
        let t = by_seq(*seq);
        assert!(
            t > 0 && t <= exited_at + 5_000_000,
            "{e:#?} at {t}, exit at {exited_at}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_without_trace_all_attaches_nothing() {
    if !root_or_skip("a_session_without_trace_all_attaches_nothing") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let s = Scratch::new();
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let go = s.path("go");
    let victim = victim();
    let session = create(
        &mut client,
        vec![service(
            "victim",
            &[victim.as_str(), "wait", go.as_str()],
            &["write"],
        )],
    )
    .await
    .session_id;
    let ours = ours(daemon.child.id());
    assert!(ours.programs.is_empty(), "{ours:?}");
    std::fs::write(&go, "").unwrap();
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn programs_and_links_are_gone_after_the_session() {
    if !root_or_skip("programs_and_links_are_gone_after_the_session") {
        return;
    }
    if !bpftool_or_skip("programs_and_links_are_gone_after_the_session") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let s = Scratch::new();
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let traced = start_traced(&mut client, &s, vec![], &["write", &s.path("a.log"), "x"]).await;
    let during = ours(daemon.child.id());
    let mut names: Vec<_> = during.programs.iter().map(|(_, n)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["fd_trace_enter", "fd_trace_exit"], "{during:?}");
    assert_eq!(during.links.len(), 2, "{during:?}");
    std::fs::write(s.path("go"), "").unwrap();
    finish(&mut client, traced).await;
    // The kernel frees a program after an RCU grace period once its last fd and link are gone.
    let mut after = ours(daemon.child.id());
    for _ in 0..50 {
        if after.programs.is_empty() && after.links.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = ours(daemon.child.id());
    }
    assert!(
        after.programs.is_empty() && after.links.is_empty(),
        "still loaded after the session: {after:?}"
    );
    let ids: Vec<u64> = during.programs.iter().map(|(id, _)| *id).collect();
    let progs = bpftool(&["prog", "show"]);
    let links = bpftool(&["link", "show"]);
    assert!(
        !progs
            .iter()
            .any(|p| p["id"].as_u64().is_some_and(|id| ids.contains(&id))),
        "{progs:#?}"
    );
    assert!(
        !links
            .iter()
            .any(|l| l["prog_id"].as_u64().is_some_and(|id| ids.contains(&id))),
        "{links:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_programs_stay_attached_while_another_session_traces() {
    if !root_or_skip("the_programs_stay_attached_while_another_session_traces") {
        return;
    }
    if !bpftool_or_skip("the_programs_stay_attached_while_another_session_traces") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (s1, s2) = (Scratch::new(), Scratch::new());
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let first = start_traced(&mut client, &s1, vec![], &["write", &s1.path("a.log"), "x"]).await;
    let second = start_traced(
        &mut client,
        &s2,
        vec![],
        &["write", &s2.path("b.log"), "yy"],
    )
    .await;
    assert_eq!(ours(daemon.child.id()).programs.len(), 2);
    std::fs::write(s1.path("go"), "").unwrap();
    finish(&mut client, first).await;
    let still = ours(daemon.child.id());
    assert_eq!(
        (still.programs.len(), still.links.len()),
        (2, 2),
        "detached while a session still traces: {still:?}"
    );
    std::fs::write(s2.path("go"), "").unwrap();
    let pid = second.pid;
    let events = finish(&mut client, second).await;
    assert!(
        syscalls(&events)
            .iter()
            .any(|(_, _, e)| e.pid == pid && e.syscall == "write" && e.retval == 2),
        "the second session lost its trace"
    );
    let mut after = ours(daemon.child.id());
    for _ in 0..50 {
        if after.programs.is_empty() && after.links.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = ours(daemon.child.id());
    }
    assert!(
        after.programs.is_empty() && after.links.is_empty(),
        "{after:?}"
    );
}

/// faultd's BPF programs (id, name) and links (id) that `daemon` holds, per bpftool. Programs are
/// recognised by their `fd_` names; when bpftool reports holders, only the daemon's count.
#[derive(Debug)]
struct Ours {
    programs: Vec<(u64, String)>,
    links: Vec<u64>,
}

fn ours(daemon: u32) -> Ours {
    let held = |v: &serde_json::Value| match v["pids"].as_array() {
        Some(pids) => pids
            .iter()
            .any(|p| p["pid"].as_u64() == Some(daemon.into())),
        None => true,
    };
    let programs: Vec<(u64, String)> = bpftool(&["prog", "show"])
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("fd_trace_"))
                && held(p)
        })
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_owned())))
        .collect();
    let links = bpftool(&["link", "show"])
        .iter()
        .filter(|l| {
            l["prog_id"]
                .as_u64()
                .is_some_and(|id| programs.iter().any(|(p, _)| *p == id))
        })
        .filter_map(|l| l["id"].as_u64())
        .collect();
    Ours { programs, links }
}

fn bpftool(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new("bpftool")
        .args(args)
        .arg("--json")
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool {args:?} failed: {out:?}");
    match serde_json::from_slice(&out.stdout).expect("bpftool --json output") {
        serde_json::Value::Array(items) => items,
        other => panic!("bpftool {args:?}: not a list: {other}"),
    }
}
