//! Storage faults beyond errno: `short()`, `lie()`, `volatile()` and `power_loss()`.
//!
//! The answering loop hands each call a storage action decides — and, while some file of the service
//! is under volatile tracking, each write, truncate, allocate or sync that proceeds — to [`StorageIo`],
//! which does the I/O on the target's behalf ([`remote`]) or records what the call overwrites
//! ([`volatile`]). [`Storage`] is the per-service state the session shares with its answering thread:
//! the tracker and how to kill every process of the service for a power loss.
//!
//! Model limits (documented in `faultd/README.md`): directory operations (create, rename, unlink),
//! `O_TRUNC` at open and `truncate(2)` by path count as durable at once; writes through `mmap`, `O_DIRECT`
//! and io_uring are not seen; a sync faultd lets through counts as durable when it enters.

pub(crate) mod remote;
pub mod volatile;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use self::remote::Scratch;
pub use self::volatile::{Limits, Restored, Tracker};
use crate::rules::{Action, PowerLossMode};

/// How long a power loss waits for the killed processes to be gone before restoring.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How to reach every process of a service.
#[derive(Debug, Clone)]
pub enum KillTarget {
    /// Its cgroup directory (`cgroup.kill`).
    Cgroup(PathBuf),
    /// Its process group.
    Group(i32),
}

/// One service's storage state: the volatile tracker and how to cut its power.
pub struct Storage {
    /// Held while a power loss kills and restores.
    cutting: Mutex<()>,
    tracker: Mutex<Tracker>,
    active: AtomicBool,
    kill: Mutex<Option<KillTarget>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("active", &self.active.load(Ordering::Relaxed))
            .field(
                "kill",
                &*self.kill.lock().unwrap_or_else(|e| e.into_inner()),
            )
            .finish_non_exhaustive()
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage::new(Limits::default())
    }
}

impl Storage {
    /// Nothing tracked yet.
    pub fn new(limits: Limits) -> Storage {
        Storage {
            cutting: Mutex::new(()),
            tracker: Mutex::new(Tracker::new(limits)),
            active: AtomicBool::new(false),
            kill: Mutex::new(None),
        }
    }

    /// Names how a power loss reaches the service's processes (at each launch).
    pub fn set_kill_target(&self, target: KillTarget) {
        *self.kill.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
    }

    /// Whether some file is tracked (every write and sync of the service is then looked at).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cuts the power: SIGKILL to every process of the service, waits until they are gone, then puts
    /// every tracked file back into its durable state (`draw` gives the torn mode's two numbers).
    pub fn power_loss(
        &self,
        mode: PowerLossMode,
        mut draw: impl FnMut() -> f64,
    ) -> Result<Restored, String> {
        let _cutting = self.cutting.lock().unwrap_or_else(|e| e.into_inner());
        self.kill_all()?;
        let torn = match mode {
            PowerLossMode::Drop => None,
            PowerLossMode::Torn => Some((draw(), draw())),
        };
        self.tracker().restore(torn)
    }

    /// Returns once no power loss is in progress (so a killed service's files are restored).
    pub fn settled(&self) {
        drop(self.cutting.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn kill_all(&self) -> Result<(), String> {
        let deadline = Instant::now() + KILL_WAIT;
        let target = self.kill.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let gone: Box<dyn Fn() -> bool> = match target {
            Some(KillTarget::Cgroup(dir)) => {
                std::fs::write(dir.join("cgroup.kill"), "1")
                    .map_err(|e| format!("cannot kill the service's cgroup: {e}"))?;
                let events = dir.join("cgroup.events");
                Box::new(move || {
                    std::fs::read_to_string(&events)
                        .map_or(true, |text| text.lines().any(|l| l == "populated 0"))
                })
            }
            Some(KillTarget::Group(pgid)) => {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                // SAFETY: as above; signal 0 only checks that the group still has a process.
                Box::new(move || unsafe { libc::kill(-pgid, 0) } != 0)
            }
            None => return Err("the service has no processes faultd knows of".into()),
        };
        while !gone() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the service's processes were still there {KILL_WAIT:?} after SIGKILL; \
                     nothing was restored"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// What the answering loop does with a call after [`StorageIo::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Let it run.
    Continue,
    /// It is done: return this value.
    Value(i64),
    /// Fail it with this errno.
    Errno(i32),
    /// The service was killed (a power loss); nothing to answer.
    Killed,
}

/// The effect of a storage action (or of tracking) on one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Effect {
    pub(crate) answer: Answer,
    /// Bytes asked for and transferred, for short and lie.
    pub(crate) io: Option<(u64, u64)>,
    /// The storage action did nothing (e.g. `short()` on a pipe): the call ran as if allowed.
    pub(crate) passed: bool,
}

impl Effect {
    fn go() -> Effect {
        Effect {
            answer: Answer::Continue,
            io: None,
            passed: false,
        }
    }
}

/// One intercepted call, as the storage code needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) tid: u32,
    pub(crate) pid: u32,
    pub(crate) name: &'a str,
    pub(crate) args: &'a [u64; 6],
}

/// What kind of storage call a syscall is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// write, pwrite64 (`offset` arg), writev (`vectored`).
    Write {
        vectored: bool,
        positioned: bool,
    },
    Read {
        vectored: bool,
        positioned: bool,
    },
    /// fsync, fdatasync, sync_file_range, syncfs, sync.
    Sync,
    Truncate,
    Fallocate,
    Other,
}

fn kind(name: &str) -> Kind {
    match name {
        "write" | "writev" | "pwrite64" => Kind::Write {
            vectored: name == "writev",
            positioned: name == "pwrite64",
        },
        "read" | "readv" | "pread64" => Kind::Read {
            vectored: name == "readv",
            positioned: name == "pread64",
        },
        "fsync" | "fdatasync" | "sync_file_range" | "syncfs" | "sync" => Kind::Sync,
        "ftruncate" => Kind::Truncate,
        "fallocate" => Kind::Fallocate,
        _ => Kind::Other,
    }
}

/// The storage side of one answering thread: its buffers.
pub(crate) struct StorageIo {
    scratch: Scratch,
}

impl StorageIo {
    pub(crate) fn new() -> StorageIo {
        StorageIo {
            scratch: Scratch::new(),
        }
    }

    /// Whether a call that proceeds under `action` needs looking at for volatile tracking.
    pub(crate) fn concerns(storage: &Storage, action: &Action, name: &str) -> bool {
        action.is_storage()
            || (storage.is_active()
                && matches!(action, Action::Allow | Action::Delay(_))
                && !matches!(kind(name), Kind::Read { .. } | Kind::Other))
    }

    /// Carries out `action` (a storage action, or a call that proceeds while tracking is active).
    /// `valid` says whether the notification is still pending; `draw` gives the rule's seeded numbers.
    pub(crate) fn handle(
        &mut self,
        storage: &Storage,
        action: &Action,
        call: Call<'_>,
        valid: &dyn Fn() -> bool,
        draw: &mut dyn FnMut() -> f64,
    ) -> Effect {
        let k = kind(call.name);
        match *action {
            Action::Short { fraction } => self.short(k, call, |n| fraction.of(n)),
            Action::Lie => self.lie(k, call),
            Action::PowerLoss { mode } => {
                match storage.power_loss(mode, draw) {
                    Ok(r) => tracing::info!(
                        files = r.files,
                        undone = r.undone,
                        kept = r.kept,
                        "power loss"
                    ),
                    Err(e) => tracing::warn!("power loss: {e}"),
                }
                Effect {
                    answer: Answer::Killed,
                    ..Effect::go()
                }
            }
            Action::Volatile => self.track(storage, k, call, true, valid),
            _ => self.track(storage, k, call, false, valid),
        }
    }

    fn short(&mut self, k: Kind, call: Call<'_>, take: impl Fn(u64) -> u64) -> Effect {
        let (write, vectored, positioned) = match k {
            Kind::Write {
                vectored,
                positioned,
            } => (true, vectored, positioned),
            Kind::Read {
                vectored,
                positioned,
            } => (false, vectored, positioned),
            _ => return passed(),
        };
        let a = call.args;
        let n = match self.scratch.load_segments(call.tid, vectored, a[1], a[2]) {
            Ok(n) => n,
            Err(e) => return errno(&e),
        };
        if n == 0 {
            return passed();
        }
        let file = match self.scratch.getfd(call.pid, a[0] as RawFd) {
            Ok(f) => f,
            Err(e) => return errno(&e),
        };
        // Only regular files: faultd's thread must never block on a pipe or socket.
        if !remote::fstat(file.as_raw_fd()).is_ok_and(|st| remote::is_regular(&st)) {
            return passed();
        }
        let k = take(n);
        let offset = positioned.then_some(a[3]);
        let done = if write {
            self.scratch.write_prefix(call.tid, &file, offset, k)
        } else {
            self.scratch.read_prefix(call.tid, &file, offset, k)
        };
        match done {
            Ok(done) => Effect {
                answer: Answer::Value(done as i64),
                io: Some((n, done)),
                passed: false,
            },
            Err(e) => errno(&e),
        }
    }

    fn lie(&mut self, k: Kind, call: Call<'_>) -> Effect {
        let a = call.args;
        match k {
            Kind::Sync => Effect {
                answer: Answer::Value(0),
                ..Effect::go()
            },
            Kind::Write {
                vectored,
                positioned,
            } => {
                let n = match self.scratch.load_segments(call.tid, vectored, a[1], a[2]) {
                    Ok(n) => n,
                    Err(e) => return errno(&e),
                };
                if !positioned {
                    // The file position moves as if written: a later write leaves a hole here.
                    let Ok(file) = self.scratch.getfd(call.pid, a[0] as RawFd) else {
                        return errno(&io::Error::from_raw_os_error(libc::EBADF));
                    };
                    // SAFETY: fcntl and lseek on an fd we own.
                    unsafe {
                        if libc::fcntl(file.as_raw_fd(), libc::F_GETFL) & libc::O_APPEND == 0 {
                            libc::lseek(file.as_raw_fd(), n as libc::off_t, libc::SEEK_CUR);
                        }
                    }
                }
                Effect {
                    answer: Answer::Value(n as i64),
                    io: Some((n, 0)),
                    passed: false,
                }
            }
            _ => passed(),
        }
    }

    /// Records what a proceeding call changes in a tracked file (starting to track it when `start`).
    fn track(
        &mut self,
        storage: &Storage,
        k: Kind,
        call: Call<'_>,
        start: bool,
        valid: &dyn Fn() -> bool,
    ) -> Effect {
        let a = call.args;
        if call.name == "sync" {
            if valid() {
                storage.tracker().synced_fs(None);
            }
            return Effect::go();
        }
        let Ok(file) = self.scratch.getfd(call.pid, a[0] as RawFd) else {
            return Effect::go();
        };
        let Ok(st) = remote::fstat(file.as_raw_fd()) else {
            return Effect::go();
        };
        // The write's length and position are read before taking the lock.
        let write = match k {
            Kind::Write {
                vectored,
                positioned,
            } => {
                let Ok(n) = self.scratch.load_segments(call.tid, vectored, a[1], a[2]) else {
                    return Effect::go();
                };
                let at = if positioned {
                    a[3]
                } else {
                    // SAFETY: fcntl and lseek on an fd we own.
                    unsafe {
                        if libc::fcntl(file.as_raw_fd(), libc::F_GETFL) & libc::O_APPEND != 0 {
                            st.st_size as u64
                        } else {
                            libc::lseek(file.as_raw_fd(), 0, libc::SEEK_CUR).max(0) as u64
                        }
                    }
                };
                Some((at, n))
            }
            _ => None,
        };
        let mut tracker = storage.tracker();
        // Checked under the lock: a power loss (which takes it after the kill) never sees a record
        // of a call that did not reach the kernel before the processes died.
        if !valid() {
            return Effect::go();
        }
        if call.name == "syncfs" {
            tracker.synced_fs(Some(st.st_dev));
        } else if let Some(id) = tracker.file(&st, file.as_raw_fd(), start) {
            match (k, write) {
                (Kind::Write { .. }, Some((at, n))) => tracker.write(id, at, n),
                (Kind::Truncate, _) => tracker.truncate(id, a[1]),
                (Kind::Fallocate, _) => tracker.fallocate(id, a[1] as i32, a[2]),
                (Kind::Sync, _) if call.name != "sync_file_range" => tracker.synced(id),
                _ => {}
            }
        }
        storage.active.store(!tracker.is_empty(), Ordering::Relaxed);
        Effect::go()
    }
}

fn passed() -> Effect {
    Effect {
        passed: true,
        ..Effect::go()
    }
}

fn errno(e: &io::Error) -> Effect {
    Effect {
        answer: Answer::Errno(e.raw_os_error().unwrap_or(libc::EIO)),
        ..Effect::go()
    }
}
