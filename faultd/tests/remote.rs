//! Remote clients: faultd's TCP listener speaks only TLS and authenticates every RPC, by a bearer
//! token or a client certificate; remote callers see only their own sessions and their services run
//! as `nobody` unless their token grants root.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use support::tls::{certificates, channel, free_port};
use support::{assert_status, follow_all, unique, wait_for_output};
use tonic::Code;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

const CI_TOKEN: &str = "ci-0123456789abcdef0123456789";
const OTHER_TOKEN: &str = "other-0123456789abcdef01234567";
const ADMIN_TOKEN: &str = "admin-0123456789abcdef01234567";

/// Sends `authorization: Bearer <token>` when it has one.
#[derive(Clone)]
struct Bearer(Option<&'static str>);

impl Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = self.0 {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(r)
    }
}

type Client = FaultdClient<InterceptedService<Channel, Bearer>>;

fn client(channel: &Channel, token: Option<&'static str>) -> Client {
    FaultdClient::with_interceptor(channel.clone(), Bearer(token))
}

struct Remote {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Remote {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A faultd on a private socket and a loopback port, with certificates in its directory and `args`.
fn start(args: &[&str], tokens: Option<&str>) -> Remote {
    let dir = PathBuf::from(format!("/tmp/{}", unique("faultd-tls")));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultd"));
    cmd.arg("--socket")
        .arg(dir.join("faultd.sock"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(dir.join("srv.pem"))
        .arg("--tls-key")
        .arg(dir.join("srv.key"))
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::null());
    if let Some(tokens) = tokens {
        std::fs::write(dir.join("tokens"), tokens).unwrap();
        cmd.arg("--token-file").arg(dir.join("tokens"));
    }
    let child = cmd.spawn().expect("start faultd");
    Remote { child, dir, port }
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn shell(name: &str, script: &str) -> pb::ServiceSpec {
    pb::ServiceSpec {
        name: name.into(),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        stop_grace_ms: 500,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_callers_need_a_token_see_only_their_sessions_and_run_as_nobody() {
    let tokens =
        format!("# test tokens\nci:{CI_TOKEN}\nother:{OTHER_TOKEN}\nadmin:{ADMIN_TOKEN}:root\n");
    let faultd = start(&[], Some(&tokens));
    let channel = channel(&faultd.dir, faultd.port, None).await;

    // No token, a wrong token: every service refuses, health included.
    assert_status(
        client(&channel, None).probe(pb::ProbeRequest {}).await,
        Code::Unauthenticated,
        "Bearer",
    );
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    assert_status(health, Code::Unauthenticated, "Bearer");
    assert_status(
        client(&channel, Some("ci-0123456789abcdef0123456788"))
            .probe(pb::ProbeRequest {})
            .await,
        Code::Unauthenticated,
        "not one of faultd's",
    );
    let created = client(&channel, None)
        .create_session(pb::CreateSessionRequest {
            name: "intruder".into(),
            services: vec![shell("x", "id")],
            ..Default::default()
        })
        .await;
    assert_status(created, Code::Unauthenticated, "Bearer");

    // The right token: its services run as nobody.
    let mut ci = client(&channel, Some(CI_TOKEN));
    ci.probe(pb::ProbeRequest {})
        .await
        .expect("Probe with a token");
    let session = ci
        .create_session(pb::CreateSessionRequest {
            name: "remote".into(),
            services: vec![shell("who", "id -u; exec sleep 30")],
            ..Default::default()
        })
        .await
        .expect("CreateSession with a token")
        .into_inner()
        .session_id;
    assert_eq!(session.len(), 32, "128 random bits in hex: {session}");
    wait_for_output(
        ci.watch_events(follow_all(&session)),
        &uid_of("nobody").to_string(),
    )
    .await;

    // Another token's caller: the session does not exist for it.
    let mut other = client(&channel, Some(OTHER_TOKEN));
    let keep = other
        .keep_alive(pb::KeepAliveRequest {
            session_id: session.clone(),
        })
        .await;
    assert_status(keep, Code::NotFound, "not found");
    let deleted = other
        .delete_session(pb::DeleteSessionRequest {
            session_id: session.clone(),
        })
        .await;
    assert_status(deleted, Code::NotFound, "not found");
    let missing = other
        .keep_alive(pb::KeepAliveRequest {
            session_id: "0123456789abcdef0123456789abcdef".into(),
        })
        .await;
    assert_status(missing, Code::NotFound, "not found");

    // A token granted root sees every session, and its services run as root.
    let mut admin = client(&channel, Some(ADMIN_TOKEN));
    admin
        .keep_alive(pb::KeepAliveRequest {
            session_id: session.clone(),
        })
        .await
        .expect("root sees every session");
    let root_session = admin
        .create_session(pb::CreateSessionRequest {
            name: "root".into(),
            services: vec![shell("who", "id -u; exec sleep 30")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session_id;
    wait_for_output(admin.watch_events(follow_all(&root_session)), "0").await;

    ci.delete_session(pb::DeleteSessionRequest {
        session_id: session,
    })
    .await
    .expect("the owner deletes its session");
    admin
        .delete_session(pb::DeleteSessionRequest {
            session_id: root_session,
        })
        .await
        .unwrap();

    // The same port in plain text answers no RPC.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{}", faultd.port))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            client(&channel, Some(CI_TOKEN))
                .probe(pb::ProbeRequest {})
                .await
                .is_err()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_admits_only_certificates_of_the_client_ca() {
    let faultd = start(&["--tls-client-ca", "ca.pem"], None);
    let good = channel(&faultd.dir, faultd.port, Some("client")).await;
    client(&good, None)
        .probe(pb::ProbeRequest {})
        .await
        .expect("Probe with a client certificate of the CA");

    let rogue = channel(&faultd.dir, faultd.port, Some("rogue")).await;
    assert_status(
        client(&rogue, None).probe(pb::ProbeRequest {}).await,
        Code::Unauthenticated,
        "client certificate is not accepted",
    );
    let none = channel(&faultd.dir, faultd.port, None).await;
    assert_status(
        client(&none, None).probe(pb::ProbeRequest {}).await,
        Code::Unauthenticated,
        "client certificate signed by its --tls-client-ca",
    );
    // No tokens configured: a bearer token alone proves nothing.
    assert_status(
        client(&none, Some(CI_TOKEN))
            .probe(pb::ProbeRequest {})
            .await,
        Code::Unauthenticated,
        "accepts no bearer tokens",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_never_finishes_its_handshake_is_closed() {
    use std::io::Read;
    let dir = PathBuf::from(format!("/tmp/{}", unique("faultd-hs")));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let port = free_port();
    std::fs::write(dir.join("tokens"), format!("ci:{CI_TOKEN}\n")).unwrap();
    let config = format!(
        "socket = \"{socket}\"\n[tcp]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{d}/srv.pem\"\n\
         tls_key = \"{d}/srv.key\"\n[auth]\ntoken_file = \"{d}/tokens\"\n\
         [limits]\nhandshake_timeout_ms = 300\n[log]\nformat = \"json\"\n",
        socket = dir.join("faultd.sock").display(),
        d = dir.display(),
    );
    std::fs::write(dir.join("faultd.toml"), config).unwrap();
    let faultd = Remote {
        child: Command::new(env!("CARGO_BIN_EXE_faultd"))
            .arg("--config")
            .arg(dir.join("faultd.toml"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
        dir: dir.clone(),
        port,
    };
    // The configured listener works (the config file is read)...
    let channel = channel(&faultd.dir, port, None).await;
    client(&channel, Some(CI_TOKEN))
        .probe(pb::ProbeRequest {})
        .await
        .expect("Probe");
    // ...and a connection that sends nothing is closed after the handshake timeout.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let read = idle.read(&mut buf);
    assert!(
        matches!(read, Ok(0)) || read.is_err() && start.elapsed() < Duration::from_secs(9),
        "{read:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        start.elapsed()
    );
}

fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .args(["--socket", "/tmp/faultd-never.sock"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_tcp_listener_without_a_certificate_is_refused() {
    let stderr = refused(&["--listen", "127.0.0.1:1"]);
    assert!(
        stderr.contains("needs --tls-cert and --tls-key"),
        "{stderr}"
    );
}

#[test]
fn a_tcp_listener_without_client_authentication_is_refused() {
    let dir = PathBuf::from(format!("/tmp/{}", unique("faultd-noauth")));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let tls = |extra: &[&str]| {
        let mut args = vec![
            "--tls-cert".to_string(),
            dir.join("srv.pem").display().to_string(),
            "--tls-key".to_string(),
            dir.join("srv.key").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| refused(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = run(tls(&["--listen", "127.0.0.1:1"]));
    assert!(stderr.contains("without client authentication"), "{stderr}");
    let stderr = run(tls(&[
        "--listen",
        "0.0.0.0:1",
        "--insecure-loopback-no-auth",
    ]));
    assert!(stderr.contains("only to a loopback address"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn versions_carry_the_git_description() {
    let out = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("faultd {} (", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}
