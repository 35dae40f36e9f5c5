//! A network namespace per session, and where faultd's own sockets for a session come from.
//!
//! A session whose services may be isolated gets a fresh network namespace with only loopback, up:
//! fixed ports (5432, 8080) never collide with the host or another session. A dedicated thread
//! `unshare`s into it and stays there as the session's socket factory: every socket faultd opens for
//! the session (healthchecks, steps, protocol proxies) is created on that thread, so it lives in the
//! namespace, and is then used from any tokio worker. The launcher joins services to it with `setns`
//! before `exec`. Nothing is mounted: the namespace lives while the thread, an fd or a process of the
//! session holds it, so it ends with the session, even when faultd is killed.
//!
//! [`Net`] is what the rest of faultd holds: the session's namespace, or the host's network.
//! Healthchecks and steps find it in a task-local ([`Net::scope`], [`Net::current`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, mpsc};

use tokio::net::{TcpSocket, TcpStream};

pub(crate) mod ports;

/// Asks the namespace thread for one socket of a family; answered with the socket or the OS error.
type SocketRequest = (
    libc::c_int,
    tokio::sync::oneshot::Sender<io::Result<OwnedFd>>,
);

/// A network namespace of its own: the fd that names it and the thread that creates sockets in it.
pub(crate) struct NetNs {
    /// `/proc/thread-self/ns/net` of the namespace thread, for `setns` in launched services.
    fd: OwnedFd,
    /// The namespace thread's inbox; the thread ends when this is dropped.
    requests: mpsc::Sender<SocketRequest>,
    /// The namespace's inode (as in `/proc/<pid>/ns/net`), to name it in logs and tests.
    inode: u64,
}

impl fmt::Debug for NetNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}]", self.inode)
    }
}

impl NetNs {
    /// A fresh namespace with loopback up, and its socket thread. Blocks briefly (a thread start, an
    /// `unshare`, an ioctl).
    pub(crate) fn create() -> io::Result<NetNs> {
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<(OwnedFd, u64)>>();
        let (tx, rx) = mpsc::channel::<SocketRequest>();
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                let entered = enter_new();
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if ok {
                    for (family, answer) in rx {
                        let _ = answer.send(new_socket(family));
                    }
                }
            })?;
        let (fd, inode) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the namespace thread stopped"))??;
        Ok(NetNs {
            fd,
            requests: tx,
            inode,
        })
    }

    /// A duplicate of the namespace's fd, for a launched service's `setns`.
    pub(crate) fn fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// The namespace's inode number.
    pub(crate) fn inode(&self) -> u64 {
        self.inode
    }

    /// A new non-blocking TCP socket of `family` (`AF_INET`, `AF_INET6`) in the namespace.
    async fn socket(&self, family: libc::c_int) -> io::Result<OwnedFd> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.requests
            .send((family, tx))
            .map_err(|_| io::Error::other("the namespace thread stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the namespace thread stopped"))?
    }
}

/// On the calling thread: a new network namespace with loopback up; its fd and inode.
fn enter_new() -> io::Result<(OwnedFd, u64)> {
    // SAFETY: unshare has no memory-safety preconditions; it affects only this thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let file = std::fs::File::open("/proc/thread-self/ns/net")?;
    let inode = std::os::unix::fs::MetadataExt::ino(&file.metadata()?);
    loopback_up()?;
    Ok((file.into(), inode))
}

/// Sets `lo` up in the calling thread's network namespace (`SIOCSIFFLAGS`).
fn loopback_up() -> io::Result<()> {
    /// `struct ifreq` with the flags member of its union.
    #[repr(C)]
    struct IfReqFlags {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let sock = new_socket_of(libc::AF_INET, libc::SOCK_DGRAM)?;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: req is a valid ifreq-sized buffer for both calls; the socket is open.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A non-blocking, close-on-exec TCP socket in the calling thread's namespace.
fn new_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    new_socket_of(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK)
}

fn new_socket_of(family: libc::c_int, kind: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket has no memory-safety preconditions.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether faultd can give sessions a network namespace here: `Ok(what it does)` or `Err(why not)`.
/// Blocks briefly: it creates (and drops) one namespace.
pub(crate) fn availability() -> Result<String, String> {
    match NetNs::create() {
        Ok(_) => Ok(
            "each session gets its own network namespace with loopback up, so fixed ports \
             never collide with the host or another session."
                .into(),
        ),
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::EPERM) => {
                    "faultd lacks CAP_SYS_ADMIN (it is not root), which creating and entering a \
                     network namespace needs; a user namespace cannot be entered by a multi-threaded \
                     daemon"
                        .to_owned()
                }
                Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                    "the kernel was built without network namespaces (CONFIG_NET_NS)".to_owned()
                }
                _ => format!("creating a network namespace failed: {e}"),
            };
            Err(format!(
                "{why}; sessions share the host network, and faultd refuses declared ports other \
                 processes hold."
            ))
        }
    }
}

/// Where a session's network traffic lives: its own namespace, or the host's network.
#[derive(Debug, Clone, Default)]
pub(crate) struct Net(Option<Arc<NetNs>>);

tokio::task_local! {
    /// The network of the session whose healthcheck or step the task runs.
    static CURRENT: Net;
}

impl Net {
    /// The host's network.
    pub(crate) fn host() -> Net {
        Net(None)
    }

    /// A session namespace.
    pub(crate) fn isolated(ns: NetNs) -> Net {
        Net(Some(Arc::new(ns)))
    }

    /// The namespace, when isolated.
    pub(crate) fn namespace(&self) -> Option<&NetNs> {
        self.0.as_deref()
    }

    /// Runs `fut` with this network as [`Net::current`].
    pub(crate) async fn scope<F: Future>(&self, fut: F) -> F::Output {
        CURRENT.scope(self.clone(), fut).await
    }

    /// The network of the running healthcheck or step; the host's outside [`Net::scope`].
    pub(crate) fn current() -> Net {
        CURRENT.try_with(Net::clone).unwrap_or_default()
    }

    /// A TCP socket for `addr`'s family, in this network.
    pub(crate) async fn socket_for(&self, addr: &SocketAddr) -> io::Result<TcpSocket> {
        let Some(ns) = &self.0 else {
            return match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            };
        };
        let family = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        let fd = ns.socket(family).await?;
        // SAFETY: fd is a new, owned, non-blocking TCP socket.
        Ok(unsafe { TcpSocket::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) })
    }

    /// Connects to `addr` (`host:port`; the name resolved by the host) from this network, trying each
    /// address it resolves to in turn, as [`TcpStream::connect`] does.
    pub(crate) async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        if self.0.is_none() {
            return TcpStream::connect(addr).await;
        }
        let mut last = None;
        for target in tokio::net::lookup_host(addr).await? {
            let attempt = async { self.socket_for(&target).await?.connect(target).await };
            match attempt.await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr} resolves to no address"),
            )
        }))
    }
}

#[cfg(test)]
mod tests;
