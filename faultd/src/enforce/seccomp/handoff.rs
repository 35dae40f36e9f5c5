//! Getting the listener fd from the launched child to faultd: `sendmsg` with `SCM_RIGHTS` over an
//! `AF_UNIX` `SOCK_SEQPACKET` pair.
//!
//! The pair is created in the parent before the fork, close-on-exec on both ends, and the child's end
//! is moved to a high fd number (see [`super::filter`] for why the number matters). The child sends
//! from `pre_exec` with [`send_listener`], which only issues raw syscalls on its stack. The parent's
//! answering thread waits in [`recv_listener`]; it learns that the child died before sending by EOF,
//! which needs the parent's own copy of the child end closed once the child exists.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The lowest fd number the child end of the pair is moved to (if the fd limit allows).
const HANDOFF_FD_MIN: RawFd = 600;

/// Control-message room for one fd, 8-byte aligned as `cmsghdr` wants.
#[repr(C, align(8))]
struct CmsgBuf([u8; 32]);

// SAFETY: CMSG_SPACE is pure arithmetic on its argument.
const CMSG_FD_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
const _: () = assert!(CMSG_FD_SPACE <= 32);

/// The two ends of the handoff channel.
#[derive(Debug)]
pub struct Channel {
    /// faultd's end: receives the listener.
    pub parent: OwnedFd,
    /// The child's end (same number in the forked child): sends it.
    pub child: OwnedFd,
}

/// A fresh close-on-exec socket pair, the child end at a high fd number.
pub fn channel() -> io::Result<Channel> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair writes two fds into the 2-element array we own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (parent, child) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own; the result (if any) is a new fd we then own.
    let high = unsafe { libc::fcntl(child.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HANDOFF_FD_MIN) };
    let child = if high >= 0 {
        // SAFETY: `high` is a fresh fd owned by nobody else; the low copy is dropped (closed).
        unsafe { OwnedFd::from_raw_fd(high) }
    } else {
        child // fd limit below HANDOFF_FD_MIN: keep the low number.
    };
    Ok(Channel { parent, child })
}

/// Sends `listener` over `sock` with [`super::filter::HANDOFF_SEND_FLAGS`].
///
/// # Safety
///
/// Async-signal-safe (no allocation, no locks): callable in a forked child. `sock` and `listener` must
/// be open fds.
pub unsafe fn send_listener(sock: RawFd, listener: RawFd) -> io::Result<()> {
    let mut byte = [b'L'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = CmsgBuf([0; 32]);
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_FD_SPACE as _;
    // SAFETY: msg_control points at CMSG_FD_SPACE aligned bytes, so the first header fits; CMSG_DATA
    // points inside it with room for one int.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), listener);
    }
    loop {
        // SAFETY: msg and everything it points to live on this stack frame.
        let n = unsafe { libc::sendmsg(sock, &msg, super::filter::HANDOFF_SEND_FLAGS) };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// How waiting for the listener ended.
#[derive(Debug)]
pub enum Handoff {
    /// The listener, close-on-exec in faultd.
    Listener(OwnedFd),
    /// The child went away without sending (EOF on the socket).
    ChildGone,
    /// `stop` became readable.
    Stopped,
    /// Nothing arrived in time.
    TimedOut,
}

/// Waits up to `timeout` for the listener on `sock`, or until `stop` is readable.
pub fn recv_listener(
    sock: BorrowedFd<'_>,
    stop: BorrowedFd<'_>,
    timeout: Duration,
) -> io::Result<Handoff> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Handoff::TimedOut);
        }
        let mut fds = [
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: fds is a 2-element array of pollfd we own.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        if fds[1].revents != 0 {
            return Ok(Handoff::Stopped);
        }
        if fds[0].revents == 0 {
            continue;
        }
        if let Some(handoff) = recv_fd(sock)? {
            return Ok(handoff);
        }
    }
}

/// One non-blocking receive; `None` when nothing was there after all.
fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<Option<Handoff>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = CmsgBuf([0; 32]);
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_FD_SPACE as _;
    let n = loop {
        // SAFETY: msg points at buffers on this frame that outlive the call.
        let n = unsafe {
            libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            break n;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(err),
        }
    };
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR checks msg_controllen.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if n == 0 && cmsg.is_null() {
        return Ok(Some(Handoff::ChildGone));
    }
    // SAFETY: a non-null header returned by CMSG_FIRSTHDR lies within our control buffer.
    let is_rights = !cmsg.is_null()
        && unsafe {
            (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        };
    if !is_rights {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "handoff message without a file descriptor",
        ));
    }
    // SAFETY: an SCM_RIGHTS header carries at least one int after CMSG_DATA.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>()) };
    // SAFETY: the kernel installed this fd in our table for us (close-on-exec); we own it now.
    Ok(Some(Handoff::Listener(unsafe { OwnedFd::from_raw_fd(fd) })))
}
