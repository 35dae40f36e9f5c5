//! A service faultd did not launch, attached by its cgroup v2 directory (root only): connect faults
//! through ebpf-cgroup, seccomp-only rules refused, and the process and directory left alone at the end.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use faultd_proto::v1 as pb;
use support::outside::{next_line, spawn_in_cgroup};
use support::*;

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread")]
async fn attached_service_gets_connect_faults_and_outlives_its_session() {
    let test = "attached_service_gets_connect_faults_and_outlives_its_session";
    if !root_or_skip(test) {
        return;
    }
    let Some(root) = cgroup_v2_root_or_skip(test) else {
        return;
    };
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    if available_backend(&mut client, "ebpf-cgroup", test)
        .await
        .is_none()
    {
        return;
    }

    let refused = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let (rp, op) = (
        refused.local_addr().unwrap().port(),
        open.local_addr().unwrap().port(),
    );
    let (a, b) = (format!("127.0.0.1:{rp}"), format!("127.0.0.1:{op}"));
    let go = format!("/tmp/{}", unique("faultd-attach-go"));
    let victim = victim();
    let (mut outside, lines) = spawn_in_cgroup(
        &root,
        &[
            &victim, "wait", &go, "connect", &a, "connect", &b, "sleep", "60",
        ],
    );
    let pid = outside.child.id();
    let dir = outside.dir.display().to_string();

    // argv and attach_cgroup together are refused.
    let mut both = service("db", &[&victim], &[]);
    both.attach_cgroup = dir.clone();
    let err = client
        .create_session(pb::CreateSessionRequest {
            name: "attach".into(),
            services: vec![both],
            ..Default::default()
        })
        .await
        .expect_err("argv with attach_cgroup");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    let attached = pb::ServiceSpec {
        name: "db".into(),
        attach_cgroup: dir.clone(),
        ..Default::default()
    };
    let created = create(&mut client, vec![attached]).await;
    let session = created.session_id.clone();
    assert_eq!(created.services.len(), 1);
    assert_eq!(created.services[0].pid, 0);
    assert_eq!(
        Path::new(&created.services[0].cgroup),
        std::fs::canonicalize(&outside.dir).unwrap()
    );
    assert!(created.services[0].intercepted.is_empty());

    let mut rule = deny("db", &["connect"], "", "ECONNREFUSED");
    rule.destination = format!(":{rp}");
    let applied = apply(&mut client, &session, vec![rule]).await;
    assert_eq!(applied.rules[0].backend, "ebpf-cgroup");

    // A rule only seccomp could enforce is refused, saying why.
    let err = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules: vec![deny("db", &["write"], "", "EIO")],
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .expect_err("a write rule on an attached service");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(
        err.message().contains(
            "service db is attached by cgroup, and the seccomp backend needs faultd to launch the \
             service"
        ) && err.message().contains("this rule also covers write"),
        "{err}"
    );

    std::fs::write(&go, "").unwrap();
    assert_eq!(next_line(&lines), format!("wait {go} ok"));
    assert_eq!(next_line(&lines), format!("connect {a} err ECONNREFUSED"));
    assert_eq!(next_line(&lines), format!("connect {b} ok"));

    let summary = client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .expect("delete session")
        .into_inner();
    let hits: u64 = summary.rules.iter().map(|r| r.hits).sum();
    assert_eq!(hits, 1, "{:#?}", summary.rules);
    assert!(
        summary.services[0].exit.is_none(),
        "{:#?}",
        summary.services
    );

    // faultd left the victim and its directory alone.
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(pid), "faultd stopped a service it only attached to");
    assert!(
        matches!(outside.child.try_wait(), Ok(None)),
        "the victim exited"
    );
    assert!(outside.dir.is_dir(), "faultd removed the attached cgroup");
    let _ = std::fs::remove_file(&go);
    drop(outside);
}

#[tokio::test(flavor = "multi_thread")]
async fn attaching_a_missing_or_non_cgroup_directory_is_a_clear_error() {
    let test = "attaching_a_missing_or_non_cgroup_directory_is_a_clear_error";
    if !root_or_skip(test) {
        return;
    }
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    for (dir, code, text) in [
        (
            "/sys/fs/cgroup/faultd-no-such-dir",
            tonic::Code::FailedPrecondition,
            "cannot attach to cgroup",
        ),
        (
            "/tmp",
            tonic::Code::FailedPrecondition,
            "not a directory of a cgroup v2",
        ),
        (
            "relative/dir",
            tonic::Code::InvalidArgument,
            "not an absolute path",
        ),
    ] {
        let err = client
            .create_session(pb::CreateSessionRequest {
                name: "attach".into(),
                services: vec![pb::ServiceSpec {
                    name: "db".into(),
                    attach_cgroup: dir.into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .expect_err(dir);
        assert_eq!(err.code(), code, "{dir}: {err}");
        assert!(err.message().contains(text), "{dir}: {err}");
    }
}

/// The refusal of a rule on the attached service `db`.
async fn refused(
    client: &mut faultd_proto::v1::faultd_client::FaultdClient<tonic::transport::Channel>,
    session: &str,
    rule: pb::FaultRule,
) -> tonic::Status {
    client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.into(),
            rules: vec![rule],
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .expect_err("a rule only seccomp could enforce on an attached service")
}

#[tokio::test(flavor = "multi_thread")]
async fn attached_service_is_traced_partitioned_and_ordered_by_depends_on() {
    let test = "attached_service_is_traced_partitioned_and_ordered_by_depends_on";
    if !root_or_skip(test) {
        return;
    }
    let Some(root) = cgroup_v2_root_or_skip(test) else {
        return;
    };
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    for backend in ["ebpf-cgroup", "ebpf-trace"] {
        if available_backend(&mut client, backend, test)
            .await
            .is_none()
        {
            return;
        }
    }

    // web's interface port, free now: web listens there itself (the session shares the host's
    // network, as it has an attached service, and a declared port must be the service's own).
    let wp = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // db's healthcheck target.
    let health = TcpListener::bind("127.0.0.1:0").unwrap();
    let hp = health.local_addr().unwrap().port();
    let web_addr = format!("127.0.0.1:{wp}");
    let go = format!("/tmp/{}", unique("faultd-attach-go"));
    let victim = victim();
    let (outside, lines) = spawn_in_cgroup(
        &root,
        &[&victim, "wait", &go, "connect", &web_addr, "sleep", "60"],
    );
    let pid = outside.child.id();
    let dir = outside.dir.display().to_string();

    // No seccomp filter without a launch.
    let err = client
        .create_session(pb::CreateSessionRequest {
            name: "attach".into(),
            services: vec![pb::ServiceSpec {
                name: "db".into(),
                attach_cgroup: dir.clone(),
                intercept_syscalls: vec!["write".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect_err("intercept_syscalls on an attached service");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    let db = pb::ServiceSpec {
        name: "db".into(),
        attach_cgroup: dir.clone(),
        healthcheck: Some(pb::Healthcheck {
            check: Some(pb::healthcheck::Check::Tcp(pb::TcpCheck {
                address: format!("127.0.0.1:{hp}"),
            })),
            timeout_ms: 5000,
            interval_ms: 0,
        }),
        ..Default::default()
    };
    let mut web = service("web", &[&victim, "listen", &web_addr, "sleep", "30"], &[]);
    web.depends_on = vec!["db".into()];
    web.interfaces = vec![pb::Interface {
        name: "main".into(),
        protocol: pb::Protocol::Tcp as i32,
        port: wp.into(),
        ..Default::default()
    }];
    let created = client
        .create_session(pb::CreateSessionRequest {
            name: "attach".into(),
            // web first: depends_on puts db first anyway.
            services: vec![web, db],
            lease_ms: 0,
            trace: pb::TraceMode::All as i32,
        })
        .await
        .expect("create a traced session with an attached service")
        .into_inner();
    let session = created.session_id.clone();
    let names: Vec<_> = created.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["db", "web"]);
    assert_eq!(created.services[0].pid, 0);
    assert!(created.services[1].pid > 0);

    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            session_id: session.clone(),
            from_seq: 1,
            follow: true,
        })
        .await
        .expect("watch")
        .into_inner();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(event)) = stream.message().await {
            if tx.send(event).is_err() {
                return;
            }
        }
    });

    // Rules only seccomp could enforce are refused, each in one sentence saying why.
    let mut delay = deny("db", &["connect"], "", "ECONNREFUSED");
    delay.action = Some(pb::fault_rule::Action::Delay(pb::Delay {
        duration_us: 1000,
    }));
    let mut maybe = deny("db", &["connect"], "", "ECONNREFUSED");
    maybe.probability = Some(0.5);
    let mut crash = deny("db", &["fsync"], "", "EIO");
    crash.action = Some(pb::fault_rule::Action::Crash(pb::Crash {
        signal: "SIGKILL".into(),
    }));
    crash.backend = "seccomp".into();
    let mut forced = deny("db", &["connect"], "", "ECONNREFUSED");
    forced.backend = "seccomp".into();
    for (rule, why) in [
        (delay, "the ebpf-cgroup backend cannot delay a connect"),
        (maybe, "the ebpf-cgroup backend does not draw probabilities"),
        (
            crash,
            "the seccomp backend needs faultd to launch the service",
        ),
        (
            forced,
            "the seccomp backend needs faultd to launch the service",
        ),
    ] {
        let err = refused(&mut client, &session, rule).await;
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
        assert!(
            err.message().contains("service db is attached by cgroup")
                && err.message().contains(why),
            "{err}"
        );
    }

    // A partition from db to web fails db's connects to web's port, in the kernel.
    let applied = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules: vec![],
            seed: 1,
            partitions: vec![pb::Partition {
                from_service: "db".into(),
                to_service: "web".into(),
                both_directions: false,
                label: "split".into(),
            }],
            ..Default::default()
        })
        .await
        .expect("partition")
        .into_inner();
    assert!(applied.rules.iter().all(|r| r.backend == "ebpf-cgroup"));

    std::fs::write(&go, "").unwrap();
    assert_eq!(next_line(&lines), format!("wait {go} ok"));
    assert_eq!(
        next_line(&lines),
        format!("connect {web_addr} err ECONNREFUSED")
    );

    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .expect("delete session");
    let mut events = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        events.push(event);
    }
    let db_syscalls: Vec<_> = syscalls(&events)
        .into_iter()
        .filter(|(_, service, s)| service == "db" && s.pid == pid)
        .collect();
    // One event for the connect: ebpf-cgroup's decision, with the return value the tracer saw.
    let connects: Vec<_> = db_syscalls
        .iter()
        .filter(|(_, _, s)| s.syscall == "connect")
        .collect();
    assert_eq!(connects.len(), 1, "{db_syscalls:#?}");
    let c = &connects[0].2;
    assert_eq!(
        (c.backend.as_str(), c.decision),
        ("ebpf-cgroup", pb::Decision::Deny as i32),
        "{c:#?}"
    );
    assert!(
        c.has_retval && c.retval == -i64::from(libc::ECONNREFUSED),
        "the tracer's return value joined the decision: {c:#?}"
    );

    assert!(alive(pid), "faultd stopped a service it only attached to");
    assert!(outside.dir.is_dir(), "faultd removed the attached cgroup");
    let _ = std::fs::remove_file(&go);
    drop(outside);
    drop(health);
}
