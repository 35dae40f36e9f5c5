//! Serving the API: the tonic router (faultd.v1, gRPC health, reflection) on a Unix socket or on any
//! stream of connections.

use std::io;
use std::path::Path;
use std::sync::Arc;

use faultd_proto::v1::faultd_server::FaultdServer;
use tokio::net::UnixListener;
use tonic::transport::server::Router;

use crate::api::FaultdApi;
use crate::engine::Engine;

/// The full gRPC router for `engine`: faultd.v1, `grpc.health.v1` and server reflection.
pub async fn router(engine: Arc<Engine>) -> Router {
    services(engine, tonic::transport::Server::builder()).await
}

/// The same router served over TLS with `cert_pem`/`key_pem` (PEM), for a TCP listener that remote
/// clients reach as `https://host:port`.
pub async fn tls_router(
    engine: Arc<Engine>,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Router, tonic::transport::Error> {
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
    let server = tonic::transport::Server::builder().tls_config(tls)?;
    Ok(services(engine, server).await)
}

async fn services(engine: Arc<Engine>, mut server: tonic::transport::Server) -> Router {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<FaultdServer<FaultdApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(faultd_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    server
        .add_service(FaultdServer::new(FaultdApi::new(engine)))
        .add_service(health_service)
        .add_service(reflection)
}

/// Binds `path` as a Unix socket with mode 0660, created that way (umask around `bind`), so there is no
/// window in which a wider mode is visible. A stale socket file nobody answers on is replaced.
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another faultd is answering on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // SAFETY: umask only changes this process's file-creation mask; restored right after bind.
    let old = unsafe { libc::umask(0o117) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    listener
}
