//! Partitions enforced in the kernel by the ebpf-cgroup backend: connects refused, packets of open
//! TCP connections and UDP dropped, and healed when cleared (root only). The services listen
//! themselves, in their session's network namespace (or on the host's network where there is none).

mod support;

use std::time::Duration;

use faultd_proto::v1 as pb;
use support::ebpf_cgroup::*;
use support::*;

const EXIT_WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_fails_connects_to_the_other_service_and_heals_when_cleared() {
    let test = "a_partition_fails_connects_to_the_other_service_and_heals_when_cleared";
    let Some((_serial, _daemon, mut client)) = start(test).await else {
        return;
    };
    // Ports free on the host now (the services may share its network).
    let ((_, db_port), (_, app_port), (_, other_port)) = (listener(), listener(), listener());
    let (go1, go2) = (
        format!("/tmp/{}", unique("faultd-part-go")),
        format!("/tmp/{}", unique("faultd-part-go")),
    );
    let victim = victim();
    let (db_addr, other_addr) = (
        format!("127.0.0.1:{db_port}"),
        format!("127.0.0.1:{other_port}"),
    );
    let interface = |port: u16| pb::Interface {
        name: "main".into(),
        protocol: pb::Protocol::Tcp as i32,
        port: port.into(),
        ..Default::default()
    };
    let mut db = service("db", &[&victim, "listen", &db_addr, "sleep", "30"], &[]);
    db.interfaces = vec![interface(db_port)];
    db.healthcheck = ready(db_port);
    // A destination outside the partition.
    let mut other = service(
        "other",
        &[&victim, "listen", &other_addr, "sleep", "30"],
        &[],
    );
    other.healthcheck = ready(other_port);
    let mut app = service(
        "app",
        &[
            &victim,
            "wait",
            &go1,
            "connect",
            &db_addr,
            "connect",
            &other_addr,
            "wait",
            &go2,
            "stdout",
            "healed",
            "connect",
            &db_addr,
        ],
        &[],
    );
    app.interfaces = vec![interface(app_port)];
    let created = create(&mut client, vec![db, other, app]).await;
    let session = created.session_id;
    let applied = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules: vec![],
            seed: 1,
            partitions: vec![pb::Partition {
                from_service: "app".into(),
                to_service: "db".into(),
                both_directions: true,
                label: "split".into(),
            }],
            ..Default::default()
        })
        .await
        .expect("apply a partition")
        .into_inner();
    let services: Vec<&str> = applied.rules.iter().map(|r| r.service.as_str()).collect();
    assert_eq!(services, ["app", "db"], "one rule per direction");
    assert!(applied.rules.iter().all(|r| r.backend == "ebpf-cgroup"));
    let attached: Vec<u32> = created
        .services
        .iter()
        .flat_map(|s| attached_programs(&s.cgroup))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        attached.len(),
        8,
        "connect4, connect6 and the skb egress and ingress programs on both services"
    );

    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            session_id: session.clone(),
            from_seq: 1,
            follow: true,
        })
        .await
        .expect("watch")
        .into_inner();
    std::fs::write(&go1, "").unwrap();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    let mut cleared = None;
    while let Ok(Ok(Some(event))) = tokio::time::timeout_at(deadline, stream.message()).await {
        match &event.kind {
            Some(pb::event::Kind::Output(o)) if event.service == "app" => {
                lines.push(o.line.clone());
                if o.line.starts_with(&format!("connect {other_addr}")) && cleared.is_none() {
                    // The partition is over: clear it, then let the victim connect again.
                    cleared = Some(
                        client
                            .clear_faults(pb::ClearFaultsRequest {
                                session_id: session.clone(),
                                fault_set_id: applied.fault_set_id.clone(),
                            })
                            .await
                            .expect("clear")
                            .into_inner(),
                    );
                    std::fs::write(&go2, "").unwrap();
                }
            }
            Some(pb::event::Kind::Exited(_)) if event.service == "app" => break,
            _ => {}
        }
    }
    for go in [&go1, &go2] {
        let _ = std::fs::remove_file(go);
    }
    let db_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("connect {db_addr}")))
        .collect();
    assert_eq!(
        db_lines,
        [
            &format!("connect {db_addr} err ECONNREFUSED"),
            &format!("connect {db_addr} ok")
        ],
        "refused during the partition, healed after: {lines:#?}"
    );
    assert_eq!(
        line_for(&lines, &format!("connect {other_addr}")),
        format!("connect {other_addr} ok"),
        "other destinations are not cut"
    );
    let cleared = cleared.expect("the partition was cleared");
    let app_rule = cleared
        .rules
        .iter()
        .find(|r| r.service == "app")
        .expect("app's rule");
    assert_eq!(app_rule.hits, 1, "{app_rule:?}");
    assert_eq!(app_rule.label, "split");
    assert_eq!(app_rule.backend, "ebpf-cgroup");
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
    let loaded = connect_programs();
    assert!(
        attached.iter().all(|id| !loaded.contains(id)),
        "the programs are gone after the session: {attached:?} vs {loaded:?}"
    );
}

/// A TCP check of 127.0.0.1:`port`.
fn ready(port: u16) -> Option<pb::Healthcheck> {
    Some(pb::Healthcheck {
        check: Some(pb::healthcheck::Check::Tcp(pb::TcpCheck {
            address: format!("127.0.0.1:{port}"),
        })),
        timeout_ms: 10_000,
        interval_ms: 20,
    })
}

/// The round number of an `echo-loop ADDR K ...` line and whether it was ok.
fn echo_round(line: &str, addr: &str) -> Option<(u64, bool)> {
    let rest = line.strip_prefix(&format!("echo-loop {addr} "))?;
    let (round, outcome) = rest.split_once(' ')?;
    Some((round.parse().ok()?, outcome == "ok"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_cuts_connections_opened_before_it_and_they_carry_data_again_after_clear() {
    let test =
        "a_partition_cuts_connections_opened_before_it_and_they_carry_data_again_after_clear";
    cut_and_heal(test, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_drops_udp_datagrams_until_cleared() {
    let test = "a_partition_drops_udp_datagrams_until_cleared";
    cut_and_heal(test, true).await;
}

/// A victim (`app`) runs `echo-loop db_addr` against `db`, an echo server (TCP, or UDP) on its
/// interface port; after 3 answered rounds a partition app -> db is applied, after 3 failed rounds it
/// is cleared, and the next round is answered again.
async fn cut_and_heal(test: &str, udp: bool) {
    let Some((_serial, _daemon, mut client)) = start(test).await else {
        return;
    };
    let (_, db_port) = listener();
    let tcp_addr = format!("127.0.0.1:{db_port}");
    let db_addr = if udp {
        format!("udp:{tcp_addr}")
    } else {
        tcp_addr.clone()
    };
    let victim = victim();
    // The TCP listener binds after the UDP socket: its healthcheck says both are there.
    let mut argv = vec![victim.as_str(), "listen", &db_addr];
    if udp {
        argv.extend(["listen", &tcp_addr]);
    }
    argv.extend(["sleep", "60"]);
    let mut db = service("db", &argv, &[]);
    db.healthcheck = ready(db_port);
    db.interfaces = vec![pb::Interface {
        name: "main".into(),
        protocol: pb::Protocol::Tcp as i32,
        port: db_port.into(),
        ..Default::default()
    }];
    // One connection (or UDP socket), opened at start, before the partition; a round trip every
    // ~100 ms.
    let mut app = service("app", &[&victim, "echo-loop", &db_addr, "600"], &[]);
    app.depends_on = vec!["db".into()];
    let created = create(&mut client, vec![db, app]).await;
    let session = created.session_id;
    let app_cgroup = created
        .services
        .iter()
        .find(|s| s.name == "app")
        .expect("app")
        .cgroup
        .clone();
    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            session_id: session.clone(),
            from_seq: 1,
            follow: true,
        })
        .await
        .expect("watch")
        .into_inner();

    #[derive(Debug, PartialEq)]
    enum Phase {
        Before,
        Partitioned,
        Cleared,
        Done,
    }
    let mut phase = Phase::Before;
    let (mut ok_before, mut failed_during) = (0, 0);
    let (mut applied_at, mut cleared_at, mut healed_at) = (0, 0, 0);
    // A round: its send, then up to 300 ms waiting for the echo.
    const ROUND_NS: u64 = 400_000_000;
    let unix_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    };
    let mut applied_ns = u64::MAX - ROUND_NS;
    let mut fault_set = String::new();
    let mut attached_during = Vec::new();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while let Ok(Ok(Some(event))) = tokio::time::timeout_at(deadline, stream.message()).await {
        let line = match &event.kind {
            Some(pb::event::Kind::Output(o)) if event.service == "app" => o.line.clone(),
            Some(pb::event::Kind::Exited(_)) if event.service == "app" => break,
            _ => continue,
        };
        lines.push(line.clone());
        let Some((round, ok)) = echo_round(&line, &db_addr) else {
            continue;
        };
        match phase {
            Phase::Before if ok => {
                ok_before += 1;
                if ok_before == 3 {
                    let applied = client
                        .apply_faults(pb::ApplyFaultsRequest {
                            session_id: session.clone(),
                            rules: vec![],
                            seed: 1,
                            partitions: vec![pb::Partition {
                                from_service: "app".into(),
                                to_service: "db".into(),
                                both_directions: false,
                                label: "cut".into(),
                            }],
                            ..Default::default()
                        })
                        .await
                        .expect("apply a partition")
                        .into_inner();
                    fault_set = applied.fault_set_id;
                    applied_at = round;
                    applied_ns = unix_ns();
                    attached_during = attached_programs(&app_cgroup);
                    phase = Phase::Partitioned;
                }
            }
            // Rounds in flight while the partition was being applied (on a loaded machine that can
            // take several rounds) may still have made it; a round that started after it was in
            // place must not.
            Phase::Partitioned if ok && event.time_unix_ns < applied_ns + ROUND_NS => {}
            Phase::Partitioned => {
                assert!(!ok, "round {round} went through the partition: {lines:#?}");
                failed_during += 1;
                if failed_during == 3 {
                    client
                        .clear_faults(pb::ClearFaultsRequest {
                            session_id: session.clone(),
                            fault_set_id: fault_set.clone(),
                        })
                        .await
                        .expect("clear");
                    cleared_at = round;
                    phase = Phase::Cleared;
                }
            }
            Phase::Cleared if ok => {
                healed_at = round;
                phase = Phase::Done;
                break;
            }
            _ => {}
        }
    }
    let attached_after = attached_programs(&app_cgroup);
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
    eprintln!(
        "{test}: partition applied after round {applied_at}, cleared after round {cleared_at}, \
         data again in round {healed_at}"
    );
    assert_eq!(phase, Phase::Done, "{lines:#?}");
    assert!(ok_before >= 3 && failed_during >= 3, "{lines:#?}");
    assert!(
        healed_at > cleared_at && cleared_at > applied_at,
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .filter_map(|l| echo_round(l, &db_addr))
            .all(|(round, ok)| ok || (round >= applied_at && round <= healed_at)),
        "failures only while partitioned: {lines:#?}"
    );
    let mut names: Vec<&str> = attached_during.iter().map(|(_, n)| n.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fd_connect4",
            "fd_connect6",
            "fd_skb_egress",
            "fd_skb_ingress"
        ],
        "attached to app's cgroup while the partition is"
    );
    assert!(
        attached_after.is_empty(),
        "nothing stays attached after ClearFaults: {attached_after:?}"
    );
}
