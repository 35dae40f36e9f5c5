//! One ordered timeline on a real faultd with `--trace all` (root, ebpf-trace; the connect test also
//! ebpf-cgroup): one event per decided syscall carrying its return value and path, sequence numbers in
//! time order, and a connect refused in the kernel shown once.

mod support;

use std::time::Duration;

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use support::*;
use tonic::transport::Channel;

/// The tests attach host-wide tracepoints; run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the victim with `ops` (after the go file appears) in a traced session with `rules`, and
/// returns every event of the session, read in batches.
async fn traced_run(
    client: &mut FaultdClient<Channel>,
    dir: &str,
    intercept: &[&str],
    rules: Vec<pb::FaultRule>,
    ops: &[&str],
) -> (Vec<pb::Event>, Vec<usize>) {
    let go = format!("{dir}/go");
    let victim = victim();
    let mut argv = vec![victim.as_str(), "wait", go.as_str()];
    argv.extend_from_slice(ops);
    let created = client
        .create_session(pb::CreateSessionRequest {
            name: "timeline".into(),
            services: vec![service("victim", &argv, intercept)],
            lease_ms: 0,
            trace: pb::TraceMode::All as i32,
        })
        .await
        .expect("create a traced session")
        .into_inner();
    let session = created.session_id;
    apply(client, &session, rules).await;
    let mut stream = client
        .watch_event_batches(pb::WatchEventsRequest {
            session_id: session.clone(),
            from_seq: 1,
            follow: true,
        })
        .await
        .expect("watch")
        .into_inner();
    std::fs::write(&go, "").unwrap();
    let mut events = Vec::new();
    let mut sizes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    'wait: while let Ok(Ok(Some(batch))) = tokio::time::timeout_at(deadline, stream.message()).await
    {
        sizes.push(batch.events.len());
        for e in batch.events {
            let exited = matches!(e.kind, Some(pb::event::Kind::Exited(_)));
            events.push(e);
            if exited {
                break 'wait;
            }
        }
    }
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .expect("delete session");
    while let Ok(Ok(Some(batch))) =
        tokio::time::timeout(Duration::from_secs(10), stream.message()).await
    {
        sizes.push(batch.events.len());
        events.extend(batch.events);
    }
    (events, sizes)
}

fn scratch(test: &str) -> String {
    let dir = format!("/tmp/{}", unique(test));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A syscall that blocked longer than the reorder window reaches faultd after it: it is numbered on
/// arrival (documented in faultd's `trace::timeline`).
fn beyond_window(e: &pb::Event) -> bool {
    matches!(&e.kind, Some(pb::event::Kind::Syscall(s)) if s.latency_ns >= 200_000_000)
}

/// Sequence numbers from 1 without gaps, and never earlier in time than the event before.
fn assert_time_ordered(events: &[pb::Event]) {
    for (i, pair) in events.windows(2).enumerate() {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "gap after event {i}");
        if beyond_window(&pair[0]) || beyond_window(&pair[1]) {
            continue;
        }
        assert!(
            pair[1].time_ns >= pair[0].time_ns,
            "#{} at {} ns comes after #{} at {} ns:\n{:#?}",
            pair[1].seq,
            pair[1].time_ns,
            pair[0].seq,
            pair[0].time_ns,
            pair
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_write_is_one_event_with_its_return_value_and_path_in_time_order() {
    const TEST: &str = "a_denied_write_is_one_event_with_its_return_value_and_path_in_time_order";
    if !root_or_skip(TEST) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    if available_backend(&mut client, "ebpf-trace", TEST)
        .await
        .is_none()
    {
        return;
    }
    let dir = scratch("timeline-write");
    let (wal, log) = (format!("{dir}/a.wal"), format!("{dir}/b.log"));
    let (events, batches) = traced_run(
        &mut client,
        &dir,
        &["write"],
        vec![deny("victim", &["write"], &format!("{dir}/*.wal"), "EIO")],
        &["write", &wal, "x", "write", &log, "yz"],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(events.first().map(|e| e.seq), Some(1));
    assert_time_ordered(&events);
    assert!(
        batches.iter().any(|n| *n > 1),
        "events come several per message: {batches:?}"
    );

    let calls = syscalls(&events);
    let on = |path: &str| -> Vec<&pb::SyscallEvent> {
        calls
            .iter()
            .filter(|(_, _, e)| e.syscall == "write" && e.path == path)
            .map(|(_, _, e)| e)
            .collect()
    };
    // The denied write: seccomp's decision and the tracer's return value in one event.
    let denied = on(&wal);
    assert_eq!(denied.len(), 1, "{denied:#?}");
    let w = denied[0];
    assert_eq!(w.decision, pb::Decision::Deny as i32);
    assert_eq!(
        (w.backend.as_str(), w.errno_name.as_str()),
        ("seccomp", "EIO")
    );
    assert!(w.has_retval && w.retval == -5, "{w:#?}");
    assert!(w.latency_ns > 0, "{w:#?}");
    // The allowed write: one event with the 2 bytes it wrote.
    let allowed = on(&log);
    assert_eq!(allowed.len(), 1, "{allowed:#?}");
    assert!(
        allowed[0].has_retval && allowed[0].retval == 2,
        "{allowed:#?}"
    );
    // Only observed calls come from the tracer: every write was decided by seccomp.
    assert!(
        calls
            .iter()
            .all(|(_, _, e)| e.syscall != "write" || e.backend == "seccomp" || e.path.is_empty()),
        "{calls:#?}"
    );
    // An observed fd syscall carries its fd's path: the close after each write.
    for path in [&wal, &log] {
        assert!(
            calls.iter().any(|(_, _, e)| e.syscall == "close"
                && &e.path == path
                && e.backend == "ebpf-trace"
                && e.has_retval),
            "no close of {path} in {calls:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_refused_in_the_kernel_is_one_event() {
    const TEST: &str = "a_connect_refused_in_the_kernel_is_one_event";
    if !root_or_skip(TEST) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    for backend in ["ebpf-trace", "ebpf-cgroup"] {
        if available_backend(&mut client, backend, TEST)
            .await
            .is_none()
        {
            return;
        }
    }
    // A socket bound but never listening: nothing could accept the connect anyway.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = format!("127.0.0.1:{}", socket.local_addr().unwrap().port());
    let dir = scratch("timeline-connect");
    let mut rule = deny("victim", &["connect"], "", "ECONNREFUSED");
    rule.destination = addr.clone();
    // connect is in the seccomp filter too, as when a spec also has seccomp rules on it.
    let (events, _) = traced_run(
        &mut client,
        &dir,
        &["connect", "write"],
        vec![rule],
        &["connect", &addr],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_time_ordered(&events);
    let connects: Vec<pb::SyscallEvent> = syscalls(&events)
        .into_iter()
        .map(|(_, _, e)| e)
        .filter(|e| e.syscall == "connect")
        .collect();
    assert_eq!(connects.len(), 1, "{connects:#?}");
    let c = &connects[0];
    assert_eq!(c.decision, pb::Decision::Deny as i32, "{c:#?}");
    assert_eq!(c.backend, "ebpf-cgroup");
    assert_eq!(c.path, addr);
    assert!(
        c.has_retval && c.retval == -i64::from(libc::ECONNREFUSED),
        "{c:#?}"
    );
}
