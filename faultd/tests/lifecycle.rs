//! Supervision and teardown through a real faultd daemon: nothing outlives its session (root only).

mod support;

use std::time::Duration;

use faultd_proto::v1 as pb;
use support::*;

const GONE_WAIT: Duration = Duration::from_secs(10);

/// A shell service whose grandchild leaves the process group and session (`setsid`), so only the
/// cgroup still holds it. Both sleeps carry `token` in their command line.
fn escaping_service(token: &str) -> pb::ServiceSpec {
    let script = format!("(setsid sleep {token}1 &); exec sleep {token}2");
    service("escaper", &["sh", "-c", &script], &[])
}

fn token() -> String {
    // A sleep duration no other process on the host uses: 9000.<pid><n>.
    format!(
        "9000.{}{}",
        std::process::id(),
        unique("").rsplit('-').next().unwrap()
    )
}

/// A faultd running one session whose service left a grandchild in a new session (`setsid`); both
/// carry the returned token.
async fn daemon_with_an_escaper() -> (Daemon, String) {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let token = token();
    create(&mut client, vec![escaping_service(&token)]).await;
    wait_started(&token).await;
    (daemon, token)
}

async fn wait_started(token: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while processes_with(token).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the service's processes did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_process_remains_after_delete_even_when_the_parent_was_killed() {
    if !root_or_skip("no_process_remains_after_delete_even_when_the_parent_was_killed") {
        return;
    }
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let token = token();
    let created = create(&mut client, vec![escaping_service(&token)]).await;
    assert!(
        !created.services[0].cgroup.is_empty(),
        "the service has a cgroup: {created:?}"
    );
    wait_started(&token).await;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(created.services[0].pid as i32, libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        processes_with(&token).len(),
        1,
        "the escaped grandchild still runs"
    );
    let summary = client
        .delete_session(pb::DeleteSessionRequest {
            session_id: created.session_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wait_gone(&token, GONE_WAIT).await, Vec::<u32>::new());
    let exit = summary.services[0].exit.expect("an exit status");
    assert_eq!(exit.signal, libc::SIGKILL, "{exit:?}");
    assert!(
        !std::path::Path::new(&created.services[0].cgroup).exists(),
        "the cgroup is removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_client_connection_tears_its_session_down() {
    if !root_or_skip("a_dropped_client_connection_tears_its_session_down") {
        return;
    }
    let daemon = Daemon::start();
    let token = token();
    {
        let mut client = daemon.client().await;
        let session = client
            .create_session(pb::CreateSessionRequest {
                name: "dropped".into(),
                services: vec![escaping_service(&token)],
                lease_ms: 300,
                trace: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .session_id;
        let _stream = client
            .watch_events(pb::WatchEventsRequest {
                session_id: session,
                from_seq: 1,
                follow: true,
            })
            .await
            .unwrap();
        wait_started(&token).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            processes_with(&token).len(),
            2,
            "an open stream holds the lease past its time"
        );
    }
    assert_eq!(wait_gone(&token, GONE_WAIT).await, Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_every_session_before_faultd_exits() {
    if !root_or_skip("sigterm_stops_every_session_before_faultd_exits") {
        return;
    }
    let (mut daemon, token) = daemon_with_an_escaper().await;
    daemon.terminate();
    assert_eq!(
        processes_with(&token),
        Vec::<u32>::new(),
        "gone by the time faultd exited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_faultd_takes_every_service_with_it_at_once() {
    if !root_or_skip("a_killed_faultd_takes_every_service_with_it_at_once") {
        return;
    }
    let (mut daemon, token) = daemon_with_an_escaper().await;
    let watchdogs = named_watchdogs_of(daemon.child.id()).await;
    assert_eq!(watchdogs.len(), 1, "one watchdog per engine");
    daemon.crash();
    // No restart: the watchdog killed the escaped grandchild through cgroup.kill.
    assert_eq!(wait_gone(&token, GONE_WAIT).await, Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_faultd_kills_what_a_crashed_one_left() {
    if !root_or_skip("a_restarted_faultd_kills_what_a_crashed_one_left") {
        return;
    }
    let (mut daemon, token) = daemon_with_an_escaper().await;
    // Without its watchdog (killed first), a crashed faultd leaves the escaped grandchild behind.
    for pid in named_watchdogs_of(daemon.child.id()).await {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    daemon.crash();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        processes_with(&token).len(),
        1,
        "the main process died with faultd (parent-death signal); the escaped grandchild did not"
    );
    let _next = Daemon::start();
    assert_eq!(wait_gone(&token, GONE_WAIT).await, Vec::<u32>::new());
}

/// [`watchdogs_of`], once there is one: the watchdog names itself right after the fork, which can
/// come late on a loaded machine (gives up after 5 s).
async fn named_watchdogs_of(parent: u32) -> Vec<u32> {
    let mut watchdogs = watchdogs_of(parent);
    for _ in 0..100 {
        if !watchdogs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        watchdogs = watchdogs_of(parent);
    }
    watchdogs
}

/// The watchdog processes `faultd` forked (named `faultd-watchdog`).
fn watchdogs_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').map_or(0, |i| i + 1)..close];
        let ppid = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if comm == "faultd-watchdog" && ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_exits_before_ready_fails_the_start_with_status_and_stderr() {
    if !root_or_skip("a_service_that_exits_before_ready_fails_the_start_with_status_and_stderr") {
        return;
    }
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut svc = service(
        "broken",
        &["sh", "-c", "echo 'cannot open config' >&2; exit 3"],
        &[],
    );
    svc.healthcheck = Some(pb::Healthcheck {
        check: Some(pb::healthcheck::Check::Tcp(pb::TcpCheck {
            address: "127.0.0.1:1".into(),
        })),
        timeout_ms: 10_000,
        interval_ms: 50,
    });
    let err = client
        .create_session(pb::CreateSessionRequest {
            name: "broken".into(),
            services: vec![svc],
            lease_ms: 0,
            trace: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let message = err.message();
    assert!(
        message.contains("exited before it was ready (exit status 3)"),
        "{message}"
    );
    assert!(message.contains("cannot open config"), "{message}");
}

/// An HTTP server on 127.0.0.1:`argv[1]` answering every GET and POST with 201, `X-Test: yes` and
/// `{"qty":7}`.
const HTTP_201: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"qty":7}'
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Test", "yes")
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn services_start_in_dependency_order_and_steps_are_traced() {
    if !root_or_skip("services_start_in_dependency_order_and_steps_are_traced") {
        return;
    }
    // A real HTTP server (Python's) is the service: it listens in the session's network.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let port_arg = port.to_string();
    let mut web = service("web", &["python3", "-c", HTTP_201, &port_arg], &[]);
    web.depends_on = vec!["db".into()];
    web.interfaces = vec![pb::Interface {
        name: "public".into(),
        protocol: pb::Protocol::Http as i32,
        host: String::new(),
        port: port.into(),
        ..Default::default()
    }];
    web.healthcheck = Some(pb::Healthcheck {
        check: Some(pb::healthcheck::Check::Http(pb::HttpCheck {
            url: format!("127.0.0.1:{port}/health"),
        })),
        timeout_ms: 5_000,
        interval_ms: 20,
    });
    let db = service("db", &["sleep", "30"], &[]);
    let created = create(&mut client, vec![web, db]).await;
    let names: Vec<_> = created.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["db", "web"], "started in depends_on order");

    let step = |interface: &str, port_override: Option<u16>| pb::StepRequest {
        session_id: created.session_id.clone(),
        service: "web".into(),
        interface: interface.into(),
        request: Some(pb::step_request::Request::Http(pb::HttpRequest {
            method: "POST".into(),
            path: "/orders".into(),
            body: b"{}".to_vec(),
            ..Default::default()
        })),
        timeout_ms: port_override.map_or(0, |_| 2000),
    };
    let answer = client
        .step(step("public", None))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.ok, "{answer:?}");
    assert_eq!(answer.status, 201);
    assert_eq!(answer.body, b"{\"qty\":7}");
    assert_eq!(
        answer.headers.get("x-test").map(String::as_str),
        Some("yes")
    );

    let events = client
        .watch_events(pb::WatchEventsRequest {
            session_id: created.session_id.clone(),
            from_seq: 1,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let events: Vec<pb::Event> = tokio_stream_collect(events).await;
    let sent = events.iter().find_map(|e| match &e.kind {
        Some(pb::event::Kind::StepSent(s)) => Some(s.summary.clone()),
        _ => None,
    });
    assert_eq!(sent.as_deref(), Some("POST /orders"));
    assert!(events.iter().any(|e| matches!(&e.kind,
        Some(pb::event::Kind::StepAnswered(a)) if a.status == 201)));

    let err = client.step(step("nope", None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: created.session_id,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn transport_failures_of_a_step_come_back_as_data() {
    if !root_or_skip("transport_failures_of_a_step_come_back_as_data") {
        return;
    }
    // Bound, never listening: connects are refused and no other process can take the port.
    let (_refusing, port) = refusing_port();
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut svc = service("down", &["sleep", "30"], &[]);
    svc.interfaces = vec![pb::Interface {
        name: "main".into(),
        protocol: pb::Protocol::Tcp as i32,
        host: String::new(),
        port: port.into(),
        ..Default::default()
    }];
    let session = create(&mut client, vec![svc]).await.session_id;
    let answer = client
        .step(pb::StepRequest {
            session_id: session.clone(),
            service: "down".into(),
            interface: String::new(),
            request: Some(pb::step_request::Request::Tcp(pb::TcpRequest {
                line: "PING".into(),
            })),
            timeout_ms: 2000,
        })
        .await
        .expect("a transport failure is not an RPC error")
        .into_inner();
    assert!(!answer.ok);
    assert_eq!(answer.status, 0);
    assert!(answer.error.contains("refused"), "{}", answer.error);
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_reports_seccomp_and_why_ebpf_override_is_missing() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let probe = client
        .probe(pb::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    let backend = |name: &str| {
        probe
            .backends
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no {name} in {probe:?}"))
            .clone()
    };
    assert!(backend("seccomp").available, "{probe:?}");
    // Each action of each backend, available or with its reason.
    let details: Vec<(String, bool)> = backend("seccomp")
        .action_details
        .iter()
        .map(|a| (a.action.clone(), a.available))
        .collect();
    let expected: Vec<(String, bool)> = [
        "deny",
        "delay",
        "allow",
        "crash",
        "short",
        "lie",
        "volatile",
        "power_loss",
    ]
    .iter()
    .map(|a| (a.to_string(), true))
    .collect();
    assert_eq!(details, expected);
    let override_deny = &backend("ebpf-override").action_details[0];
    assert!(
        override_deny.action == "deny"
            && !override_deny.available
            && !override_deny.reason.is_empty(),
        "{override_deny:?}"
    );
    let override_ = backend("ebpf-override");
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        assert!(!override_.available);
        assert!(
            override_.reason.contains("CONFIG_KPROBES"),
            "{}",
            override_.reason
        );
    }
    assert!(!probe.kernel_release.is_empty());
}

async fn tokio_stream_collect(mut stream: tonic::Streaming<pb::Event>) -> Vec<pb::Event> {
    let mut out = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        out.push(event);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_follow_stream_and_a_delay_in_flight_exits_promptly() {
    if !root_or_skip("sigterm_with_a_follow_stream_and_a_delay_in_flight_exits_promptly") {
        return;
    }
    let mut daemon = Daemon::start();
    let mut client = daemon.client().await;
    let token = token();
    let dir = format!("/tmp/{}", unique("faultd-term"));
    std::fs::create_dir_all(&dir).unwrap();
    let (go, out) = (format!("{dir}/go"), format!("{dir}/{token}.out"));
    let victim = victim();
    let svc = service(
        "victim",
        &[&victim, "wait", &go, "write", &out, "x"],
        &["write"],
    );
    let session = create(&mut client, vec![svc]).await.session_id;
    let mut delay = deny("victim", &["write"], &format!("{dir}/*.out"), "EIO");
    delay.action = Some(pb::fault_rule::Action::Delay(pb::Delay {
        duration_us: 60_000_000,
    }));
    apply(&mut client, &session, vec![delay]).await;
    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            session_id: session.clone(),
            from_seq: 1,
            follow: true,
        })
        .await
        .expect("follow")
        .into_inner();
    std::fs::write(&go, "").unwrap();
    // Wait for the delayed write's decision: the delay is now in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("the delayed write in time")
            .expect("stream")
            .expect("an event");
        if let Some(pb::event::Kind::Syscall(s)) = &event.kind
            && s.decision == pb::Decision::Delay as i32
        {
            break;
        }
    }
    let started = std::time::Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || {
        let status = daemon.child.wait();
        (daemon, status)
    })
    .await
    .unwrap()
    .1
    .expect("faultd exits");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "faultd took {:?} to stop with a follow stream open and a 60 s delay in flight",
        started.elapsed()
    );
    // The follow stream ended instead of hanging.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
    assert!(end.is_ok(), "the follow stream was not closed");
    assert_eq!(processes_with(&token), Vec::<u32>::new());
    let _ = std::fs::remove_dir_all(&dir);
}
