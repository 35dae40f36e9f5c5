//! Remote clients: faultd's TCP listener speaks only TLS, with the certificate it is given.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use support::unique;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// A throw-away CA and a server certificate for localhost/127.0.0.1 it signed, made with openssl.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (cargo xtask deps installs it)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=faultd test CA",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "1",
        "-extfile",
        "ext",
    ]);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_client_reaches_faultd_over_tls_and_plain_tcp_is_refused() {
    let dir = std::path::PathBuf::from(format!("/tmp/{}", unique("faultd-tls")));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let port = free_port();
    let socket = dir.join("faultd.sock");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("--socket")
        .arg(&socket)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(dir.join("srv.pem"))
        .arg("--tls-key")
        .arg(dir.join("srv.key"))
        .stdin(Stdio::null())
        .spawn()
        .expect("start faultd");
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let channel = loop {
        let endpoint = Endpoint::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)))
            .unwrap();
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect over TLS: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect over TLS: {e}"),
        }
    };
    let probe = FaultdClient::new(channel)
        .probe(pb::ProbeRequest {})
        .await
        .expect("Probe over TLS")
        .into_inner();
    assert!(
        probe.backends.iter().any(|b| b.name == "seccomp"),
        "{probe:?}"
    );

    // The same port in plain text answers no RPC.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            FaultdClient::new(channel)
                .probe(pb::ProbeRequest {})
                .await
                .is_err()
        );
    }

    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tcp_listener_without_a_certificate_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .args([
            "--socket",
            "/tmp/faultd-never.sock",
            "--listen",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs --tls-cert and --tls-key"),
        "{stderr}"
    );
}
