//! Child reaping for the whole process.
//!
//! faultd is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a service's double-forked grandchildren are
//! reparented to faultd instead of init, so nothing of a session escapes to pid 1 while faultd runs.
//! One thread reaps every child with `waitpid(-1)` and hands the status of the processes someone asked
//! about to them; it waits while a child is being spawned ([`Reaper::spawning`]). Because it reaps every child, a process that hosts the engine must not wait for its
//! own children through other means (faultd and faultctl do not).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::trace::ExitStatus;

/// Statuses nobody asked for yet are kept (for a pid registered just after it exited) up to this many.
const UNCLAIMED_LIMIT: usize = 4096;

#[derive(Default)]
struct State {
    waiting: HashMap<i32, oneshot::Sender<ExitStatus>>,
    unclaimed: HashMap<i32, ExitStatus>,
}

/// The process-wide reaper.
pub(crate) struct Reaper {
    state: Mutex<State>,
    spawning: Mutex<()>,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

impl Reaper {
    /// The reaper, started (and faultd made a subreaper) on first use.
    pub(crate) fn global() -> &'static Reaper {
        REAPER.get_or_init(|| {
            // SAFETY: prctl with integer arguments has no memory-safety preconditions.
            if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
                tracing::warn!(
                    "could not become a child subreaper: {}",
                    std::io::Error::last_os_error()
                );
            }
            std::thread::Builder::new()
                .name("reaper".into())
                .spawn(|| Reaper::global().run())
                .expect("spawn the reaper thread");
            Reaper {
                state: Mutex::new(State::default()),
                spawning: Mutex::new(()),
            }
        })
    }

    /// A receiver for the exit status of child `pid` (immediate if it already ended).
    pub(crate) fn watch(&self, pid: i32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        // A status of an earlier process with the same (since reused) pid is stale when `pid` runs now.
        let fresh = |_: &ExitStatus| !std::path::Path::new(&format!("/proc/{pid}")).exists();
        match state.unclaimed.remove(&pid).filter(fresh) {
            Some(status) => {
                let _ = tx.send(status);
            }
            None => {
                state.waiting.insert(pid, tx);
            }
        }
        rx
    }

    /// Holds off reaping while the caller spawns a child: `Command::spawn` waits for a child whose
    /// exec failed, and must find it still there (std panics when another thread reaped it first).
    pub(crate) fn spawning(&self) -> MutexGuard<'_, ()> {
        self.spawning.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        loop {
            // Wait, without reaping, until some child has exited...
            // SAFETY: siginfo_t is plain data; waitid writes one into `info`.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid with P_ALL and a valid siginfo_t pointer.
            if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) } < 0
            {
                // ECHILD: no children right now; new ones appear when sessions start.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            // ...then reap every exited child, unless a spawn is in progress (it may be waiting for
            // its own failed child: see `spawning`).
            let _no_spawn = self.spawning();
            loop {
                let mut raw = 0;
                // SAFETY: waitpid writes the status into `raw`, a valid i32.
                let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                self.deliver(pid, raw);
            }
        }
    }

    fn deliver(&self, pid: i32, raw: i32) {
        let status = if libc::WIFSIGNALED(raw) {
            ExitStatus::Signal(libc::WTERMSIG(raw))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(raw))
        };
        let mut state = self.lock();
        match state.waiting.remove(&pid) {
            Some(tx) => {
                let _ = tx.send(status);
            }
            None => {
                if state.unclaimed.len() >= UNCLAIMED_LIMIT {
                    state.unclaimed.clear();
                }
                state.unclaimed.insert(pid, status);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
