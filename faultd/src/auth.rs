//! Who may call faultd, and as whom their services run.
//!
//! Every RPC (faultd.v1, gRPC health and reflection alike) passes an [`Auth`] interceptor, which
//! either refuses it or puts a [`Caller`] into the request's extensions for the handlers:
//!
//! - **Unix socket**: the peer's credentials (`SO_PEERCRED`). Root and faultd's own user are admitted
//!   and see every session; members of the configured group (`--group`) are admitted and their
//!   services run as themselves. Anyone else gets `PERMISSION_DENIED`.
//! - **TCP (TLS)**: a bearer token (`authorization: Bearer <token>`, tokens from `--token-file`,
//!   compared in constant time and never logged) or a client certificate signed by `--tls-client-ca`.
//!   Anything else gets `UNAUTHENTICATED`. Remote services run as `run_as_user` (default `nobody`)
//!   unless the token's line grants `root`.
//! - **In process** (faultctl's embedded engine): the process itself.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::launch::{self, RunAs};

/// Who is calling, as the handlers see it (`request.extensions().get::<Caller>()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The identity sessions are owned by.
    pub principal: Principal,
    /// Sees and operates every session (root, faultd's own user, a token granted `root`).
    pub admin: bool,
    /// The user this caller's services run as; `None`: as faultd itself.
    pub run_as: Option<RunAs>,
}

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A local process, by its peer credentials on the Unix socket (or faultd's own process).
    Local {
        /// Its user id.
        uid: u32,
        /// Its group id.
        gid: u32,
    },
    /// A remote client that presented the token of this name.
    Token {
        /// The token's name in the token file.
        name: String,
    },
    /// A remote client with a client certificate signed by the configured CA.
    Certificate {
        /// The SHA-256 of the certificate (DER), hex.
        fingerprint: String,
    },
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Local { uid, gid } => write!(f, "uid {uid} gid {gid}"),
            Principal::Token { name } => write!(f, "token {name}"),
            Principal::Certificate { fingerprint } => write!(f, "certificate {fingerprint}"),
        }
    }
}

impl Caller {
    /// faultd's own process (the embedded engine, or faultd itself): admin, services as faultd.
    pub(crate) fn in_process() -> Caller {
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Caller {
            principal: Principal::Local { uid, gid },
            admin: true,
            run_as: None,
        }
    }

    /// Whether this caller may see and operate a session owned by `owner`.
    pub fn may_use(&self, owner: &Caller) -> bool {
        if self.admin {
            return true;
        }
        match (&self.principal, &owner.principal) {
            // One user, whatever group its process had.
            (Principal::Local { uid: a, .. }, Principal::Local { uid: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }

    /// The caller of `request`, as the [`Auth`] interceptor recorded it; named in the RPC's span.
    pub fn of<T>(request: &Request<T>) -> Result<Caller, Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("faultd could not tell who is calling"))?;
        tracing::Span::current().record("caller", tracing::field::display(&caller.principal));
        tracing::debug!("call");
        Ok(caller)
    }
}

/// Why the authentication configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read.
    #[error("cannot read the token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the token file is malformed.
    #[error("{path} line {line}: {reason}")]
    TokenLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the token itself).
        reason: String,
    },
    /// A group or user name does not exist.
    #[error("{0}")]
    Unknown(String),
}

/// Shortest token accepted from a token file.
pub const MIN_TOKEN_LEN: usize = 16;

/// One bearer token: its name, the SHA-256 of its value, and whether it grants root.
#[derive(Clone)]
pub struct Token {
    name: String,
    digest: [u8; 32],
    root: bool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the digest: it is as good as the token for an offline guess.
        write!(
            f,
            "Token({}{})",
            self.name,
            if self.root { ", root" } else { "" }
        )
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a token file: one token per line, as `TOKEN`, `NAME:TOKEN` or `NAME:TOKEN:root` (the last
/// grants root: that client's services run as root and it sees every session). Blank lines and lines
/// starting with `#` are skipped. Tokens are at least [`MIN_TOKEN_LEN`] characters, without `:` or
/// whitespace.
pub fn read_tokens(path: &Path) -> Result<Vec<Token>, AuthError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::TokenFile {
        path: shown.clone(),
        source,
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o004 != 0
        {
            tracing::warn!(file = %shown, "the token file is readable by every user: chmod 600 it");
        }
    }
    let mut tokens = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| AuthError::TokenLine {
            path: shown.clone(),
            line: i + 1,
            reason: reason.to_owned(),
        };
        let fields: Vec<&str> = line.split(':').collect();
        let (name, token, root) = match fields.as_slice() {
            [token] => (format!("line{}", i + 1), *token, false),
            [name, token] => ((*name).to_owned(), *token, false),
            [name, token, "root"] => ((*name).to_owned(), *token, true),
            [_, _, _] => return Err(bad("the third field may only be `root`")),
            _ => return Err(bad("expected TOKEN, NAME:TOKEN or NAME:TOKEN:root")),
        };
        if name.is_empty() {
            return Err(bad("the token's name is empty"));
        }
        if token.len() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
            return Err(bad(&format!(
                "a token needs at least {MIN_TOKEN_LEN} characters and no whitespace \
                 (e.g. `openssl rand -hex 32`)"
            )));
        }
        if tokens.iter().any(|t: &Token| t.name == name) {
            return Err(bad(&format!("the name {name:?} is used twice")));
        }
        tokens.push(Token {
            name,
            digest: sha256(token.as_bytes()),
            root,
        });
    }
    if tokens.is_empty() {
        return Err(AuthError::TokenLine {
            path: shown,
            line: 0,
            reason: "the file holds no token".to_owned(),
        });
    }
    Ok(tokens)
}

/// The gid of the group `name`.
pub fn group_id(name: &str) -> Result<u32, AuthError> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| AuthError::Unknown(format!("bad group name {name:?}")))?;
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: all-zero is a valid group struct; it is only read after success.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(AuthError::Unknown(format!(
            "there is no group {name:?} on this host (create it: groupadd {name})"
        )));
    }
    Ok(gr.gr_gid)
}

/// Who may use the Unix socket besides root and faultd's own user.
#[derive(Debug, Clone, Default)]
pub struct LocalPolicy {
    /// The admitted group: name and gid.
    pub group: Option<(String, u32)>,
}

/// How remote callers authenticate and run.
#[derive(Debug, Clone)]
pub struct RemotePolicy {
    /// Accepted bearer tokens (empty: none).
    pub tokens: Vec<Token>,
    /// Whether verified client certificates are accepted (`--tls-client-ca`).
    pub client_certs: bool,
    /// No authentication at all (loopback with `--insecure-loopback-no-auth`).
    pub insecure: bool,
    /// The user remote callers' services run as, unless their token grants root.
    pub run_as: RunAs,
}

/// What a TLS connection's client proved with its certificate, if it sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// No certificate.
    None,
    /// Signed by the configured CA; its SHA-256, hex.
    Verified(String),
    /// Sent but not acceptable, and why.
    Rejected(String),
}

impl ClientCert {
    /// Classifies a verification result of `cert` (DER).
    pub fn from_verification(cert: &[u8], result: Result<(), String>) -> ClientCert {
        match result {
            Ok(()) => ClientCert::Verified(hex(&sha256(cert))),
            Err(reason) => ClientCert::Rejected(reason),
        }
    }
}

/// The connection information of a remote (TLS) connection, in each request's extensions.
#[derive(Debug, Clone)]
pub struct RemotePeer {
    /// The client's address.
    pub addr: Option<std::net::SocketAddr>,
    /// Its certificate, if any.
    pub cert: ClientCert,
}

/// The interceptor every RPC of a listener passes.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The Unix socket: peer credentials.
    Unix(Arc<LocalPolicy>),
    /// A TCP listener: token or client certificate.
    Remote(Arc<RemotePolicy>),
    /// An in-memory transport in this process.
    InProcess,
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match self {
            Auth::InProcess => Ok(Caller::in_process()),
            Auth::Unix(policy) => local_caller(policy, &request),
            Auth::Remote(policy) => remote_caller(policy, &request),
        }
        .inspect_err(
            |refused| tracing::info!(code = ?refused.code(), "refused: {}", refused.message()),
        )?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

fn local_caller(policy: &LocalPolicy, request: &Request<()>) -> Result<Caller, Status> {
    let cred = request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .ok_or_else(|| {
            Status::permission_denied(
                "faultd could not read the caller's credentials on its socket",
            )
        })?;
    let (uid, gid) = (cred.uid(), cred.gid());
    let principal = Principal::Local { uid, gid };
    // SAFETY: geteuid has no preconditions.
    let own = unsafe { libc::geteuid() };
    if uid == 0 || uid == own {
        return Ok(Caller {
            principal,
            admin: true,
            run_as: None,
        });
    }
    if let Some((name, group)) = &policy.group {
        let user = RunAs::uid(uid, gid);
        if gid == *group || user.groups.contains(group) {
            return Ok(Caller {
                principal,
                admin: false,
                run_as: Some(user),
            });
        }
        return Err(Status::permission_denied(format!(
            "uid {uid} is not in the group {name}, which faultd admits besides root: ask an \
             administrator to run `usermod -aG {name} {}` (then log in again)",
            launch::user_name(uid)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| uid.to_string())
        )));
    }
    Err(Status::permission_denied(format!(
        "uid {uid} may not use faultd: only root is admitted on this socket (start faultd with \
         --group NAME to admit the members of a group)"
    )))
}

fn remote_caller(policy: &RemotePolicy, request: &Request<()>) -> Result<Caller, Status> {
    let unprivileged = |principal| Caller {
        principal,
        admin: false,
        run_as: Some(policy.run_as.clone()),
    };
    if let Some(value) = request.metadata().get("authorization") {
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated(
                    "the authorization header is not `Bearer <token>`: faultd accepts only bearer tokens",
                )
            })?;
        if policy.tokens.is_empty() && !policy.insecure {
            return Err(Status::unauthenticated(
                "this faultd accepts no bearer tokens (it has no --token-file); use a client certificate",
            ));
        }
        let digest = sha256(presented.as_bytes());
        // Every token is compared, each in constant time, so the timing tells nothing of which
        // (or whether one) matched.
        let mut matched: Option<&Token> = None;
        for token in &policy.tokens {
            if bool::from(token.digest.ct_eq(&digest)) {
                matched = Some(token);
            }
        }
        return match matched {
            Some(token) => Ok(Caller {
                principal: Principal::Token {
                    name: token.name.clone(),
                },
                admin: token.root,
                run_as: (!token.root).then(|| policy.run_as.clone()),
            }),
            None if policy.insecure => Ok(unprivileged(Principal::Token {
                name: "insecure-loopback".into(),
            })),
            None => Err(Status::unauthenticated(
                "the bearer token is not one of faultd's (--token-file): check the token file you pass",
            )),
        };
    }
    match request.extensions().get::<RemotePeer>().map(|p| &p.cert) {
        Some(ClientCert::Verified(fingerprint)) if policy.client_certs => {
            Ok(unprivileged(Principal::Certificate {
                fingerprint: fingerprint.clone(),
            }))
        }
        Some(ClientCert::Rejected(reason)) if !policy.insecure => Err(Status::unauthenticated(
            format!("the client certificate is not accepted: {reason}"),
        )),
        _ if policy.insecure => Ok(unprivileged(Principal::Token {
            name: "insecure-loopback".into(),
        })),
        _ => Err(Status::unauthenticated(
            match (policy.tokens.is_empty(), policy.client_certs) {
                (false, true) => {
                    "faultd requires authentication: send `authorization: Bearer <token>` \
                              (faultctl --token-file) or a client certificate signed by its --tls-client-ca"
                }
                (false, false) => {
                    "faultd requires authentication: send `authorization: Bearer <token>` \
                               (faultctl --token-file FILE)"
                }
                _ => {
                    "faultd requires a client certificate signed by its --tls-client-ca \
                  (faultctl --tls-client-cert/--tls-client-key)"
                }
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "faultd-tokens-{}-{}",
            std::process::id(),
            sha256(text.as_bytes())[0]
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn token_files() {
        let p = file(
            "# ci tokens\n\nci:0123456789abcdef0123\nadmin:fedcba9876543210fedc:root\nabcdefabcdefabcdefab\n",
        );
        let tokens = read_tokens(&p).unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens[0].name, "ci");
        assert!(!tokens[0].root && tokens[1].root);
        assert_eq!(tokens[2].name, "line5");
        let short = file("ci:short\n");
        let e = read_tokens(&short).unwrap_err().to_string();
        assert!(e.contains("at least 16"), "{e}");
        assert!(!e.contains("short\n"), "{e}");
        let bad = file("a:0123456789abcdef0123:admin\n");
        assert!(
            read_tokens(&bad)
                .unwrap_err()
                .to_string()
                .contains("only be `root`")
        );
    }

    #[test]
    fn tokens_never_print() {
        let p = file("ci:0123456789abcdef0123\n");
        let shown = format!("{:?}", read_tokens(&p).unwrap());
        assert!(!shown.contains("0123456789"), "{shown}");
    }

    #[test]
    fn ownership() {
        let alice = Caller {
            principal: Principal::Local {
                uid: 1000,
                gid: 1000,
            },
            admin: false,
            run_as: None,
        };
        let alice_other_group = Caller {
            principal: Principal::Local { uid: 1000, gid: 5 },
            ..alice.clone()
        };
        let bob = Caller {
            principal: Principal::Local {
                uid: 1001,
                gid: 1000,
            },
            ..alice.clone()
        };
        assert!(alice.may_use(&alice_other_group));
        assert!(!bob.may_use(&alice));
        assert!(Caller::in_process().may_use(&bob));
    }
}
