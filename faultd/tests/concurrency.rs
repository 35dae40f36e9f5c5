//! Many sessions at once from several clients: the faults of one never reach another, and faultd's
//! fds, threads and memory return to their idle values afterwards.

mod support;

use std::time::{Duration, Instant};

use faultd_proto::v1 as pb;
use support::*;

const CLIENTS: usize = 4;
const SESSIONS_PER_CLIENT: usize = 5;

/// (open fds, threads, resident KiB) of a process.
fn footprint(pid: u32) -> (usize, usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (fds, field("Threads:") as usize, field("VmRSS:"))
}

/// One session: a victim that writes one line to its own file once `go` exists. With `faulted`, the
/// session denies writes to EVERY victim's file (a glob over all of them): only its own victim may
/// see it.
async fn one_session(socket: std::path::PathBuf, dir: String, index: usize, faulted: bool) {
    let mut client = faultd_proto::v1::faultd_client::FaultdClient::new(connect(&socket).await);
    let go = format!("{dir}/go-{index}");
    let out = format!("{dir}/victim-{index}.out");
    let victim = victim();
    let svc = service(
        "victim",
        &[&victim, "wait", &go, "write", &out, "x"],
        &["write"],
    );
    let session = create(&mut client, vec![svc]).await.session_id;
    if faulted {
        apply(
            &mut client,
            &session,
            vec![deny(
                "victim",
                &["write"],
                &format!("{dir}/victim-*.out"),
                "EIO",
            )],
        )
        .await;
    }
    std::fs::write(&go, "").unwrap();
    let events = events_until_exit(&mut client, &session, "victim", Duration::from_secs(60)).await;
    let expected = if faulted {
        format!("write {out} err EIO")
    } else {
        format!("write {out} ok")
    };
    let lines = stdout_lines(&events, "victim");
    assert!(
        lines.contains(&expected),
        "session {index} (faulted: {faulted}): {lines:?}"
    );
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_sessions_from_four_clients_stay_isolated_and_leave_nothing() {
    if !root_or_skip("twenty_sessions_from_four_clients_stay_isolated_and_leave_nothing") {
        return;
    }
    let daemon = Daemon::start();
    let pid = daemon.child.id();
    let dir = format!("/tmp/{}", unique("faultd-conc"));
    std::fs::create_dir_all(&dir).unwrap();

    // Warm up once so lazily created state (the tracer probe, pools) counts as idle.
    one_session(daemon.socket.clone(), dir.clone(), 1000, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = footprint(pid);

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (socket, dir) = (daemon.socket.clone(), dir.clone());
        clients.push(tokio::spawn(async move {
            let sessions = (0..SESSIONS_PER_CLIENT).map(|s| {
                let index = c * SESSIONS_PER_CLIENT + s;
                one_session(socket.clone(), dir.clone(), index, index.is_multiple_of(2))
            });
            futures_join_all(sessions).await;
        }));
    }
    for client in clients {
        client.await.expect("a client's sessions");
    }

    // Blocking-pool threads linger up to 10 s after their last job.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = footprint(pid);
    while (now.0 > idle.0 || now.1 > idle.1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        now = footprint(pid);
    }
    assert!(now.0 <= idle.0, "fds: idle {}, after {}", idle.0, now.0);
    assert!(now.1 <= idle.1, "threads: idle {}, after {}", idle.1, now.1);
    assert!(
        now.2 <= idle.2 + 32 * 1024,
        "resident memory grew from {} KiB to {} KiB",
        idle.2,
        now.2
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the futures concurrently on this task.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut pending: Vec<_> = set.into_iter().map(Some).collect();
    std::future::poll_fn(move |cx| {
        let mut all = true;
        for slot in pending.iter_mut() {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    all = false;
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
