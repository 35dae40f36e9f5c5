//! Child reaping for the whole process.
//!
//! faultd is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a service's double-forked grandchildren are
//! reparented to faultd instead of init, so nothing of a session escapes to pid 1 while faultd runs.
//! One thread reaps every child with `waitpid(-1)` and hands the status of the processes someone asked
//! about to them. Because it reaps every child, a process that hosts the engine must not wait for its
//! own children through other means (faultd and faultctl do not).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
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

    fn run(&self) {
        loop {
            let mut raw = 0;
            // SAFETY: waitpid writes the status into `raw`, a valid i32.
            let pid = unsafe { libc::waitpid(-1, &mut raw, 0) };
            if pid < 0 {
                // ECHILD: no children right now; new ones appear when sessions start.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
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
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
