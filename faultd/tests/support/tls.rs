//! Throw-away certificates made with openssl, and TLS clients of a faultd TCP listener.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (cargo xtask deps installs it)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

fn ca(dir: &Path, name: &str) {
    let mut args = vec!["req", "-x509"];
    args.extend(EC);
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN=faultd test {name}"),
    );
    args.extend(["-keyout", &key, "-out", &pem, "-days", "1", "-subj", &subj]);
    openssl(dir, &args);
}

fn leaf(dir: &Path, name: &str, ca: &str, cn: &str, ext: &str) {
    let (key, csr, pem, subj, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("/CN={cn}"),
        format!("{name}.ext"),
    );
    let mut args = vec!["req"];
    args.extend(EC);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
    openssl(dir, &args);
    std::fs::write(dir.join(&extfile), ext).unwrap();
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &extfile,
        ],
    );
}

/// In `dir`: `ca.pem`; `srv.pem`/`srv.key` for localhost and 127.0.0.1 signed by it; `client.pem`/
/// `client.key` signed by it; `rogue.pem`/`rogue.key`, a client certificate signed by another CA.
pub fn certificates(dir: &Path) {
    ca(dir, "ca");
    ca(dir, "other-ca");
    leaf(
        dir,
        "srv",
        "ca",
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
    let client = "extendedKeyUsage=clientAuth\n";
    leaf(dir, "client", "ca", "ci-agent", client);
    leaf(dir, "rogue", "other-ca", "ci-agent", client);
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TLS channel to `https://localhost:port` trusting `dir/ca.pem`, with the client certificate
/// `dir/<identity>.pem` when given; retries while faultd starts.
pub async fn channel(dir: &Path, port: u16, identity: Option<&str>) -> Channel {
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca));
    if let Some(name) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(dir.join(format!("{name}.pem"))).unwrap(),
            std::fs::read(dir.join(format!("{name}.key"))).unwrap(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let endpoint = Endpoint::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(tls.clone())
            .unwrap();
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect over TLS: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect over TLS: {e}"),
        }
    }
}
