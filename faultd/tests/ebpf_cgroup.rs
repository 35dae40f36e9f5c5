//! Connect faults and partitions enforced in the kernel by the ebpf-cgroup backend (root only).

mod support;

use std::net::TcpListener;
use std::time::Duration;

use faultd_proto::v1 as pb;
use support::ebpf_cgroup::*;
use support::*;

const EXIT_WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn connect_faults_fail_in_kernel_with_the_chosen_errno_and_count_hits() {
    let test = "connect_faults_fail_in_kernel_with_the_chosen_errno_and_count_hits";
    let Some((_serial, _daemon, mut client)) = start(test).await else {
        return;
    };
    let ((_refused, rp), (_timed_out, tp), (_open, op)) = (listener(), listener(), listener());
    let go = format!("/tmp/{}", unique("faultd-ebpf-go"));
    let victim = victim();
    let (a, b, c) = (
        format!("127.0.0.1:{rp}"),
        format!("127.0.0.1:{tp}"),
        format!("127.0.0.1:{op}"),
    );
    // No intercepted syscalls: the victim runs without a seccomp filter at all.
    let svc = service(
        "victim",
        &[
            &victim, "wait", &go, "connect", &a, "connect", &b, "connect", &c,
        ],
        &[],
    );
    // The listeners are the test's, on the host: the service shares the host's network to reach them.
    let mut svc = svc;
    svc.network = "host".into();
    let created = create(&mut client, vec![svc]).await;
    let session = created.session_id;
    let applied = apply(
        &mut client,
        &session,
        vec![
            connect_rule("victim", &format!(":{rp}"), "ECONNREFUSED"),
            connect_rule("victim", &b, "ETIMEDOUT"),
        ],
    )
    .await;
    assert_eq!(applied.rules.len(), 2);
    for rule in &applied.rules {
        assert_eq!(rule.backend, "ebpf-cgroup", "{rule:?}");
    }
    let attached = attached_programs(&created.services[0].cgroup);
    let mut names: Vec<&str> = attached.iter().map(|(_, n)| n.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["fd_connect4", "fd_connect6"],
        "attached to the service's cgroup while the rules are"
    );
    std::fs::write(&go, "").unwrap();
    let events = events_until_exit(&mut client, &session, "victim", EXIT_WAIT).await;
    let _ = std::fs::remove_file(&go);
    let lines = stdout_lines(&events, "victim");
    assert_eq!(
        line_for(&lines, &format!("connect {a}")),
        format!("connect {a} err ECONNREFUSED")
    );
    assert_eq!(
        line_for(&lines, &format!("connect {b}")),
        format!("connect {b} err ETIMEDOUT")
    );
    assert_eq!(
        line_for(&lines, &format!("connect {c}")),
        format!("connect {c} ok")
    );
    // Each in-kernel denial is reported as a syscall event of the backend, after the fact: the
    // reader polls the ring buffer every 50 ms.
    let mut denied: Vec<(String, String, String)> = Vec::new();
    for _ in 0..40 {
        let events = trace_so_far(&mut client, &session).await;
        denied = syscalls(&events)
            .into_iter()
            .filter(|(_, _, s)| s.decision == pb::Decision::Deny as i32)
            .map(|(_, _, s)| (s.path, s.errno_name, s.backend))
            .collect();
        if denied.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    denied.sort();
    let mut expected = vec![
        (
            a.clone(),
            "ECONNREFUSED".to_string(),
            "ebpf-cgroup".to_string(),
        ),
        (
            b.clone(),
            "ETIMEDOUT".to_string(),
            "ebpf-cgroup".to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(denied, expected);
    let summary = client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.rules.len(), 2);
    for rule in &summary.rules {
        assert_eq!(rule.backend, "ebpf-cgroup", "{rule:?}");
        assert_eq!(rule.hits, 1, "{rule:?}");
    }
    assert!(summary.never_fired.is_empty());
    let loaded = connect_programs();
    let left: Vec<_> = attached
        .iter()
        .filter(|(id, _)| loaded.contains(id))
        .collect();
    assert!(
        left.is_empty(),
        "bpftool prog show still lists {left:?} after DeleteSession"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_backends_are_honoured_or_refused_with_a_reason() {
    let test = "forced_backends_are_honoured_or_refused_with_a_reason";
    let Some((_serial, _daemon, mut client)) = start(test).await else {
        return;
    };
    let svc = service("victim", &[&victim(), "sleep", "30"], &["connect"]);
    let session = create(&mut client, vec![svc]).await.session_id;
    let mut seccomp = connect_rule("victim", ":1", "ECONNREFUSED");
    seccomp.backend = "seccomp".into();
    let applied = apply(&mut client, &session, vec![seccomp]).await;
    assert_eq!(applied.rules[0].backend, "seccomp");

    let mut delay = pb::FaultRule {
        service: "victim".into(),
        syscalls: vec!["connect".into()],
        action: Some(pb::fault_rule::Action::Delay(pb::Delay {
            duration_us: 1000,
        })),
        backend: "ebpf-cgroup".into(),
        ..Default::default()
    };
    let err = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules: vec![delay.clone()],
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("cannot delay"), "{}", err.message());
    delay.backend = "ebpf-magic".into();
    let err = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules: vec![delay],
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("unknown backend"),
        "{}",
        err.message()
    );
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_and_ipv4_mapped_connects_are_matched_by_connect6() {
    let test = "ipv6_and_ipv4_mapped_connects_are_matched_by_connect6";
    let Ok(v6) = TcpListener::bind("[::1]:0") else {
        cannot_run(test, "no IPv6 loopback here");
        return;
    };
    let Some((_serial, _daemon, mut client)) = start(test).await else {
        return;
    };
    let p6 = v6.local_addr().unwrap().port();
    // A dual-stack listener, reached through an IPv4-mapped IPv6 address: an IPv4 rule applies.
    let dual = std::net::TcpListener::bind("[::]:0").unwrap();
    let pm = dual.local_addr().unwrap().port();
    let go = format!("/tmp/{}", unique("faultd-ebpf-go"));
    let (a, m) = (format!("[::1]:{p6}"), format!("[::ffff:127.0.0.1]:{pm}"));
    let svc = service(
        "victim",
        &[&victim(), "wait", &go, "connect", &a, "connect", &m],
        &[],
    );
    // The listeners are the test's, on the host: the service shares the host's network to reach them.
    let mut svc = svc;
    svc.network = "host".into();
    let session = create(&mut client, vec![svc]).await.session_id;
    apply(
        &mut client,
        &session,
        vec![
            connect_rule("victim", &a, "ECONNREFUSED"),
            connect_rule("victim", &format!("127.0.0.1:{pm}"), "ETIMEDOUT"),
        ],
    )
    .await;
    std::fs::write(&go, "").unwrap();
    let events = events_until_exit(&mut client, &session, "victim", EXIT_WAIT).await;
    let _ = std::fs::remove_file(&go);
    let lines = stdout_lines(&events, "victim");
    assert_eq!(
        line_for(&lines, &format!("connect {a}")),
        format!("connect {a} err ECONNREFUSED")
    );
    assert_eq!(
        line_for(&lines, &format!("connect {m}")),
        format!("connect {m} err ETIMEDOUT")
    );
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
}
