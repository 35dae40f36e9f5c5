//! Shared helpers for the demo services `inventory-svc` and `order-svc`.
//!
//! The demo services exist to be faulted at the syscall level, so their I/O is shaped like the Go
//! originals they mirror (see `docs/FAULTBOX-FACTS.md` §3):
//!
//! * Socket I/O goes through plain `read(2)` / `write(2)` on the raw fd ([`read_fd`],
//!   [`write_all_fd`]). Rust's `TcpStream` uses `recv`/`send` (the `recvfrom`/`sendto` syscalls), which
//!   a `read`/`write` fault would not touch.
//! * File I/O goes through `openat`, `write`, `fsync` ([`open_append`], [`write_all_fd`], [`fsync_fd`]).
//! * None of these helpers retries on `EINTR`: std's `write_all`, `File::open` and `sync_all` do, and a
//!   fault that denies a syscall with `EINTR` would then make the service spin forever instead of failing.
//! * Logging to stdout is asynchronous ([`log_line`]): a `write` delay or deny fault on the service also
//!   hits its stdout writes, and that must neither slow down nor break request handling.
//! * Rust's runtime ignores `SIGPIPE`, so a `write(2)` to a socket whose peer has gone returns `EPIPE`
//!   instead of killing the service (std itself uses `send(MSG_NOSIGNAL)`).

use std::ffi::CString;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

/// Writes all of `buf` to `fd` with `write(2)`, looping over short writes.
///
/// Any error (including `EINTR`) is returned as is; a zero-length write is `WriteZero`.
pub fn write_all_fd(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a live, initialised slice for the duration of the call and `len` does not
        // exceed it; `write` does not retain the pointer. An invalid `fd` only yields EBADF.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // `n` is positive and at most `buf.len()`.
        buf = &buf[n.unsigned_abs()..];
    }
    Ok(())
}

/// One `read(2)` from `fd` into `buf`; `Ok(0)` is end of stream.
///
/// With `SO_RCVTIMEO` set on a socket (e.g. `TcpStream::set_read_timeout`), a timeout surfaces as an
/// error of kind `WouldBlock`.
pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, writable slice of `buf.len()` bytes for the duration of the call;
    // `read` does not retain the pointer. An invalid `fd` only yields EBADF.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

/// Opens `path` for appending (`O_WRONLY|O_CREAT|O_APPEND|O_CLOEXEC`, mode 0644) with one `openat`.
pub fn open_append(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC;
    let mode: libc::c_uint = 0o644;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; the variadic mode
    // argument is passed as the `c_uint` the C ABI expects after default promotion.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by a successful `open` and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One `fsync(2)` on `fd`, without retrying on `EINTR`.
pub fn fsync_fd(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fsync` takes no pointers; an invalid `fd` only yields EBADF.
    if unsafe { libc::fsync(fd) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The error text the Go demo services would print: the OS error string without Rust's
/// ` (os error N)` suffix, first letter lower-cased (`input/output error`, `connection refused`).
pub fn errno_text(err: &io::Error) -> String {
    let mut text = err.to_string();
    if let Some(at) = text.rfind(" (os error ") {
        text.truncate(at);
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// The value of environment variable `name`, or `default` when it is unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => default.to_owned(),
    }
}

/// Queues `line` for stdout; a background thread writes it (one `write(2)` per line).
///
/// Write errors are ignored and never panic (unlike `println!`), and a stalled stdout never blocks the
/// caller.
pub fn log_line(line: String) {
    static LOGGER: OnceLock<Sender<String>> = OnceLock::new();
    let tx = LOGGER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<String>();
        let spawned = std::thread::Builder::new()
            .name("stdout-log".into())
            .spawn(move || {
                for mut line in rx {
                    line.push('\n');
                    // Not `io::stdout()`: its `write_all` retries EINTR forever under a
                    // `write=deny("EINTR")` fault.
                    let _ = write_all_fd(libc::STDOUT_FILENO, line.as_bytes());
                }
            });
        // Without a logger thread, the receiver is dropped and sends fail silently: logging is
        // best effort.
        drop(spawned);
        tx
    });
    let _ = tx.send(line);
}

/// Writes one line to stderr with one `write(2)`, ignoring errors (for start-up and fatal messages).
pub fn eprint_line(line: &str) {
    // One `write(2)` of the whole line; not `io::stderr()`, whose `write_all` retries EINTR forever
    // under a `write=deny("EINTR")` fault.
    let _ = write_all_fd(libc::STDERR_FILENO, format!("{line}\n").as_bytes());
}

/// Accepts connections forever, each handled by `handle` on its own thread named `thread`; `service`
/// prefixes the log lines about accept and spawn failures.
pub fn serve_forever<H>(listener: &TcpListener, service: &str, thread: &str, handle: H)
where
    H: Fn(&TcpStream, SocketAddr) + Send + Sync + Clone + 'static,
{
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let handle = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name(thread.into())
                    .spawn(move || {
                        let peer = stream
                            .peer_addr()
                            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                        handle(&stream, peer);
                    });
                if let Err(e) = spawned {
                    log_line(format!("{service}: cannot spawn handler: {e}"));
                }
            }
            Err(e) => {
                log_line(format!("{service}: accept: {}", errno_text(&e)));
                // Avoid a hot loop on persistent errors such as EMFILE.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text_matches_go_style() {
        assert_eq!(
            errno_text(&io::Error::from_raw_os_error(libc::EIO)),
            "input/output error"
        );
        assert_eq!(
            errno_text(&io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            "connection refused"
        );
        assert_eq!(errno_text(&io::Error::other("Boom")), "boom");
    }

    #[test]
    fn wal_helpers_round_trip() {
        let dir = std::env::temp_dir().join(format!("faultd-demo-lib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.wal");
        for _ in 0..2 {
            let fd = open_append(&path).unwrap();
            use std::os::fd::AsRawFd;
            write_all_fd(fd.as_raw_fd(), b"line\n").unwrap();
            fsync_fd(fd.as_raw_fd()).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line\nline\n");
        let err = open_append(&dir.join("missing/x.wal")).unwrap_err();
        assert_eq!(errno_text(&err), "no such file or directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
