//! Serving the API: the tonic router (faultd.v1, gRPC health, reflection) behind the [`Auth`]
//! interceptor, on a Unix socket, on TLS connections accepted here (with a handshake timeout), or on
//! any stream of connections.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use faultd_proto::v1::faultd_server::FaultdServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::InterceptorLayer;
use tonic::transport::server::{Connected, Router};
use tower::layer::util::{Identity, Stack};

use crate::api::FaultdApi;
use crate::auth::{Auth, ClientCert, LocalPolicy, RemotePeer, RemotePolicy};
use crate::engine::Engine;

/// The router of one listener: every service behind its [`Auth`] interceptor.
pub type AuthRouter = Router<Stack<InterceptorLayer<Auth>, Identity>>;

/// The full gRPC router for `engine` for callers in this process (faultctl's embedded engine).
pub async fn router(engine: Arc<Engine>) -> AuthRouter {
    services(engine, tonic::transport::Server::builder(), Auth::InProcess).await
}

/// The router of the Unix socket: callers admitted by their peer credentials.
pub async fn unix_router(engine: Arc<Engine>, policy: LocalPolicy) -> AuthRouter {
    let auth = Auth::Unix(Arc::new(policy));
    services(engine, tonic::transport::Server::builder(), auth).await
}

/// The router of a TCP listener, served over [`tls_incoming`]: callers authenticated by a bearer
/// token or a client certificate. Idle HTTP/2 connections are probed and closed when dead.
pub async fn remote_router(engine: Arc<Engine>, policy: RemotePolicy) -> AuthRouter {
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    services(engine, server, Auth::Remote(Arc::new(policy))).await
}

async fn services(engine: Arc<Engine>, server: tonic::transport::Server, auth: Auth) -> AuthRouter {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<FaultdServer<FaultdApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(faultd_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    server
        .trace_fn(rpc_span)
        .layer(InterceptorLayer::new(auth))
        .add_service(FaultdServer::new(FaultdApi::new(engine)))
        .add_service(health_service)
        .add_service(reflection)
}

/// The span every RPC runs in: its method, and the caller once authenticated (see [`Auth`]).
fn rpc_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        method = request.uri().path(),
        caller = tracing::field::Empty
    )
}

/// Why the TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file holds nothing usable.
    #[error("{what}: {reason}")]
    Pem {
        /// Which file (flag).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The TLS side of a TCP listener.
pub struct Tls {
    acceptor: TlsAcceptor,
    /// Verifies client certificates after the handshake, when a client CA is configured.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl Tls {
    /// From PEM: the server's certificate chain and key, and optionally the CA whose client
    /// certificates are accepted.
    pub fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<Tls, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "--tls-cert",
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::Pem {
                what: "--tls-cert",
                reason: "no PEM certificate in the file".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
            what: "--tls-key",
            reason: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let (builder, verifier) = match client_ca_pem {
            None => (builder.with_no_client_auth(), None),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| TlsError::Pem {
                        what: "--tls-client-ca",
                        reason: e.to_string(),
                    })?;
                    roots.add(cert).map_err(|e| TlsError::Pem {
                        what: "--tls-client-ca",
                        reason: e.to_string(),
                    })?;
                }
                if roots.is_empty() {
                    return Err(TlsError::Pem {
                        what: "--tls-client-ca",
                        reason: "no PEM certificate in the file".into(),
                    });
                }
                let verifier: Arc<dyn ClientCertVerifier> =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider,
                    )
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                let lenient = Arc::new(VerifyAfterHandshake(verifier.clone()));
                (builder.with_client_cert_verifier(lenient), Some(verifier))
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(format!("--tls-cert/--tls-key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            verifier,
        })
    }
}

/// Asks for a client certificate and checks that the client holds its key (the handshake signature,
/// by the real verifier), but lets a certificate of an unknown issuer through the handshake: the chain
/// is verified right after it, and a rejected certificate gets `UNAUTHENTICATED` with the reason on
/// every RPC instead of an opaque TLS alert.
#[derive(Debug)]
struct VerifyAfterHandshake(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for VerifyAfterHandshake {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A TLS connection whose handshake finished, with what its client proved.
pub struct RemoteStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: RemotePeer,
}

impl Connected for RemoteStream {
    type ConnectInfo = RemotePeer;

    fn connect_info(&self) -> RemotePeer {
        self.peer.clone()
    }
}

impl AsyncRead for RemoteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for RemoteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections on `listener` and yields those whose TLS handshake finishes within
/// `handshake_timeout`; a connection that does not is closed. At most `max_pending` handshakes run at
/// once; connections beyond that are closed at once. Stops accepting when the stream is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Tls,
    handshake_timeout: Duration,
    max_pending: usize,
) -> ReceiverStream<io::Result<RemoteStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let pending = Arc::new(tokio::sync::Semaphore::new(max_pending.max(1)));
    let Tls { acceptor, verifier } = tls;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, addr) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // E.g. out of fds: wait a little rather than spin.
                    tracing::warn!("accepting a TCP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                tracing::warn!(%addr, "{max_pending} TLS handshakes already pending: connection closed");
                continue;
            };
            let (acceptor, verifier, tx) = (acceptor.clone(), verifier.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(
                            %addr,
                            "TLS handshake not finished within {handshake_timeout:?}: connection closed"
                        );
                        return;
                    }
                };
                let cert = client_cert(&stream, verifier.as_deref());
                if let ClientCert::Rejected(reason) = &cert {
                    tracing::info!(%addr, "client certificate rejected: {reason}");
                }
                let peer = RemotePeer {
                    addr: Some(addr),
                    cert,
                };
                let _ = tx
                    .send(Ok(RemoteStream {
                        inner: stream,
                        peer,
                    }))
                    .await;
            });
        }
    });
    ReceiverStream::new(rx)
}

fn client_cert(
    stream: &tokio_rustls::server::TlsStream<TcpStream>,
    verifier: Option<&dyn ClientCertVerifier>,
) -> ClientCert {
    let (_, conn) = stream.get_ref();
    let Some([end_entity, intermediates @ ..]) = conn.peer_certificates() else {
        return ClientCert::None;
    };
    let Some(verifier) = verifier else {
        return ClientCert::None;
    };
    let result = verifier
        .verify_client_cert(end_entity, intermediates, UnixTime::now())
        .map(|_| ())
        .map_err(|e| format!("{e} (faultd accepts certificates signed by its --tls-client-ca)"));
    ClientCert::from_verification(end_entity, result)
}

/// Binds `path` as a Unix socket with mode 0660, created that way (umask around `bind`), so there is no
/// window in which a wider mode is visible; with `group`, the socket's group is set to it so its
/// members can connect. A stale socket nobody answers on is replaced; any other file at `path` is left
/// alone and refused.
pub fn bind_unix(path: &Path, group: Option<u32>) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; faultd replaces only a stale socket, so move \
                     that file away or choose another --socket",
                    path.display()
                ),
            ));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another faultd is answering on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // SAFETY: umask only changes this process's file-creation mask; restored right after bind.
    let old = unsafe { libc::umask(0o117) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = listener?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(listener)
}
