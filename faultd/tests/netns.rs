//! Network isolation of sessions (root only): a namespace per session, so the same port serves in
//! two sessions and on the host at once; steps and healthchecks run inside it; a partition cuts only
//! its own session; nothing is left once the session ends or faultd is killed. On the host network
//! (`network="host"`), a declared port someone else holds fails the start and a foreign listener
//! does not satisfy a healthcheck.

mod support;

use std::net::TcpListener;
use std::time::Duration;

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use tonic::transport::Channel;

use support::*;

const GONE_WAIT: Duration = Duration::from_secs(20);

/// A loopback listener of the test process on a fresh port: the host's "third party".
fn host_listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn tcp_check(port: u16, timeout_ms: u32) -> Option<pb::Healthcheck> {
    Some(pb::Healthcheck {
        check: Some(pb::healthcheck::Check::Tcp(pb::TcpCheck {
            address: format!("127.0.0.1:{port}"),
        })),
        timeout_ms,
        interval_ms: 20,
    })
}

/// A service that listens on 127.0.0.1:`port` (echoing lines) and declares it.
fn listening(name: &str, port: u16) -> pb::ServiceSpec {
    let addr = format!("127.0.0.1:{port}");
    let mut svc = service(name, &[&victim(), "listen", &addr, "sleep", "30"], &[]);
    svc.interfaces = vec![pb::Interface {
        name: "main".into(),
        protocol: pb::Protocol::Tcp as i32,
        port: port.into(),
        ..Default::default()
    }];
    svc.healthcheck = tcp_check(port, 10_000);
    svc
}

/// Whether the daemon gives sessions a namespace; otherwise skips `test` with the probe's reason.
async fn isolated_or_skip(client: &mut FaultdClient<Channel>, test: &str) -> bool {
    let probe = client
        .probe(pb::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    let network = probe.network.expect("the probe reports network isolation");
    skip::runs_if(network.available, test, || {
        format!("sessions get no network namespace here: {}", network.reason)
    })
}

/// `net:[inode]` of a process.
fn netns_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Every process or thread in namespace `link` (`net:[inode]`), or holding an fd to it.
fn holders_of(link: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for pid in procs.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let is = |p: String| std::fs::read_link(p).is_ok_and(|l| l.to_string_lossy() == link);
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        for task in tasks.into_iter().flatten().filter_map(Result::ok) {
            if is(task.path().join("ns/net").display().to_string()) {
                out.push(format!("{pid} thread {:?}", task.file_name()));
            }
        }
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"));
        for fd in fds.into_iter().flatten().filter_map(Result::ok) {
            if is(fd.path().display().to_string()) {
                out.push(format!("{pid} fd {:?}", fd.file_name()));
            }
        }
    }
    out
}

/// Waits until nothing holds namespace `link`; what still does after [`GONE_WAIT`].
async fn wait_netns_gone(link: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + GONE_WAIT;
    loop {
        let left = holders_of(link);
        if left.is_empty() || tokio::time::Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn tcp_step(
    client: &mut FaultdClient<Channel>,
    session: &str,
    line: &str,
) -> pb::StepResponse {
    client
        .step(pb::StepRequest {
            session_id: session.into(),
            service: "db".into(),
            interface: "main".into(),
            request: Some(pb::step_request::Request::Tcp(pb::TcpRequest {
                line: line.into(),
            })),
            timeout_ms: 5_000,
        })
        .await
        .expect("step")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_sessions_and_the_host_use_one_port_and_nothing_outlives_them() {
    let test = "two_sessions_and_the_host_use_one_port_and_nothing_outlives_them";
    if !root_or_skip(test) {
        return;
    }
    let mut daemon = Daemon::start();
    let mut client = daemon.client().await;
    if !isolated_or_skip(&mut client, test).await {
        return;
    }
    // The host holds the port too: the sessions' services and healthchecks never see it.
    let (_host, port) = host_listener();
    let host_ns = netns_of(std::process::id());
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let created = create(&mut client, vec![listening("db", port)]).await;
        let ns = netns_of(created.services[0].pid);
        assert_ne!(ns, host_ns, "the service is not in the host's namespace");
        sessions.push((created.session_id, ns));
    }
    assert_ne!(sessions[0].1, sessions[1].1, "one namespace per session");
    // Steps run inside: each session's step reaches its own service.
    for (session, _) in &sessions {
        let step = tcp_step(&mut client, session, session).await;
        assert!(step.ok, "{}", step.error);
        assert_eq!(String::from_utf8_lossy(&step.body), *session, "the echo");
    }
    let (first, first_ns) = sessions.remove(0);
    client
        .delete_session(pb::DeleteSessionRequest { session_id: first })
        .await
        .unwrap();
    assert_eq!(wait_netns_gone(&first_ns).await, Vec::<String>::new());
    // kill -9 of faultd: the namespace goes with its services and faultd's thread.
    let (_, second_ns) = sessions.remove(0);
    assert!(!holders_of(&second_ns).is_empty());
    daemon.crash();
    assert_eq!(wait_netns_gone(&second_ns).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_port_another_process_holds_fails_the_start_on_the_host_network() {
    let test = "a_declared_port_another_process_holds_fails_the_start_on_the_host_network";
    if !root_or_skip(test) {
        return;
    }
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let (_theirs, port) = host_listener();
    let mut svc = listening("db", port);
    svc.network = "host".into();
    let err = client
        .create_session(pb::CreateSessionRequest {
            name: "test".into(),
            services: vec![svc],
            ..Default::default()
        })
        .await
        .expect_err("the port is taken");
    let me = std::process::id();
    assert!(
        err.message()
            .contains(&format!("port {port} is in use by pid {me} (")),
        "{}",
        err.message()
    );
    // Not launched: no victim of this test listens anywhere.
    assert!(processes_with(&format!("127.0.0.1:{port}")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_listener_does_not_satisfy_a_healthcheck_on_the_host_network() {
    let test = "a_foreign_listener_does_not_satisfy_a_healthcheck_on_the_host_network";
    if !root_or_skip(test) {
        return;
    }
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    // The service never listens; the test does, on the port its healthcheck asks.
    let (_theirs, port) = host_listener();
    let mut svc = service("web", &[&victim(), "sleep", "30"], &[]);
    svc.network = "host".into();
    svc.healthcheck = tcp_check(port, 1_000);
    let err = client
        .create_session(pb::CreateSessionRequest {
            name: "test".into(),
            services: vec![svc],
            ..Default::default()
        })
        .await
        .expect_err("someone else's listener answers");
    let me = std::process::id();
    assert!(
        err.message()
            .contains(&format!("answered by the listener of pid {me} ("))
            && err.message().contains("not a process of web"),
        "{}",
        err.message()
    );
    // Its own listener does.
    let (free, port) = host_listener();
    drop(free);
    let mut own = listening("web", port);
    own.network = "host".into();
    let created = create(&mut client, vec![own]).await;
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: created.session_id,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_in_one_session_leaves_another_sessions_same_port_alone() {
    let test = "a_partition_in_one_session_leaves_another_sessions_same_port_alone";
    let Some((_serial, _daemon, mut client)) = ebpf_cgroup::start(test).await else {
        return;
    };
    if !isolated_or_skip(&mut client, test).await {
        return;
    }
    let (_host, port) = host_listener();
    let db_addr = format!("127.0.0.1:{port}");
    let mut runs = Vec::new();
    for partitioned in [true, false] {
        let go = format!("/tmp/{}", unique("faultd-netns-go"));
        let app = service("app", &[&victim(), "wait", &go, "connect", &db_addr], &[]);
        let created = create(&mut client, vec![listening("db", port), app]).await;
        if partitioned {
            client
                .apply_faults(pb::ApplyFaultsRequest {
                    session_id: created.session_id.clone(),
                    seed: 1,
                    partitions: vec![pb::Partition {
                        from_service: "app".into(),
                        to_service: "db".into(),
                        both_directions: false,
                        label: "split".into(),
                    }],
                    ..Default::default()
                })
                .await
                .expect("apply a partition");
        }
        runs.push((created.session_id, go));
    }
    for (_, go) in &runs {
        std::fs::write(go, "").unwrap();
    }
    let mut results = Vec::new();
    for (session, go) in &runs {
        let events = events_until_exit(&mut client, session, "app", GONE_WAIT).await;
        let _ = std::fs::remove_file(go);
        results.push(
            stdout_lines(&events, "app")
                .into_iter()
                .find(|l| l.starts_with("connect "))
                .unwrap_or_default(),
        );
    }
    assert_eq!(
        results,
        [
            format!("connect {db_addr} err ECONNREFUSED"),
            format!("connect {db_addr} ok")
        ],
        "cut in the partitioned session only"
    );
    // The host's own listener on that port is not cut either.
    std::net::TcpStream::connect(&db_addr).expect("the host's listener still answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_reports_network_isolation() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let probe = client
        .probe(pb::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    let network = probe.network.expect("the probe reports network isolation");
    assert!(network.reason.ends_with('.'), "{}", network.reason);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(
            network.available,
            "root gets namespaces: {}",
            network.reason
        );
    } else {
        assert!(!network.available);
        assert!(
            network.reason.contains("CAP_SYS_ADMIN"),
            "{}",
            network.reason
        );
    }
}
