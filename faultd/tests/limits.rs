//! Counts from a request are bounded (RESOURCE_EXHAUSTED with a sentence), and a cancelled
//! CreateSession still ends with nothing left running.

mod support;

use std::time::Duration;

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use support::{
    create, deny, events_until_exit, root_or_skip, service, stdout_lines, unique, wait_gone,
};

async fn client(limits: faultd::Limits) -> FaultdClient<tonic::transport::Channel> {
    FaultdClient::new(
        faultd::embedded::channel_with_limits(limits)
            .await
            .expect("embedded engine"),
    )
}

fn request(services: Vec<pb::ServiceSpec>, lease_ms: u32) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        name: "limits".into(),
        services,
        lease_ms,
        trace: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn services_sessions_and_rules_are_bounded() {
    if !root_or_skip("services_sessions_and_rules_are_bounded") {
        return;
    }
    let limits = faultd::Limits {
        max_sessions: 2,
        max_sessions_per_owner: 1,
        max_lease: Duration::from_secs(60),
        max_services: 2,
        max_rules: 2,
        ..faultd::Limits::default()
    };
    let mut client = client(limits).await;
    let sleeper = |name: &str| service(name, &["sleep", "30"], &["write"]);

    let err = client
        .create_session(request(vec![sleeper("a"), sleeper("b"), sleeper("c")], 0))
        .await
        .expect_err("three services over a limit of two");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("at most 2 services"), "{err}");

    let err = client
        .create_session(request(vec![sleeper("a")], 3_600_000))
        .await
        .expect_err("a lease over the limit");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains("longer than this faultd allows"),
        "{err}"
    );

    let session = client
        .create_session(request(vec![sleeper("a")], 0))
        .await
        .expect("one service")
        .into_inner()
        .session_id;
    let err = client
        .create_session(request(vec![sleeper("a")], 0))
        .await
        .expect_err("a second session of one owner over a limit of one");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("you already run 1 sessions"),
        "{err}"
    );

    let rules = vec![
        deny("a", &["write"], "", "EIO"),
        deny("a", &["write"], "", "EIO"),
        deny("a", &["write"], "", "EIO"),
    ];
    let err = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules,
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .expect_err("three rules over a limit of two");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("at most 2 active rules"), "{err}");

    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_stream_is_paced_to_the_configured_rate_and_loses_nothing_it_can_hold() {
    if !root_or_skip(
        "an_event_stream_is_paced_to_the_configured_rate_and_loses_nothing_it_can_hold",
    ) {
        return;
    }
    let mut client = client(faultd::Limits {
        max_events_per_second: 100,
        ..faultd::Limits::default()
    })
    .await;
    let session = create(
        &mut client,
        vec![service("talker", &["seq", "1", "400"], &[])],
    )
    .await;
    let started = std::time::Instant::now();
    let events = events_until_exit(
        &mut client,
        &session.session_id,
        "talker",
        Duration::from_secs(60),
    )
    .await;
    let took = started.elapsed();
    // A burst of one second's worth, then 100 a second: 300 more lines cannot arrive in under 3 s
    // (a lower bound, which a slow machine only makes truer).
    assert!(
        took >= Duration::from_millis(2900),
        "400 lines at 100/s arrived in {took:?}"
    );
    let lines = stdout_lines(&events, "talker");
    assert_eq!(
        lines.len(),
        400,
        "the ring holds them all: paced, not dropped"
    );
    assert_eq!(lines.last().map(String::as_str), Some("400"));
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session.session_id,
        })
        .await
        .expect("delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_create_session_leaves_nothing_running() {
    if !root_or_skip("a_cancelled_create_session_leaves_nothing_running") {
        return;
    }
    let mut client = client(faultd::Limits::default()).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // Ready after a second: the client gives up long before that.
    let token = format!("9100.{}", unique("").rsplit('-').next().unwrap());
    let script = format!(
        "sleep 1; exec python3 -c 'import socket,time; s=socket.socket(); \
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", {port})); \
         s.listen(); time.sleep({token})'"
    );
    let mut slow = service("slow", &["sh", "-c", &script], &[]);
    slow.healthcheck = Some(pb::Healthcheck {
        check: Some(pb::healthcheck::Check::Tcp(pb::TcpCheck {
            address: format!("127.0.0.1:{port}"),
        })),
        timeout_ms: 10_000,
        interval_ms: 50,
    });
    let cancelled = tokio::time::timeout(
        Duration::from_millis(300),
        client.create_session(request(vec![slow], 500)),
    )
    .await;
    assert!(cancelled.is_err(), "the start should still be running");
    // The start finishes on its own, the session's lease (0.5 s, from the moment it started) runs
    // out with nobody holding it, and its service is stopped.
    assert_eq!(
        wait_gone(&token, Duration::from_secs(15)).await,
        Vec::<u32>::new()
    );
}
