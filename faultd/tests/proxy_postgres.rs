//! The postgres proxy against a real PostgreSQL (Debian's server, initdb in a temporary directory,
//! run as the `postgres` user, which it requires): pass-through of the startup (SSL refused, trust
//! authentication), simple and extended queries (psql, pgbench), and an injected ErrorResponse after
//! which the connection stays usable.

mod support;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use faultd_proto::v1 as pb;

use support::{Daemon, create, root_or_skip, service, skip};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `/usr/lib/postgresql/<version>/bin` of the newest installed server.
fn postgres_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

#[tokio::test]
async fn postgres_through_the_proxy_answers_an_injected_sql_error_and_stays_usable() {
    const TEST: &str = "postgres_proxy";
    if !root_or_skip(TEST) {
        return;
    }
    let (Some(bin), Some((uid, gid))) = (postgres_bin(), ids("postgres")) else {
        skip::cannot_run(
            TEST,
            "PostgreSQL is not installed (cargo xtask deps installs Debian's postgresql)",
        );
        return;
    };
    let data = std::env::temp_dir().join(support::unique("pg-proxy"));
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    let initdb = Command::new(bin.join("initdb"))
        .args([
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ])
        .uid(uid)
        .gid(gid)
        .output()
        .expect("run initdb");
    assert!(
        initdb.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&initdb.stderr)
    );

    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let (port, proxy_port) = (free_port(), free_port());
    let mut db = service(
        "db",
        &[
            bin.join("postgres").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-p",
            &port.to_string(),
            "-k",
            data.to_str().unwrap(),
            "-c",
            "listen_addresses=127.0.0.1",
        ],
        &[],
    );
    db.user = "postgres".into();
    // The test talks to the server and the proxy directly, from the host.
    db.network = "host".into();
    db.interfaces = vec![pb::Interface {
        name: "main".into(),
        protocol: pb::Protocol::Postgres as i32,
        port: port.into(),
        proxy_port: proxy_port.into(),
        ..Default::default()
    }];
    db.healthcheck = Some(pb::Healthcheck {
        check: Some(pb::healthcheck::Check::Postgres(pb::PostgresCheck {
            address: format!("127.0.0.1:{port}"),
            ..Default::default()
        })),
        timeout_ms: 30_000,
        interval_ms: 50,
    });
    let session = create(&mut client, vec![db]).await.session_id;

    let steps = client.clone();
    let step = async |sql: &str| -> pb::PostgresResult {
        let answer = steps
            .clone()
            .step(pb::StepRequest {
                session_id: session.clone(),
                service: "db".into(),
                interface: "main".into(),
                request: Some(pb::step_request::Request::Postgres(pb::PostgresRequest {
                    sql: sql.into(),
                    ..Default::default()
                })),
                timeout_ms: 10_000,
            })
            .await
            .expect("step")
            .into_inner();
        assert!(answer.ok, "{sql}: {}", answer.error);
        answer.postgres.expect("a postgres result")
    };
    let created = step("CREATE TABLE orders (id int PRIMARY KEY, item text)").await;
    assert!(!created.failed, "{}", created.message);
    let inserted = step("INSERT INTO orders VALUES (1, 'book'), (2, NULL)").await;
    assert_eq!((inserted.failed, inserted.count), (false, 2));
    let dup = step("INSERT INTO orders VALUES (1, 'again')").await;
    assert_eq!(
        (dup.failed, dup.sqlstate.as_str()),
        (true, "23505"),
        "the server's own error"
    );
    let rows = step("SELECT id, item FROM orders ORDER BY id").await;
    let cells: Vec<Vec<Option<String>>> = rows
        .rows
        .iter()
        .map(|r| r.cells.iter().map(|c| c.text.clone()).collect())
        .collect();
    assert_eq!(
        cells,
        [
            vec![Some("1".to_owned()), Some("book".to_owned())],
            vec![Some("2".to_owned()), None]
        ]
    );

    let applied = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            seed: 1,
            proxy_rules: vec![pb::ProxyRule {
                service: "db".into(),
                interface: "main".into(),
                r#match: Some(pb::ProxyMatch {
                    query: "insert into orders*".into(),
                    ..Default::default()
                }),
                action: Some(pb::proxy_rule::Action::Error(pb::ProxyError {
                    message: "disk full".into(),
                    sqlstate: "53100".into(),
                    ..Default::default()
                })),
                label: "no space".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("apply")
        .into_inner();
    let injected = step("insert   into ORDERS values (3, 'pen')").await;
    assert_eq!(
        (
            injected.failed,
            injected.sqlstate.as_str(),
            injected.message.as_str()
        ),
        (true, "53100", "disk full")
    );
    // psql: one connection, the faulted INSERT, then a query on the same connection.
    let psql = Command::new(bin.join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &proxy_port.to_string(),
            "-U",
            "postgres",
            "-At",
            "-c",
            "INSERT INTO orders VALUES (4, 'cup')",
            "-c",
            "SELECT count(*) FROM orders",
        ])
        .env("PGSSLMODE", "prefer")
        .uid(uid)
        .gid(gid)
        .output()
        .expect("run psql");
    let (out, err) = (
        String::from_utf8_lossy(&psql.stdout),
        String::from_utf8_lossy(&psql.stderr),
    );
    assert!(err.contains("disk full"), "stderr: {err}");
    assert_eq!(
        out.trim(),
        "2",
        "the connection stayed usable; stderr: {err}"
    );
    // Extended protocol (Parse/Bind/Execute/Sync) through the proxy, untouched by the rule.
    let pgbench = |args: &[&str]| {
        Command::new(bin.join("pgbench"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &proxy_port.to_string(),
                "-U",
                "postgres",
            ])
            .args(args)
            .arg("postgres")
            .uid(uid)
            .gid(gid)
            .output()
            .expect("run pgbench")
    };
    let init = pgbench(&["-i", "-q", "-s", "1"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let run = pgbench(&["-M", "extended", "-t", "20", "-c", "2"]);
    assert!(
        run.status.success()
            && String::from_utf8_lossy(&run.stdout).contains("number of failed transactions: 0"),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    let cleared = client
        .clear_faults(pb::ClearFaultsRequest {
            session_id: session.clone(),
            fault_set_id: applied.fault_set_id,
        })
        .await
        .expect("clear")
        .into_inner();
    assert_eq!(cleared.rules[0].hits, 2);
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .expect("delete");
    let _ = std::fs::remove_dir_all(&data);
}
