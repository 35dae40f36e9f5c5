//! The engine: every session of this faultd, the host's capabilities and the lease keeper.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::auth::Caller;
use crate::cgroup::CgroupTree;
use crate::enforce::BackendKind;
use crate::probe::{self, Capabilities};
use crate::proxy::ProxyRuleSpec;
use crate::reaper::Reaper;
use crate::rules::RuleSpec;
use crate::session::{AppliedRules, PartitionSpec, Session, SessionConfig, SessionSummary};
use tracing::Instrument;

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
    /// A stated limit would be exceeded.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The host refused something faultd needs.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What one engine accepts; every count that comes from a request is bounded by one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sessions running at once.
    pub max_sessions: usize,
    /// Sessions running at once for one owner (admins included: a runaway CI job is one owner).
    pub max_sessions_per_owner: usize,
    /// The longest lease a client may ask for.
    pub max_lease: Duration,
    /// Services in one session.
    pub max_services: usize,
    /// Rules active in one session, over all its fault sets.
    pub max_rules: usize,
    /// Events a second sent to one event stream (`0`: unlimited); a slower stream falls behind and is
    /// told how many it lost.
    pub max_events_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 64,
            max_sessions_per_owner: 32,
            max_lease: Duration::from_secs(3600),
            max_services: 64,
            max_rules: 10_000,
            max_events_per_second: 1_000_000,
        }
    }
}

impl Drop for Engine {
    /// Removes the cgroups no process is in (all of them after the last session ended), so an
    /// embedded engine leaves nothing behind when faultctl exits.
    fn drop(&mut self) {
        if let Some(tree) = &self.cgroups {
            tree.remove_unused();
        }
    }
}

/// Owns the sessions of one faultd (daemon or embedded).
pub struct Engine {
    /// Probed on first use: most runs never ask (a fork and loading BPF programs, ~100 ms).
    capabilities: Arc<OnceLock<Capabilities>>,
    cgroups: Option<CgroupTree>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    limits: Limits,
    /// Who created each session: only they (and admins) see it.
    owners: Mutex<HashMap<String, Caller>>,
}

impl Engine {
    /// Finds the cgroup v2 mount, sweeps what a crashed faultd left behind, starts reaping children
    /// and the lease keeper; the host's capabilities are probed on first use
    /// ([`Engine::capabilities`]). Must be called inside a tokio runtime; blocks briefly (creating
    /// cgroups), so async code prefers [`Engine::start`].
    pub fn new() -> Result<Arc<Engine>, EngineError> {
        let cgroups = Self::prepare_host();
        Ok(Self::with(cgroups, Limits::default()))
    }

    /// [`Engine::new`] with the sweep on a blocking thread.
    pub async fn start() -> Result<Arc<Engine>, EngineError> {
        Self::start_with(Limits::default()).await
    }

    /// [`Engine::start`] with other limits.
    pub async fn start_with(limits: Limits) -> Result<Arc<Engine>, EngineError> {
        let cgroups = blocking(Self::prepare_host).await?;
        Ok(Self::with(cgroups, limits))
    }

    /// Starts the reaper and creates this engine's cgroup tree (sweeping what a crashed faultd left
    /// behind). Blocks.
    fn prepare_host() -> Option<CgroupTree> {
        static ENGINES: AtomicU32 = AtomicU32::new(0);
        Reaper::global();
        match &crate::cgroup::detect().1 {
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
        }
    }

    fn with(cgroups: Option<CgroupTree>, limits: Limits) -> Arc<Engine> {
        let engine = Arc::new(Engine {
            capabilities: Arc::default(),
            cgroups,
            sessions: Mutex::default(),
            limits,
            owners: Mutex::default(),
        });
        tokio::spawn(keep_leases(Arc::downgrade(&engine)));
        engine
    }

    /// What the host can do, probed on the first call (which blocks: a fork, loading BPF programs;
    /// async code prefers [`Engine::probed`]).
    pub fn capabilities(&self) -> &Capabilities {
        self.capabilities.get_or_init(probe::probe)
    }

    /// [`Engine::capabilities`], probed on a blocking thread when not yet known.
    pub async fn probed(&self) -> Result<Capabilities, EngineError> {
        let capabilities = self.capabilities.clone();
        blocking(move || capabilities.get_or_init(probe::probe).clone()).await
    }

    /// The limits this engine enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Starts a session's services and registers it as `owner`'s. The start runs to its end even when the caller
    /// goes away (a cancelled RPC): the session is then registered and its lease, which starts when the
    /// start returns, tears it down.
    pub async fn create_session(
        self: &Arc<Self>,
        config: SessionConfig,
        owner: Caller,
    ) -> Result<Arc<Session>, EngineError> {
        let engine = self.clone();
        tokio::spawn(async move { engine.start_session(config, owner).await })
            .await
            .unwrap_or_else(|e| Err(EngineError::Start(format!("the start task failed: {e}"))))
    }

    async fn start_session(
        &self,
        config: SessionConfig,
        owner: Caller,
    ) -> Result<Arc<Session>, EngineError> {
        if config.services.len() > self.limits.max_services {
            return Err(EngineError::ResourceExhausted(format!(
                "a session may have at most {} services, and this one has {}",
                self.limits.max_services,
                config.services.len()
            )));
        }
        if config.lease > self.limits.max_lease {
            return Err(EngineError::InvalidArgument(format!(
                "a lease of {} ms is longer than this faultd allows ({} ms); keep the session alive \
                 with KeepAlive or an open event stream instead",
                config.lease.as_millis(),
                self.limits.max_lease.as_millis()
            )));
        }
        let running = self.lock().len();
        if running >= self.limits.max_sessions {
            return Err(EngineError::ResourceExhausted(format!(
                "faultd already runs {running} sessions, its limit; delete finished sessions or \
                 raise the limit"
            )));
        }
        let owned = self
            .owners_lock()
            .values()
            .filter(|o| o.principal == owner.principal)
            .count();
        if owned >= self.limits.max_sessions_per_owner {
            return Err(EngineError::ResourceExhausted(format!(
                "you already run {owned} sessions, the most one client may run at once; delete \
                 finished sessions first"
            )));
        }
        let capabilities = if config.trace_all {
            Some(self.probed().await?)
        } else {
            None
        };
        if let Some(trace) = capabilities
            .iter()
            .flat_map(|c| &c.backends)
            .find(|b| b.name == crate::enforce::ebpf::trace::BACKEND.as_str() && !b.available)
        {
            return Err(EngineError::FailedPrecondition(format!(
                "tracing every syscall needs the ebpf-trace backend, which is not available here: {}",
                trace.reason
            )));
        }
        let id = session_id()?;
        let span =
            tracing::info_span!("session", id = %id, name = %config.name, owner = %owner.principal);
        let session = Session::start(id.clone(), config, self.cgroups.as_ref(), span.clone())
            .instrument(span)
            .await;
        if let Some(tree) = &self.cgroups
            && session.is_err()
        {
            tree.remove_session(&id);
        }
        let session = session?;
        session
            .span
            .in_scope(|| tracing::info!(services = session.services().len(), "session started"));
        session.touch();
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

    /// Applies a fault set to a session (see [`Session::apply_fault_set`]) on a blocking thread:
    /// backends load and attach programs while the session's fault sets are locked.
    pub async fn apply_faults(
        &self,
        session: &Arc<Session>,
        specs: Vec<(RuleSpec, Option<BackendKind>)>,
        partitions: Vec<PartitionSpec>,
        proxy_specs: Vec<ProxyRuleSpec>,
        seed: u64,
    ) -> Result<(Arc<str>, AppliedRules), EngineError> {
        let session = session.clone();
        let max = self.limits.max_rules;
        let span = session.span.clone();
        blocking(move || {
            // A partition becomes one rule per interface of the other side.
            let asked = specs.len() + partitions.len() + proxy_specs.len();
            let active = session.active_rules();
            if active + asked > max {
                return Err(EngineError::ResourceExhausted(format!(
                    "a session may have at most {max} active rules; it has {active} and this request \
                     adds {asked}: clear a fault set first or raise the limit"
                )));
            }
            session.apply_fault_set(specs, &partitions, proxy_specs, seed)
        })
        .instrument(span)
        .await?
    }

    /// Clears a fault set of a session (see [`Session::clear_faults`]) on a blocking thread.
    pub async fn clear_faults(
        &self,
        session: &Arc<Session>,
        fault_set: &str,
    ) -> Result<AppliedRules, EngineError> {
        let (session, fault_set) = (session.clone(), fault_set.to_owned());
        let span = session.span.clone();
        blocking(move || session.clear_faults(&fault_set))
            .instrument(span)
            .await?
    }

    /// Stops a session and returns its summary. The stop runs to its end even when the caller goes
    /// away.
    pub async fn delete_session(
        self: &Arc<Self>,
        id: &str,
        caller: &Caller,
    ) -> Result<SessionSummary, EngineError> {
        self.check_owner(id, caller)?;
        let session = self
            .lock()
            .remove(id)
            .ok_or_else(|| EngineError::NotFound(format!("session {id}")))?;
        let engine = self.clone();
        tokio::spawn(async move { engine.finish(&session).await })
            .await
            .map_err(|e| {
                EngineError::Io(std::io::Error::other(format!("the stop task failed: {e}")))
            })
    }

    /// Stops every session and removes faultd's cgroups: what the daemon does before it exits.
    /// (An embedded engine is dropped instead, with its runtime: see the `Drop` impl.)
    pub async fn shutdown(&self) {
        let sessions: Vec<_> = self.lock().drain().map(|(_, s)| s).collect();
        for session in sessions {
            self.finish(&session).await;
        }
        if let Some(tree) = self.cgroups.clone() {
            // Waits for killed processes to go: off the async workers.
            let _ = blocking(move || tree.destroy()).await;
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

    async fn finish(&self, session: &Arc<Session>) -> SessionSummary {
        self.owners_lock().remove(&session.id);
        let summary = session.stop().instrument(session.span.clone()).await;
        session
            .span
            .in_scope(|| tracing::info!(events = summary.events_total, "session stopped"));
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
            session.span.in_scope(|| {
                tracing::info!("lease expired: the client went away; tearing down");
            });
            engine.finish(&session).await;
        }
    }
}

/// Runs blocking work (kernel calls, waits, joins) on a blocking thread, in the caller's span; a
/// panic there goes on here.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EngineError> {
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(work)).await {
        Ok(out) => Ok(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(EngineError::Io(std::io::Error::other(format!(
            "blocking work did not run: {e}"
        )))),
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
