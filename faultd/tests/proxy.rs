//! Protocol proxies against real servers: redis-server and an HTTP server (Python's http.server)
//! run as services of a session; clients and steps reach them through faultd's proxy.

mod support;

use std::time::Duration;

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use support::{Daemon, create, root_or_skip, service, skip};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn installed(program: &str, test: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    skip::runs_if(found, test, || {
        format!("{program} is not installed (cargo xtask deps installs it)")
    })
}

fn proxied(name: &str, protocol: pb::Protocol, port: u16, proxy_port: u16) -> pb::Interface {
    pb::Interface {
        name: name.into(),
        protocol: protocol as i32,
        port: port.into(),
        proxy_port: proxy_port.into(),
        ..Default::default()
    }
}

fn tcp_ready(port: u16) -> Option<pb::Healthcheck> {
    Some(pb::Healthcheck {
        check: Some(pb::healthcheck::Check::Tcp(pb::TcpCheck {
            address: format!("127.0.0.1:{port}"),
        })),
        timeout_ms: 10_000,
        interval_ms: 20,
    })
}

async fn redis_step(
    client: &mut FaultdClient<Channel>,
    session: &str,
    args: &[&str],
) -> pb::StepResponse {
    client
        .step(pb::StepRequest {
            session_id: session.into(),
            service: "cache".into(),
            interface: "main".into(),
            request: Some(pb::step_request::Request::Redis(pb::RedisRequest {
                args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            })),
            timeout_ms: 5_000,
        })
        .await
        .expect("step")
        .into_inner()
}

fn redis_value(r: &pb::StepResponse) -> Option<pb::redis_value::Value> {
    r.redis.as_ref().and_then(|v| v.value.clone())
}

/// Writes `request` in one piece and reads until `expected_len` bytes came back.
async fn exchange(addr: &str, request: &[u8], expected_len: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.unwrap();
    let mut out = vec![0; expected_len];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut out))
        .await
        .expect("the replies in time")
        .expect("the replies");
    out
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

async fn all_events(client: &mut FaultdClient<Channel>, session: &str) -> Vec<pb::Event> {
    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            session_id: session.into(),
            from_seq: 1,
            follow: false,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut out = Vec::new();
    while let Ok(Some(e)) = stream.message().await {
        out.push(e);
    }
    out
}

fn proxy_events(events: &[pb::Event]) -> Vec<pb::ProxyEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::event::Kind::Proxy(p)) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn redis_through_the_proxy_passes_bytes_and_faults_one_command_of_a_pipeline() {
    const TEST: &str = "redis_proxy";
    if !root_or_skip(TEST) || !installed("redis-server", TEST) {
        return;
    }
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let (port, proxy_port) = (free_port(), free_port());
    let mut cache = service(
        "cache",
        &[
            "redis-server",
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
    );
    cache.interfaces = vec![proxied("main", pb::Protocol::Redis, port, proxy_port)];
    // The test talks to the server and the proxy directly, from the host.
    cache.network = "host".into();
    cache.healthcheck = tcp_ready(port);
    let session = create(&mut client, vec![cache]).await.session_id;

    // No rule: the proxy's bytes are the server's bytes.
    let pipeline = [
        resp(&["SET", "k", "v"]),
        resp(&["GET", "k"]),
        resp(&["ECHO", "hello"]),
        resp(&["INCR", "n"]),
    ]
    .concat();
    let first = "+OK\r\n$1\r\nv\r\n$5\r\nhello\r\n:1\r\n";
    let direct = exchange(&format!("127.0.0.1:{port}"), &pipeline, first.len()).await;
    let via_proxy = exchange(&format!("127.0.0.1:{proxy_port}"), &pipeline, first.len()).await;
    assert_eq!(String::from_utf8_lossy(&direct), first);
    assert_eq!(
        String::from_utf8_lossy(&via_proxy),
        first.replace(":1", ":2")
    );

    // Steps go through the proxy too.
    let set = redis_step(&mut client, &session, &["SET", "order:1", "paid"]).await;
    assert!(set.ok, "{}", set.error);
    assert_eq!(
        redis_value(&set),
        Some(pb::redis_value::Value::Simple("OK".into()))
    );

    let applied = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            seed: 1,
            proxy_rules: vec![pb::ProxyRule {
                service: "cache".into(),
                interface: "main".into(),
                r#match: Some(pb::ProxyMatch {
                    command: "get".into(),
                    key: "order:*".into(),
                    ..Default::default()
                }),
                action: Some(pb::proxy_rule::Action::Error(pb::ProxyError {
                    message: "ERR cache down".into(),
                    ..Default::default()
                })),
                label: "cache down".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("apply a proxy rule")
        .into_inner();

    let faulted = redis_step(&mut client, &session, &["GET", "order:1"]).await;
    assert_eq!(
        redis_value(&faulted),
        Some(pb::redis_value::Value::Error("ERR cache down".into()))
    );
    let other = redis_step(&mut client, &session, &["GET", "k"]).await;
    assert_eq!(
        redis_value(&other),
        Some(pb::redis_value::Value::Bulk(b"v".to_vec()))
    );
    // The third command of a pipeline is faulted; the others are answered by the server, in order.
    let pipeline = [
        resp(&["SET", "a", "1"]),
        resp(&["GET", "a"]),
        resp(&["GET", "order:1"]),
        resp(&["GET", "a"]),
    ]
    .concat();
    let expected = "+OK\r\n$1\r\n1\r\n-ERR cache down\r\n$1\r\n1\r\n";
    let replies = exchange(
        &format!("127.0.0.1:{proxy_port}"),
        &pipeline,
        expected.len(),
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&replies), expected);

    let cleared = client
        .clear_faults(pb::ClearFaultsRequest {
            session_id: session.clone(),
            fault_set_id: applied.fault_set_id,
        })
        .await
        .expect("clear")
        .into_inner();
    let summary = &cleared.rules[0];
    assert_eq!(summary.hits, 2, "{summary:?}");
    assert_eq!(summary.backend, "proxy");
    assert!(summary.proxy.is_some());
    // Cleared: the server answers again.
    let again = redis_step(&mut client, &session, &["GET", "order:1"]).await;
    assert_eq!(
        redis_value(&again),
        Some(pb::redis_value::Value::Bulk(b"paid".to_vec()))
    );

    let events = proxy_events(&all_events(&mut client, &session).await);
    let errors: Vec<_> = events.iter().filter(|e| e.decision == "error").collect();
    assert_eq!(errors.len(), 2, "{events:#?}");
    assert_eq!(errors[0].summary, "GET order:1");
    assert_eq!(errors[0].label, "cache down");
    assert_eq!(errors[0].protocol, "redis");
    assert!(
        events
            .iter()
            .any(|e| e.decision == "pass" && e.summary == "ECHO hello")
    );

    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .expect("delete");
    // The proxy went with the session.
    assert!(TcpStream::connect(("127.0.0.1", proxy_port)).await.is_err());
}

#[tokio::test]
async fn http_through_the_proxy_keeps_alive_and_answers_faults_in_order() {
    const TEST: &str = "http_proxy";
    if !root_or_skip(TEST) || !installed("python3", TEST) {
        return;
    }
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let (port, proxy_port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(support::unique("http-proxy"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello\n").unwrap();
    let mut web = service(
        "web",
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--protocol",
            "HTTP/1.1",
            "--directory",
            dir.to_str().unwrap(),
            &port.to_string(),
        ],
        &[],
    );
    web.interfaces = vec![proxied("public", pb::Protocol::Http, port, proxy_port)];
    // The test talks to the server and the proxy directly, from the host.
    web.network = "host".into();
    web.healthcheck = tcp_ready(port);
    let session = create(&mut client, vec![web]).await.session_id;
    client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            seed: 1,
            proxy_rules: vec![pb::ProxyRule {
                service: "web".into(),
                interface: "public".into(),
                r#match: Some(pb::ProxyMatch {
                    method: "GET".into(),
                    path: "/orders/*".into(),
                    ..Default::default()
                }),
                action: Some(pb::proxy_rule::Action::Error(pb::ProxyError {
                    status: 503,
                    message: "down".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("apply");
    // Three requests on one keep-alive connection: the server, the proxy, the server again.
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let request = [get("/hello.txt"), get("/orders/7"), get("/hello.txt")].concat();
    let mut s = TcpStream::connect(("127.0.0.1", proxy_port)).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&seen).matches("hello\n").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("replies in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    let first_ok = text
        .find("HTTP/1.0 200")
        .or_else(|| text.find("HTTP/1.1 200"));
    let unavailable = text.find("HTTP/1.1 503 Service Unavailable");
    assert!(
        first_ok.is_some() && unavailable.is_some() && first_ok < unavailable,
        "{text}"
    );
    assert!(text.contains("{\"error\":\"down\"}"), "{text}");
    assert_eq!(text.matches("hello\n").count(), 2, "{text}");

    let events = proxy_events(&all_events(&mut client, &session).await);
    let decisions: Vec<_> = events
        .iter()
        .map(|e| (e.summary.as_str(), e.decision.as_str()))
        .collect();
    assert_eq!(
        decisions,
        [
            ("GET /hello.txt", "pass"),
            ("GET /orders/7", "error"),
            ("GET /hello.txt", "pass")
        ]
    );
    assert_eq!(events[1].detail, "status 503");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn malformed_traffic_closes_the_connection_with_an_event() {
    const TEST: &str = "malformed_proxy";
    if !root_or_skip(TEST) || !installed("redis-server", TEST) {
        return;
    }
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let (port, proxy_port) = (free_port(), free_port());
    let mut cache = service(
        "cache",
        &["redis-server", "--port", &port.to_string(), "--save", ""],
        &[],
    );
    cache.interfaces = vec![proxied("main", pb::Protocol::Redis, port, proxy_port)];
    // The test talks to the server and the proxy directly, from the host.
    cache.network = "host".into();
    cache.healthcheck = tcp_ready(port);
    let session = create(&mut client, vec![cache]).await.session_id;
    let mut s = TcpStream::connect(("127.0.0.1", proxy_port)).await.unwrap();
    s.write_all(b"*1\r\n*1\r\n*1\r\n").await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing forwarded: {rest:?}");
    let events = proxy_events(&all_events(&mut client, &session).await);
    assert!(
        events
            .iter()
            .any(|e| e.decision == "closed" && e.detail.contains("array of bulk strings")),
        "{events:#?}"
    );
    // Rules that do not suit the protocol are refused with a reason.
    let refused = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            proxy_rules: vec![pb::ProxyRule {
                service: "cache".into(),
                interface: "main".into(),
                r#match: Some(pb::ProxyMatch {
                    query: "SELECT*".into(),
                    ..Default::default()
                }),
                action: Some(pb::proxy_rule::Action::Drop(pb::ProxyDrop {})),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect_err("query= on redis");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("`query` does not apply to a redis interface"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn tcp_proxy_copies_bytes_and_drops_connections_while_a_rule_says_so() {
    use std::sync::Arc;

    use faultd::proxy::{Protocol, ProxyAction, ProxyHandle, ProxyRule, ProxyRuleSpec};
    use faultd::rules::SeededRng;
    use faultd::trace::{Batch, EventBus, EventKind};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let bus = Arc::new(EventBus::new(1024));
    let proxy = ProxyHandle::start(
        "echo".into(),
        "main",
        Protocol::Tcp,
        "127.0.0.1:0".parse().unwrap(),
        upstream.to_string(),
        bus.clone(),
    )
    .await
    .unwrap();
    let addr = proxy.listen_addr().to_string();
    // Every byte value, both ways, unchanged.
    let all: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    assert_eq!(exchange(&addr, &all, all.len()).await, all);

    let spec = ProxyRuleSpec {
        service: "echo".into(),
        interface: "main".into(),
        action: ProxyAction::Drop,
        probability: 1.0,
        label: Some("cut".into()),
        ..Default::default()
    };
    let rule = ProxyRule::compile(7, "fs1".into(), spec, Arc::new(SeededRng::new(1))).unwrap();
    proxy.set_rules(vec![Arc::new(rule)]);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let _ = s.write_all(b"hello").await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "dropped: nothing echoed");
    proxy.set_rules(Vec::new());
    assert_eq!(exchange(&addr, b"back", 4).await, b"back");

    let mut sub = bus.subscribe(1);
    let Batch::Events(events) = sub.poll(100) else {
        panic!("events on the bus")
    };
    let decisions: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Proxy(p) => Some((p.decision, p.rule_id, p.label.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("pass", 0, None),
            ("drop", 7, Some("cut".into())),
            ("pass", 0, None)
        ]
    );
}
