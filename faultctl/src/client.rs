//! How faultctl reaches faultd: `--daemon unix:///path`, `--daemon http://host:port`, or, without
//! `--daemon`, the local daemon's socket when it answers, else an engine embedded in this process.
//!
//! A remote daemon (`https://`) authenticates its clients: faultctl sends `authorization: Bearer
//! <token>` with `--token-file FILE` (its first token; `NAME:TOKEN` lines give TOKEN), and/or a client
//! certificate with `--tls-client-cert`/`--tls-client-key`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use faultd_proto::DEFAULT_SOCKET;
use faultd_proto::v1::ProbeRequest;
use faultd_proto::v1::faultd_client::FaultdClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long the default socket gets to answer `Probe` before faultctl falls back to embedded mode.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// What faultctl is talking to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A daemon on a Unix socket.
    Unix(PathBuf),
    /// A daemon over plain TCP (`http://host:port`, e.g. behind a TLS-terminating proxy).
    Tcp(String),
    /// A daemon over TLS (`https://host:port`; faultd `--listen` with `--tls-cert`/`--tls-key`).
    Tls(String),
    /// The engine running inside this process (`--daemon embedded`, or no daemon answered).
    Embedded,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "faultd at unix://{}", p.display()),
            Target::Tcp(u) | Target::Tls(u) => write!(f, "faultd at {u}"),
            Target::Embedded => write!(f, "the faultd engine embedded in faultctl"),
        }
    }
}

/// Why faultctl could not reach faultd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--daemon` is not `unix://`, `http://` or `https://`.
    #[error(
        "unsupported --daemon address `{0}`: use unix:///path/to/faultd.sock, https://host:port, http://host:port or embedded"
    )]
    BadAddress(String),
    /// `https://` without the certificate that signed the daemon's.
    #[error(
        "--daemon {0}: set {CA_ENV}=/path/to/ca.pem to the certificate that signed faultd's --tls-cert (faultctl trusts no other)"
    )]
    NoCa(String),
    /// The CA certificate file could not be read.
    #[error("cannot read the CA certificate {path} ({CA_ENV}): {reason}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Connecting failed.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// Where.
        target: String,
        /// Why: the innermost cause.
        reason: String,
    },
    /// The local daemon runs but does not admit this user.
    #[error(
        "faultd runs here ({socket}) but does not admit you: {reason}. To run without it: \
         --daemon embedded"
    )]
    Denied {
        /// The socket.
        socket: String,
        /// What the kernel or the daemon said.
        reason: String,
    },
    /// The token file or client certificate could not be used.
    #[error("{0}")]
    Credentials(String),
    /// The embedded engine could not start.
    #[cfg(feature = "embedded")]
    #[error(
        "no faultd daemon answered on {socket} and the embedded engine could not start: {source}"
    )]
    Embedded {
        /// The socket that was tried.
        socket: &'static str,
        /// Why the engine failed.
        source: faultd::Error,
    },
    /// Embedded mode was asked for (or no daemon answered) in a build without the engine.
    #[error(
        "{}this faultctl was built without the embedded engine (cargo feature `embedded`, off with \
         --no-default-features): start faultd and pass --daemon unix:///path/to/faultd.sock or \
         https://host:port, or install the default build",
        if *asked { String::new() } else { format!("no faultd daemon answered on {socket}, and ") }
    )]
    NoEmbedded {
        /// Whether `--daemon embedded` was given (rather than falling back to it).
        asked: bool,
        /// The default socket that was tried.
        socket: &'static str,
    },
}

/// What faultctl proves to a remote daemon.
#[derive(Clone, Default)]
pub struct Credentials {
    /// `authorization` metadata sent with every RPC.
    bearer: Option<MetadataValue<Ascii>>,
    /// Client certificate and key (PEM), for mutual TLS.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Credentials")
            .field("bearer", &self.bearer.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

impl Credentials {
    /// From `--token-file` (the first token in it; a `NAME:TOKEN[:root]` line gives TOKEN) and
    /// `--tls-client-cert`/`--tls-client-key`.
    pub fn load(
        token_file: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Credentials, ClientError> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| ClientError::Credentials(format!("cannot read {}: {e}", p.display())))
        };
        let bearer = match token_file {
            None => None,
            Some(path) => {
                let text = String::from_utf8(read(path)?).map_err(|_| {
                    ClientError::Credentials(format!("{} is not UTF-8 text", path.display()))
                })?;
                let token = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| {
                        let fields: Vec<&str> = l.split(':').collect();
                        match fields.as_slice() {
                            [token] | [_, token] | [_, token, _] => *token,
                            _ => l,
                        }
                    })
                    .ok_or_else(|| {
                        ClientError::Credentials(format!("{} holds no token", path.display()))
                    })?;
                Some(
                    format!("Bearer {token}")
                        .parse::<MetadataValue<Ascii>>()
                        .map_err(|_| {
                            ClientError::Credentials(format!(
                                "the token in {} has characters a header cannot carry",
                                path.display()
                            ))
                        })?,
                )
            }
        };
        let identity = match (client_cert, client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => {
                return Err(ClientError::Credentials(
                    "--tls-client-cert and --tls-client-key go together".into(),
                ));
            }
        };
        Ok(Credentials { bearer, identity })
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

/// A channel to faultd that sends faultctl's credentials with every RPC.
pub type DaemonChannel = InterceptedService<Channel, Credentials>;
/// A faultd client over a [`DaemonChannel`].
pub type DaemonClient = FaultdClient<DaemonChannel>;

/// A client of `channel` sending `credentials`.
pub fn daemon_client(channel: Channel, credentials: Credentials) -> DaemonClient {
    FaultdClient::with_interceptor(channel, credentials)
}

/// A connected client and what it is connected to.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The gRPC client.
    pub client: DaemonClient,
    /// What it talks to.
    pub target: Target,
}

/// The environment variable naming the PEM certificate that signed a remote daemon's TLS certificate.
pub const CA_ENV: &str = "FAULTCTL_CA_CERT";

/// Connects as asked by `--daemon` (`unix:///path`, `http://host:port` or `embedded`), or, when
/// `None`, to the local daemon if its socket answers, else to an embedded engine. `credentials` go
/// with every RPC (the token) and into the TLS handshake (the client certificate).
pub async fn connect(
    daemon: Option<&str>,
    credentials: Credentials,
) -> Result<Connection, ClientError> {
    let target = match daemon {
        Some(addr) => parse_target(addr)?,
        None => {
            let socket = Path::new(DEFAULT_SOCKET);
            if let Some(channel) = answering_socket(socket).await? {
                return Ok(Connection {
                    client: daemon_client(channel, credentials),
                    target: Target::Unix(socket.to_owned()),
                });
            }
            Target::Embedded
        }
    };
    let connect_error = |e: tonic::transport::Error| ClientError::Connect {
        target: daemon.unwrap_or_default().to_owned(),
        reason: root_cause(&e),
    };
    let channel = match &target {
        Target::Unix(path) => unix_channel(path).await.map_err(connect_error)?,
        Target::Tcp(url) => Endpoint::from_shared(url.clone())
            .map_err(|_| ClientError::BadAddress(url.clone()))?
            .connect()
            .await
            .map_err(connect_error)?,
        Target::Tls(url) => {
            let ca = std::env::var_os(CA_ENV).ok_or_else(|| ClientError::NoCa(url.clone()))?;
            let pem = std::fs::read(&ca).map_err(|e| ClientError::Ca {
                path: ca.to_string_lossy().into_owned(),
                reason: e.to_string(),
            })?;
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem));
            if let Some((cert, key)) = &credentials.identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            Endpoint::from_shared(url.clone())
                .map_err(|_| ClientError::BadAddress(url.clone()))?
                .tls_config(tls)
                .map_err(connect_error)?
                .connect()
                .await
                .map_err(connect_error)?
        }
        Target::Embedded => embedded_channel(daemon.is_some()).await?,
    };
    Ok(Connection {
        client: daemon_client(channel, credentials),
        target,
    })
}

/// The engine running in this process behind an in-memory transport.
#[cfg(feature = "embedded")]
async fn embedded_channel(_asked: bool) -> Result<Channel, ClientError> {
    faultd::embedded::channel()
        .await
        .map_err(|source| ClientError::Embedded {
            socket: DEFAULT_SOCKET,
            source,
        })
}

/// A thin build has no engine to embed: say so, and what to do instead.
#[cfg(not(feature = "embedded"))]
async fn embedded_channel(asked: bool) -> Result<Channel, ClientError> {
    Err(ClientError::NoEmbedded {
        asked,
        socket: DEFAULT_SOCKET,
    })
}

/// How long faultd gets to answer the version check's `Probe`.
const VERSION_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The warning to print when the daemon at `target` reports `daemon_version` (ProbeResponse's
/// `faultd_version`) and this faultctl is `ours`; `None` when they match.
pub fn version_warning(target: &Target, daemon_version: &str, ours: &str) -> Option<String> {
    let daemon_version = daemon_version.trim();
    if daemon_version == ours {
        return None;
    }
    let theirs = if daemon_version.is_empty() {
        "does not report its version".to_owned()
    } else {
        format!("is {daemon_version}")
    };
    Some(format!(
        "warning: {target} {theirs}, this faultctl is {ours}; install matching versions"
    ))
}

impl Connection {
    /// Asks the daemon its version and warns on stderr when it differs from this faultctl's. The
    /// embedded engine is this build; a daemon that does not answer is left to the run's own errors.
    pub async fn warn_on_version_mismatch(&self) {
        if self.target == Target::Embedded {
            return;
        }
        let mut client = self.client.clone();
        let probe = client.probe(ProbeRequest {});
        if let Ok(Ok(answer)) = tokio::time::timeout(VERSION_PROBE_TIMEOUT, probe).await
            && let Some(warning) = version_warning(
                &self.target,
                &answer.get_ref().faultd_version,
                crate::VERSION,
            )
        {
            eprintln!("{warning}");
        }
    }

    /// Whether the engine gives each session a network namespace of its own: asked of a daemon (its
    /// probe is made once), probed here for the embedded engine (one namespace created and dropped,
    /// without the backends' slower probe).
    pub async fn isolates_sessions(&self) -> bool {
        #[cfg(feature = "embedded")]
        if self.target == Target::Embedded {
            return tokio::task::spawn_blocking(|| {
                faultd::probe::NetworkIsolation::probe().available
            })
            .await
            .unwrap_or(false);
        }
        let mut client = self.client.clone();
        let probe = client.probe(ProbeRequest {});
        matches!(
            tokio::time::timeout(VERSION_PROBE_TIMEOUT, probe).await,
            Ok(Ok(answer)) if answer.get_ref().network.as_ref().is_some_and(|n| n.available)
        )
    }
}

/// The innermost error of a chain (transport errors repeat their causes in their messages).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Parses `unix:///path`, `https://host:port`, `http://host:port` or `embedded`.
pub fn parse_target(addr: &str) -> Result<Target, ClientError> {
    if addr == "embedded" {
        return Ok(Target::Embedded);
    }
    if let Some(path) = addr.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(ClientError::BadAddress(addr.to_owned()));
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    if addr.starts_with("https://") && addr.len() > "https://".len() {
        return Ok(Target::Tls(addr.to_owned()));
    }
    if addr.starts_with("http://") && addr.len() > "http://".len() {
        return Ok(Target::Tcp(addr.to_owned()));
    }
    Err(ClientError::BadAddress(addr.to_owned()))
}

async fn unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    // The URI is required by tonic but unused: every connection goes to the socket.
    Endpoint::from_static("http://faultd.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// A channel to the daemon on `socket`, if it exists and answers `Probe` quickly.
async fn answering_socket(socket: &Path) -> Result<Option<Channel>, ClientError> {
    if !socket.exists() {
        return Ok(None);
    }
    // A daemon that runs but refuses this user is an answer too: falling back to an engine of one's
    // own would hide it (and run without what the daemon may do).
    let denied = |reason: String| ClientError::Denied {
        socket: socket.display().to_string(),
        reason,
    };
    if let Err(e) = std::os::unix::net::UnixStream::connect(socket)
        && e.kind() == std::io::ErrorKind::PermissionDenied
    {
        return Err(denied(format!(
            "the socket is not open to you ({e}); ask its admin to add you to faultd's group \
             (usermod -aG faultd $USER, then log in again)"
        )));
    }
    let attempt = async {
        let Ok(channel) = unix_channel(socket).await else {
            return Ok(None);
        };
        match FaultdClient::new(channel.clone())
            .probe(ProbeRequest {})
            .await
        {
            Ok(_) => Ok(Some(channel)),
            Err(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated) => {
                Err(denied(s.message().to_owned()))
            }
            Err(_) => Ok(None),
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or(Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_of_another_version_is_named_with_both_versions() {
        let target = Target::Unix("/run/faultd/faultd.sock".into());
        assert_eq!(
            version_warning(&target, "0.1.0 (abc123)", "0.1.0 (abc123)"),
            None
        );
        assert_eq!(
            version_warning(&target, "0.1.0 (abc123)", "0.1.0 (def456)").as_deref(),
            Some(
                "warning: faultd at unix:///run/faultd/faultd.sock is 0.1.0 (abc123), this faultctl \
                 is 0.1.0 (def456); install matching versions"
            )
        );
        let remote = Target::Tls("https://ci:7070".into());
        assert_eq!(
            version_warning(&remote, "0.2.0 (v0.2)", "0.1.0 (v0.1-dirty)").as_deref(),
            Some(
                "warning: faultd at https://ci:7070 is 0.2.0 (v0.2), this faultctl is 0.1.0 \
                 (v0.1-dirty); install matching versions"
            )
        );
        // A daemon that does not fill the field in is older than the field.
        assert_eq!(
            version_warning(&target, "", "0.1.0 (def456)").as_deref(),
            Some(
                "warning: faultd at unix:///run/faultd/faultd.sock does not report its version, \
                 this faultctl is 0.1.0 (def456); install matching versions"
            )
        );
    }

    /// faultd reports the same version string as faultctl when built from the same tree.
    #[cfg(feature = "embedded")]
    #[test]
    fn faultd_and_faultctl_of_one_tree_agree() {
        assert_eq!(crate::VERSION, faultd::VERSION);
    }

    #[test]
    fn daemon_addresses() {
        assert_eq!(
            parse_target("unix:///run/faultd/faultd.sock").unwrap(),
            Target::Unix("/run/faultd/faultd.sock".into())
        );
        assert_eq!(
            parse_target("http://10.0.0.1:7070").unwrap(),
            Target::Tcp("http://10.0.0.1:7070".into())
        );
        assert_eq!(parse_target("embedded").unwrap(), Target::Embedded);
        assert_eq!(
            parse_target("https://ci:7070").unwrap(),
            Target::Tls("https://ci:7070".into())
        );
        assert!(matches!(
            parse_target("tcp://x"),
            Err(ClientError::BadAddress(_))
        ));
        assert!(matches!(
            parse_target("unix://"),
            Err(ClientError::BadAddress(_))
        ));
    }

    /// faultd-proto's copy of the default socket is the one the daemon listens on.
    #[cfg(feature = "embedded")]
    #[test]
    fn the_default_socket_is_the_daemons() {
        assert_eq!(DEFAULT_SOCKET, faultd::DEFAULT_SOCKET);
    }

    #[test]
    fn the_thin_client_error_says_what_to_do() {
        let asked = ClientError::NoEmbedded {
            asked: true,
            socket: DEFAULT_SOCKET,
        }
        .to_string();
        assert!(
            asked.starts_with("this faultctl was built without the embedded engine"),
            "{asked}"
        );
        assert!(asked.contains("--daemon unix://"), "{asked}");
        let fallback = ClientError::NoEmbedded {
            asked: false,
            socket: DEFAULT_SOCKET,
        }
        .to_string();
        assert!(
            fallback.starts_with("no faultd daemon answered on /run/faultd/faultd.sock, and this"),
            "{fallback}"
        );
    }

    /// Without the engine, `--daemon embedded` is refused before anything starts.
    #[cfg(not(feature = "embedded"))]
    #[tokio::test]
    async fn embedded_is_refused_without_the_engine() {
        let e = connect(Some("embedded"), Credentials::default())
            .await
            .unwrap_err();
        assert!(
            matches!(e, ClientError::NoEmbedded { asked: true, .. }),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_does_not_answer() {
        assert!(matches!(
            answering_socket(Path::new("/nonexistent/faultd.sock")).await,
            Ok(None)
        ));
    }

    /// A socket nobody listens on (a daemon that died) is no answer either: faultctl falls back.
    #[tokio::test]
    async fn a_dead_socket_does_not_answer() {
        let dir = std::env::temp_dir().join(format!("faultctl-dead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("faultd.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let answer = answering_socket(&path).await;
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(answer, Ok(None)), "{answer:?}");
    }
}
