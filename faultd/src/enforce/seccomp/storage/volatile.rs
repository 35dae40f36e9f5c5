//! Volatile write-cache tracking: what a power loss would lose.
//!
//! Before each tracked change faultd lets through, the [`Tracker`] records how to undo it: the file's
//! length and the bytes the change overwrites (a write past the end, as in an append-only log, saves
//! no bytes at all). A successful sync of a file makes its changes durable (their undo records are
//! dropped). A power loss undoes the unsynced changes newest first — all of them (`drop`), or all but
//! a seeded prefix (`torn`, the last kept write possibly in part) — and syncs the result.
//!
//! Each tracked file is held open (read-write, a description of faultd's own), so renames do not lose
//! it. Saved bytes, records and files are bounded per service ([`Limits`]); past a bound tracking
//! stops, and a power loss says why it cannot restore instead of restoring something wrong.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::remote::{self, CHUNK};

/// Bounds of one service's tracking.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Overwritten bytes saved for undo, at most.
    pub saved_bytes: u64,
    /// Unsynced changes recorded, at most.
    pub records: usize,
    /// Files tracked, at most.
    pub files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            saved_bytes: 64 << 20,
            records: 1 << 20,
            files: 1024,
        }
    }
}

/// One unsynced change of a file, and how to undo it.
struct Undo {
    file: u32,
    /// The file's length before the change.
    old_len: u64,
    /// Where the change starts, and how many bytes it covers (for a write: its length).
    offset: u64,
    len: u64,
    /// What `[offset, offset + old.len())` held before the change.
    old: Box<[u8]>,
    /// A write (may survive in part in torn mode).
    write: bool,
}

struct File {
    fd: OwnedFd,
    dev: u64,
}

/// What a power loss did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Files put back.
    pub files: usize,
    /// Unsynced changes undone (a partly kept write counts as undone).
    pub undone: usize,
    /// Unsynced changes kept (torn mode).
    pub kept: usize,
}

/// The unsynced changes of one service's tracked files.
pub struct Tracker {
    limits: Limits,
    files: Vec<File>,
    by_id: HashMap<(u64, u64), u32>,
    log: Vec<Undo>,
    saved: u64,
    /// Why tracking stopped, once a bound was passed.
    overflow: Option<String>,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(limits: Limits) -> Tracker {
        Tracker {
            limits,
            files: Vec::new(),
            by_id: HashMap::new(),
            log: Vec::new(),
            saved: 0,
            overflow: None,
        }
    }

    /// Whether any file is tracked.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The tracked file `st` is (of the target's fd `dup`), started when `start` and new; `None` when
    /// untracked (or tracking stopped).
    pub fn file(&mut self, st: &libc::stat, dup: RawFd, start: bool) -> Option<u32> {
        let id = (st.st_dev, st.st_ino);
        if let Some(&i) = self.by_id.get(&id) {
            return Some(i);
        }
        if !start || self.overflow.is_some() || !remote::is_regular(st) {
            return None;
        }
        if self.files.len() >= self.limits.files {
            self.stop(format!(
                "more than {} files under volatile tracking",
                self.limits.files
            ));
            return None;
        }
        let fd = match reopen(dup) {
            Ok(fd) => fd,
            Err(e) => {
                self.stop(format!("cannot reopen a tracked file read-write: {e}"));
                return None;
            }
        };
        let i = self.files.len() as u32;
        self.files.push(File { fd, dev: st.st_dev });
        self.by_id.insert(id, i);
        Some(i)
    }

    /// Records a write of `len` bytes at `offset` of tracked file `file`, before it happens.
    pub fn write(&mut self, file: u32, offset: u64, len: u64) {
        self.record(file, offset, len, true);
    }

    /// Records a change of the file's length to `new_len` (ftruncate), before it happens.
    pub fn truncate(&mut self, file: u32, new_len: u64) {
        let Some(old_len) = self.len_of(file) else {
            return;
        };
        self.record(file, new_len, old_len.saturating_sub(new_len), false);
    }

    /// Records an fallocate of `[offset, offset + len)` with `mode`, before it happens: modes that
    /// change content (punch, zero, collapse, insert) save everything from `offset` to the end.
    pub fn fallocate(&mut self, file: u32, mode: i32, offset: u64) {
        let keeps_content = mode & !libc::FALLOC_FL_KEEP_SIZE == 0;
        let Some(old_len) = self.len_of(file) else {
            return;
        };
        let len = if keeps_content {
            0
        } else {
            old_len.saturating_sub(offset)
        };
        self.record(file, offset, len, false);
    }

    /// A successful sync of `file`: its changes so far are durable.
    pub fn synced(&mut self, file: u32) {
        self.forget(|u, _| u.file == file);
    }

    /// A successful `syncfs` of the filesystem `dev`, or a `sync` (`None`): every change on it is
    /// durable.
    pub fn synced_fs(&mut self, dev: Option<u64>) {
        self.forget(|u, files| dev.is_none_or(|d| files[u.file as usize].dev == d));
    }

    /// Puts every tracked file back into its durable state and syncs it. `torn` keeps a prefix: with
    /// `(u, v)` drawn uniformly from [0, 1), the first `floor(u × (n + 1))` of the `n` unsynced changes
    /// and, when the next one is a write, the first `floor(v × its length)` bytes of it.
    pub fn restore(&mut self, torn: Option<(f64, f64)>) -> Result<Restored, String> {
        if let Some(why) = &self.overflow {
            return Err(format!(
                "volatile tracking stopped earlier ({why}), so the durable state is unknown; \
                 nothing was restored"
            ));
        }
        let n = self.log.len();
        let (keep, partial) = match torn {
            None => (0, 0),
            Some((u, v)) => {
                let keep = ((u * (n + 1) as f64) as usize).min(n);
                let next = self.log.get(keep).map_or(0, |x| x.len);
                (keep, (v * next as f64) as u64)
            }
        };
        let mut undone = 0;
        let mut first_error = None;
        for (i, u) in self.log.iter().enumerate().skip(keep).rev() {
            let fd = self.files[u.file as usize].fd.as_raw_fd();
            let tail = (i == keep && u.write && partial > 0)
                .then(|| read_range(fd, u.offset, partial.min(u.len)))
                .transpose();
            let result = tail.and_then(|tail| {
                undo(fd, u)?;
                match tail {
                    Some(bytes) => write_at(fd, u.offset, &bytes),
                    None => Ok(()),
                }
            });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
            undone += 1;
        }
        for f in &self.files {
            // SAFETY: fsync on an fd we own.
            unsafe { libc::fsync(f.fd.as_raw_fd()) };
        }
        self.log.clear();
        self.saved = 0;
        match first_error {
            Some(e) => Err(format!("restoring a tracked file failed: {e}")),
            None => Ok(Restored {
                files: self.files.len(),
                undone,
                kept: keep,
            }),
        }
    }

    /// Unsynced changes recorded now.
    pub fn pending(&self) -> usize {
        self.log.len()
    }

    fn len_of(&mut self, file: u32) -> Option<u64> {
        match remote::fstat(self.files[file as usize].fd.as_raw_fd()) {
            Ok(st) => Some(st.st_size as u64),
            Err(e) => {
                self.stop(format!("cannot stat a tracked file: {e}"));
                None
            }
        }
    }

    fn record(&mut self, file: u32, offset: u64, len: u64, write: bool) {
        if self.overflow.is_some() {
            return;
        }
        let Some(old_len) = self.len_of(file) else {
            return;
        };
        if self.log.len() >= self.limits.records {
            self.stop(format!(
                "more than {} unsynced changes recorded",
                self.limits.records
            ));
            return;
        }
        let end = offset.saturating_add(len).min(old_len);
        let save = end.saturating_sub(offset);
        if self.saved + save > self.limits.saved_bytes {
            self.stop(format!(
                "more than {} bytes of overwritten data saved for undo",
                self.limits.saved_bytes
            ));
            return;
        }
        let fd = self.files[file as usize].fd.as_raw_fd();
        let old = match read_range(fd, offset, save) {
            Ok(old) => old,
            Err(e) => {
                self.stop(format!("cannot read what a write overwrites: {e}"));
                return;
            }
        };
        self.saved += save;
        self.log.push(Undo {
            file,
            old_len,
            offset,
            len,
            old,
            write,
        });
    }

    fn forget(&mut self, durable: impl Fn(&Undo, &[File]) -> bool) {
        let files = &self.files;
        let mut freed = 0;
        self.log.retain(|u| {
            let drop = durable(u, files);
            if drop {
                freed += u.old.len() as u64;
            }
            !drop
        });
        self.saved -= freed;
    }

    fn stop(&mut self, why: String) {
        tracing::warn!("volatile tracking stopped: {why}");
        self.overflow = Some(why);
        self.log = Vec::new();
        self.saved = 0;
    }
}

/// A read-write description of our own for the file behind `fd` (`/proc/self/fd/N`).
fn reopen(fd: RawFd) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{fd}\0");
    // SAFETY: path is NUL-terminated.
    let rc = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc) })
}

fn read_range(fd: RawFd, offset: u64, len: u64) -> io::Result<Box<[u8]>> {
    let mut out = vec![0u8; len as usize].into_boxed_slice();
    let mut done = 0usize;
    while done < out.len() {
        let want = (out.len() - done).min(CHUNK);
        // SAFETY: out[done..] is writable for `want` bytes.
        let n = unsafe {
            libc::pread(
                fd,
                out[done..].as_mut_ptr().cast(),
                want,
                (offset + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(out)
}

fn write_at(fd: RawFd, offset: u64, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < bytes.len() {
        // SAFETY: bytes[done..] is readable for its length.
        let n = unsafe {
            libc::pwrite(
                fd,
                bytes[done..].as_ptr().cast(),
                bytes.len() - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        if n <= 0 {
            return Err(io::Error::last_os_error());
        }
        done += n as usize;
    }
    Ok(())
}

fn undo(fd: RawFd, u: &Undo) -> io::Result<()> {
    write_at(fd, u.offset, &u.old)?;
    // SAFETY: ftruncate on an fd we own.
    if unsafe { libc::ftruncate(fd, u.old_len as libc::off_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, Write};

    fn tracked(t: &mut Tracker, f: &std::fs::File) -> u32 {
        let st = remote::fstat(f.as_raw_fd()).unwrap();
        t.file(&st, f.as_raw_fd(), true).unwrap()
    }

    fn scratch(name: &str) -> (std::path::PathBuf, std::fs::File) {
        let p = std::env::temp_dir().join(format!("faultd-volatile-{name}-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        (p, f)
    }

    #[test]
    fn drop_restores_the_synced_prefix_and_overwrites() {
        let (p, mut f) = scratch("drop");
        let mut t = Tracker::new(Limits::default());
        let id = tracked(&mut t, &f);
        t.write(id, 0, 5);
        f.write_all(b"hello").unwrap();
        t.synced(id);
        t.write(id, 5, 6);
        f.write_all(b" world").unwrap();
        t.write(id, 0, 2);
        f.rewind().unwrap();
        f.write_all(b"HE").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"HEllo world");
        assert_eq!(t.pending(), 2);
        let r = t.restore(None).unwrap();
        assert_eq!((r.undone, r.kept), (2, 0));
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn torn_keeps_a_prefix_and_part_of_the_next_write() {
        let (p, mut f) = scratch("torn");
        let mut t = Tracker::new(Limits::default());
        let id = tracked(&mut t, &f);
        for rec in [&b"aaaa"[..], b"bbbb", b"cccc"] {
            let at = f.stream_position().unwrap();
            t.write(id, at, 4);
            f.write_all(rec).unwrap();
        }
        t.truncate(id, 2);
        f.set_len(2).unwrap();
        // 4 changes: keep floor(0.25 × 5) = 1, then floor(0.8 × 4) = 3 bytes of the second write.
        t.restore(Some((0.25, 0.8))).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"aaaabbb");
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn past_its_bound_tracking_stops_and_restore_says_why() {
        let (p, mut f) = scratch("bound");
        f.write_all(&[7u8; 100]).unwrap();
        let mut t = Tracker::new(Limits {
            saved_bytes: 50,
            ..Limits::default()
        });
        let id = tracked(&mut t, &f);
        t.write(id, 0, 40);
        t.write(id, 40, 40);
        let why = t.restore(None).unwrap_err();
        assert!(why.contains("more than 50 bytes"), "{why}");
        let _ = std::fs::remove_file(p);
    }
}
