//! The engine: every session of this faultd, the host's capabilities and the lease keeper.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::auth::Caller;
use crate::cgroup::CgroupTree;
use crate::probe::{self, Capabilities};
use crate::reaper::Reaper;
use crate::session::{Session, SessionConfig, SessionSummary};

/// How often expired leases are looked for.
const LEASE_CHECK: Duration = Duration::from_millis(200);

/// Why an engine operation failed. The messages are meant for the person running the test.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such session or fault set.
    #[error("{0} not found")]
    NotFound(String),
    /// The request itself is wrong.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is fine but cannot be honoured in this session.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A service could not be started or did not become ready.
    #[error("failed to start services: {0}")]
    Start(String),
    /// The host refused something faultd needs.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Owns the sessions of one faultd (daemon or embedded).
pub struct Engine {
    capabilities: Capabilities,
    cgroups: Option<CgroupTree>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Who created each session: only they (and admins) see it.
    owners: Mutex<HashMap<String, Caller>>,
}

impl Engine {
    /// Probes the host, sweeps what a crashed faultd left behind, starts reaping children and the lease
    /// keeper. Must be called inside a tokio runtime.
    pub fn new() -> Result<Arc<Engine>, EngineError> {
        static ENGINES: AtomicU32 = AtomicU32::new(0);
        // Probe before the reaper starts: the probe waits for a child of its own.
        let capabilities = probe::probe();
        Reaper::global();
        let cgroups = match &capabilities.cgroup_root {
            Some(root) => match CgroupTree::create(root, ENGINES.fetch_add(1, Ordering::Relaxed)) {
                Ok(tree) => Some(tree),
                Err(e) => {
                    tracing::warn!(
                        root = %root.display(),
                        "cgroup v2 is not writable ({e}); services run in process groups instead"
                    );
                    None
                }
            },
            None => {
                tracing::warn!("no cgroup v2 mount; services run in process groups instead");
                None
            }
        };
        let engine = Arc::new(Engine {
            capabilities,
            cgroups,
            sessions: Mutex::default(),
            owners: Mutex::default(),
        });
        tokio::spawn(keep_leases(Arc::downgrade(&engine)));
        Ok(engine)
    }

    /// What the host can do, as probed at start.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Starts a session's services and registers it as `owner`'s.
    pub async fn create_session(
        &self,
        config: SessionConfig,
        owner: Caller,
    ) -> Result<Arc<Session>, EngineError> {
        if config.trace_all
            && let Some(trace) = self
                .capabilities
                .backends
                .iter()
                .find(|b| b.name == crate::enforce::ebpf::trace::BACKEND && !b.available)
        {
            return Err(EngineError::FailedPrecondition(format!(
                "tracing every syscall needs the ebpf-trace backend, which is not available here: {}",
                trace.reason
            )));
        }
        let id = session_id()?;
        let session = Session::start(id.clone(), config, self.cgroups.as_ref()).await;
        if let Some(tree) = &self.cgroups
            && session.is_err()
        {
            tree.remove_session(&id);
        }
        let session = session?;
        self.owners_lock().insert(id.clone(), owner);
        self.lock().insert(id, session.clone());
        Ok(session)
    }

    /// A registered session `caller` may use; renews its lease. Another owner's session is "not
    /// found", as if it did not exist.
    pub fn session(&self, id: &str, caller: &Caller) -> Result<Arc<Session>, EngineError> {
        self.check_owner(id, caller)?;
        let session = self
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("session {id}")))?;
        session.touch();
        Ok(session)
    }

    /// Stops a session and returns its summary.
    pub async fn delete_session(
        &self,
        id: &str,
        caller: &Caller,
    ) -> Result<SessionSummary, EngineError> {
        self.check_owner(id, caller)?;
        let session = self
            .lock()
            .remove(id)
            .ok_or_else(|| EngineError::NotFound(format!("session {id}")))?;
        Ok(self.finish(&session).await)
    }

    /// Stops every session and removes faultd's cgroups: what the daemon does before it exits.
    pub async fn shutdown(&self) {
        let sessions: Vec<_> = self.lock().drain().map(|(_, s)| s).collect();
        for session in sessions {
            self.finish(&session).await;
        }
        if let Some(tree) = &self.cgroups {
            tree.destroy();
        }
    }

    fn check_owner(&self, id: &str, caller: &Caller) -> Result<(), EngineError> {
        match self.owners_lock().get(id) {
            Some(owner) if caller.may_use(owner) => Ok(()),
            _ => Err(EngineError::NotFound(format!("session {id}"))),
        }
    }

    fn owners_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Caller>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn finish(&self, session: &Session) -> SessionSummary {
        self.owners_lock().remove(&session.id);
        let summary = session.stop().await;
        if let Some(tree) = &self.cgroups {
            tree.remove_session(&session.id);
        }
        summary
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Tears down sessions whose client went away (no follow stream, no RPC for the lease time).
async fn keep_leases(engine: Weak<Engine>) {
    loop {
        tokio::time::sleep(LEASE_CHECK).await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let expired: Vec<Arc<Session>> = {
            let mut sessions = engine.lock();
            let ids: Vec<String> = sessions
                .iter()
                .filter(|(_, s)| s.lease_expired())
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for session in expired {
            tracing::info!(session = %session.id, "lease expired: the client went away; tearing down");
            engine.finish(&session).await;
        }
    }
}

/// A new session id: 128 random bits from the kernel, in hex, so ids cannot be guessed.
fn session_id() -> Result<String, EngineError> {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most the remaining length into buf past `filled`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        filled += n as usize;
    }
    Ok(crate::auth::hex(&buf))
}
