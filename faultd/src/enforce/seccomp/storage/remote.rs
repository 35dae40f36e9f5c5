//! Doing a call's I/O on the target's behalf: its fd through `pidfd_getfd` (a duplicate sharing the
//! target's open file description, so its offset moves as the kernel's would), its buffers through
//! `process_vm_readv`/`process_vm_writev`, in chunks of one preallocated buffer.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Bytes moved per round; a 1 GB request is moved through this buffer, never allocated.
pub(crate) const CHUNK: usize = 64 << 10;
/// Most iovecs a `readv`/`writev` may pass (the kernel's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// Buffers of one answering thread, allocated once.
pub(crate) struct Scratch {
    pub(crate) buf: Box<[u8]>,
    /// The call's buffers in the target: `(address, length)`.
    pub(crate) segs: Vec<(u64, u64)>,
    raw_iov: Vec<libc::iovec>,
    /// The last pidfd opened, by tgid (a service's writes mostly come from one process).
    pidfd: Option<(u32, OwnedFd)>,
}

impl Scratch {
    pub(crate) fn new() -> Scratch {
        Scratch {
            buf: vec![0; CHUNK].into_boxed_slice(),
            segs: Vec::with_capacity(IOV_MAX),
            raw_iov: Vec::with_capacity(IOV_MAX),
            pidfd: None,
        }
    }

    /// A duplicate of fd `fd` of process `pid`.
    pub(crate) fn getfd(&mut self, pid: u32, fd: RawFd) -> io::Result<OwnedFd> {
        if self.pidfd.as_ref().is_none_or(|(p, _)| *p != pid) {
            self.pidfd = None;
            // SAFETY: pidfd_open takes a pid and flags.
            let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a fresh fd nobody else owns.
            self.pidfd = Some((pid, unsafe { OwnedFd::from_raw_fd(rc as RawFd) }));
        }
        let pidfd = self.pidfd.as_ref().map_or(-1, |(_, f)| f.as_raw_fd());
        // SAFETY: pidfd_getfd takes two fds and flags.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                self.pidfd = None;
            }
            return Err(err);
        }
        // SAFETY: a fresh fd nobody else owns (close-on-exec is set by pidfd_getfd).
        Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
    }

    /// Fills `segs` with the call's buffers: one `(buf, count)`, or the iovec array at `iov`.
    pub(crate) fn load_segments(
        &mut self,
        tid: u32,
        vectored: bool,
        addr: u64,
        count: u64,
    ) -> io::Result<u64> {
        self.segs.clear();
        if !vectored {
            self.segs.push((addr, count));
            return Ok(count);
        }
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        if n > IOV_MAX {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.raw_iov.clear();
        self.raw_iov.resize(
            n,
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
        );
        let bytes = n * size_of::<libc::iovec>();
        // SAFETY: raw_iov holds n iovecs, i.e. `bytes` writable bytes.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(self.raw_iov.as_mut_ptr().cast(), bytes) };
        if read_mem(tid, addr, dst)? != bytes {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        let mut total: u64 = 0;
        for v in &self.raw_iov {
            total = total.saturating_add(v.iov_len as u64);
            self.segs.push((v.iov_base as u64, v.iov_len as u64));
        }
        Ok(total)
    }

    /// Writes the first `k` bytes of the call's buffers to `file` (at `offset`, or at its file
    /// position); the count written, or the error when nothing was.
    pub(crate) fn write_prefix(
        &mut self,
        tid: u32,
        file: &OwnedFd,
        offset: Option<u64>,
        k: u64,
    ) -> io::Result<u64> {
        let mut done: u64 = 0;
        while done < k {
            let want = (k - done).min(CHUNK as u64) as usize;
            let got = self.gather(tid, done, want)?;
            if got == 0 {
                break;
            }
            let chunk = &self.buf[..got];
            // SAFETY: chunk is readable for its length; file is open.
            let n = unsafe {
                match offset {
                    Some(off) => libc::pwrite(
                        file.as_raw_fd(),
                        chunk.as_ptr().cast(),
                        got,
                        (off + done) as libc::off_t,
                    ),
                    None => libc::write(file.as_raw_fd(), chunk.as_ptr().cast(), got),
                }
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                return if done == 0 { Err(err) } else { Ok(done) };
            }
            done += n as u64;
            if (n as usize) < got {
                break;
            }
        }
        Ok(done)
    }

    /// Reads up to `k` bytes from `file` (at `offset`, or at its file position) into the call's
    /// buffers; the count read, or the error when nothing was.
    pub(crate) fn read_prefix(
        &mut self,
        tid: u32,
        file: &OwnedFd,
        offset: Option<u64>,
        k: u64,
    ) -> io::Result<u64> {
        let mut done: u64 = 0;
        while done < k {
            let want = (k - done).min(CHUNK as u64) as usize;
            let buf = &mut self.buf[..want];
            // SAFETY: buf is writable for its length; file is open.
            let n = unsafe {
                match offset {
                    Some(off) => libc::pread(
                        file.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        want,
                        (off + done) as libc::off_t,
                    ),
                    None => libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), want),
                }
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                return if done == 0 { Err(err) } else { Ok(done) };
            }
            if n == 0 {
                break;
            }
            self.scatter(tid, done, n as usize)?;
            done += n as u64;
            if (n as usize) < want {
                break;
            }
        }
        Ok(done)
    }

    /// Copies `len` bytes starting at logical position `pos` of the call's buffers into `buf`.
    fn gather(&mut self, tid: u32, pos: u64, len: usize) -> io::Result<usize> {
        let mut got = 0;
        for (addr, at, n) in spans(&self.segs, pos, len as u64) {
            let dst = &mut self.buf[at..at + n];
            let r = read_mem(tid, addr, dst)?;
            got += r;
            if r < n {
                break;
            }
        }
        Ok(got)
    }

    /// Copies the first `len` bytes of `buf` to logical position `pos` of the call's buffers.
    fn scatter(&mut self, tid: u32, pos: u64, len: usize) -> io::Result<()> {
        for (addr, at, n) in spans(&self.segs, pos, len as u64) {
            if write_mem(tid, addr, &self.buf[at..at + n])? < n {
                return Err(io::Error::from_raw_os_error(libc::EFAULT));
            }
        }
        Ok(())
    }
}

/// The pieces of logical range `[pos, pos + len)` of `segs`: `(address, offset in the range, length)`.
fn spans(
    segs: &[(u64, u64)],
    pos: u64,
    len: u64,
) -> impl Iterator<Item = (u64, usize, usize)> + '_ {
    let mut start = 0u64;
    segs.iter().filter_map(move |&(addr, seg_len)| {
        let (seg_start, seg_end) = (start, start + seg_len);
        start = seg_end;
        let lo = pos.max(seg_start);
        let hi = (pos + len).min(seg_end);
        (lo < hi).then(|| {
            (
                addr + (lo - seg_start),
                (lo - pos) as usize,
                (hi - lo) as usize,
            )
        })
    })
}

fn read_mem(tid: u32, addr: u64, dst: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: dst.len(),
    };
    // SAFETY: local points at dst, writable for its length; the remote side is the target's memory.
    let n = unsafe { libc::process_vm_readv(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn write_mem(tid: u32, addr: u64, src: &[u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: src.as_ptr().cast_mut().cast(),
        iov_len: src.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: src.len(),
    };
    // SAFETY: local points at src, readable for its length; the remote side is the target's memory.
    let n = unsafe { libc::process_vm_writev(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `fstat` of an fd we own.
pub(crate) fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one stat into st.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Whether a stat is of a regular file.
pub(crate) fn is_regular(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cut_a_logical_range_across_segments() {
        let segs = [(1000, 4), (2000, 0), (3000, 6)];
        let got: Vec<_> = spans(&segs, 2, 5).collect();
        assert_eq!(got, [(1002, 0, 2), (3000, 2, 3)]);
        assert_eq!(spans(&segs, 10, 5).count(), 0);
        let all: Vec<_> = spans(&segs, 0, 10).collect();
        assert_eq!(all, [(1000, 0, 4), (3000, 4, 6)]);
    }
}
