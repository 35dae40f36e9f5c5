//! The `ebpf-trace` backend: every syscall of the traced services, with return value and latency.
//!
//! Two raw tracepoint programs (`fd_trace_enter` on `sys_enter`, `fd_trace_exit` on `sys_exit`) keep
//! only the tasks whose cgroup id is in the `fd_targets` map, remember the entry time per thread and
//! send one record per completed syscall through a ring buffer that wakes its reader only once 64 KiB
//! are pending. A reader thread polls the ring (at least every [`POLL_INTERVAL`]) and turns each record
//! into a syscall event with [`Decision::Observed`] on the bus of the session that owns the cgroup:
//! stamped with its `sys_enter` (or, when seccomp failed the call and `sys_enter` never ran, its
//! `sys_exit`), carrying the path of its fd ([`super::fd_paths`]), and handed to the bus as the outcome
//! of the same call's decision ([`crate::trace::timeline`] joins them into one event).
//!
//! The same `fd_trace_enter` program enforces `crash` rules (see [`Tracer::set_crash`]): for a cgroup
//! marked in `fd_targets` with the crash bit it looks `{cgroup id, syscall nr}` up in the `fd_crash`
//! map and, on a hit, calls `bpf_send_signal` with the rule's signal before the syscall runs — every
//! time the syscall is entered while the rule is active (not one-shot), so a restarted process dies
//! again at the same call. Each signal adds to an in-kernel hit counter per entry, which faultd adds
//! to the rule ([`Rule::add_hits`]) when the entries change or go, and produces a ring-buffer record
//! flagged `TRACE_CRASH`, which becomes a syscall event with [`Decision::Crash`] and backend
//! `ebpf-trace`. A crash-only cgroup costs other cgroups nothing more: the crash lookup happens only
//! after the `fd_targets` hit, and its other syscalls are not traced.
//!
//! While attached, the tracepoints cost every process on the host about 50 ns per syscall, so the
//! programs are loaded and attached only while at least one session is registered
//! ([`Tracer::register`]) or has crash rules ([`Tracer::set_crash`]), and dropped (links detached,
//! maps freed) when the last one unregisters ([`Tracer::unregister`], [`Tracer::clear_crash`]), which
//! first drains the ring so the session's bus gets every event before
//! it closes.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader, Pod};
use faultd_ebpf::{CrashKey, CrashValue, TARGET_CRASH, TARGET_TRACE, TraceEvent, trace as names};

use super::fd_paths::FdPaths;
pub use super::records::{syscall_event, syscall_name};
use crate::rules::{Action, Rule};
use crate::trace::{Decision, EventBus, LateSource};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
struct Key(CrashKey);
// SAFETY: CrashKey is #[repr(C)] plain old data with explicit padding, valid for any bit pattern.
unsafe impl Pod for Key {}

#[derive(Clone, Copy)]
#[repr(transparent)]
struct Value(CrashValue);
// SAFETY: CrashValue is #[repr(C)] plain old data without padding, valid for any bit pattern.
unsafe impl Pod for Value {}

/// The backend's name, as the probe and the trace show it.
pub const BACKEND: crate::enforce::BackendKind = crate::enforce::BackendKind::EbpfTrace;

/// Longest time a record waits in the ring when fewer than 64 KiB are pending.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why the tracer could not be loaded, attached or told about a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The object or one of its programs did not load.
    #[error("loading faultd's eBPF tracer failed: {0}")]
    Load(String),
    /// A program did not attach to its tracepoint.
    #[error("attaching the eBPF tracer to raw_syscalls/{tracepoint} failed: {reason}")]
    Attach {
        /// `sys_enter` or `sys_exit`.
        tracepoint: &'static str,
        /// The loader's error.
        reason: String,
    },
    /// The in-kernel cgroup filter could not be updated.
    #[error("updating the eBPF tracer's cgroup filter failed: {0}")]
    Map(String),
    /// The reader thread could not be started.
    #[error("starting the eBPF tracer's reader failed: {0}")]
    Reader(String),
}

/// Loads the tracer's object and both programs into the kernel without attaching them. What the
/// probe does to decide whether `ebpf-trace` is available; the caller drops the result.
pub fn load() -> Result<Ebpf, TraceError> {
    let mut ebpf = EbpfLoader::new()
        .load(faultd_ebpf::TRACE_OBJ)
        .map_err(|e| TraceError::Load(with_hint(super::one_line(&e))))?;
    for name in [names::PROG_ENTER, names::PROG_EXIT] {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| TraceError::Load(format!("the object has no program {name}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| TraceError::Load(super::one_line(&e)))?;
        prog.load()
            .map_err(|e| TraceError::Load(with_hint(format!("{name}: {}", super::one_line(&e)))))?;
    }
    Ok(ebpf)
}

/// Whether the tracer's programs load here (loaded once per process, then dropped), or why not.
pub fn available() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| load().map(drop).map_err(|e| e.to_string()))
        .clone()
}

/// Adds what to do about a permission error.
fn with_hint(reason: String) -> String {
    if reason.contains("os error 1)") {
        format!("{reason} (loading BPF programs needs root, or CAP_BPF and CAP_PERFMON)")
    } else {
        reason
    }
}

/// Where a traced cgroup's events go.
struct Route {
    service: Arc<str>,
    bus: Arc<EventBus>,
    /// Records arrive up to [`POLL_INTERVAL`] late: the bus holds events in its reorder window.
    _late: LateSource,
}

impl Route {
    fn new(service: Arc<str>, bus: Arc<EventBus>) -> Route {
        Route {
            _late: bus.late_source(),
            service,
            bus,
        }
    }
}

/// What the reader thread and the flushing session share.
struct Shared {
    ring: Mutex<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    routes: Mutex<HashMap<u64, Route>>,
    paths: Mutex<FdPaths>,
    stop: AtomicBool,
    delivered: AtomicU64,
}

/// The loaded, attached programs and their reader.
struct Attached {
    /// Owns the programs and their links: dropping it detaches them.
    _ebpf: Ebpf,
    targets: BpfHashMap<MapData, u64, u32>,
    crash: BpfHashMap<MapData, Key, Value>,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Inner {
    attached: Option<Attached>,
    /// Registered cgroup ids per session id.
    sessions: HashMap<String, Vec<u64>>,
    /// Crash entries per cgroup id.
    crash: HashMap<u64, CrashTarget>,
}

/// The crash entries of one cgroup, installed by one session.
struct CrashTarget {
    session: String,
    /// Each key in `fd_crash`, its rule and the rule's hits already added from its counter.
    entries: Vec<(Key, Arc<Rule>, u64)>,
}

impl Inner {
    /// The `fd_targets` bits cgroup `id` needs now.
    fn bits(&self, id: u64) -> u32 {
        let traced = self.sessions.values().any(|ids| ids.contains(&id));
        let crash = self.crash.get(&id).is_some_and(|t| !t.entries.is_empty());
        (if traced { TARGET_TRACE } else { 0 }) | (if crash { TARGET_CRASH } else { 0 })
    }

    /// Writes cgroup `id`'s bits to `fd_targets` (removing it, and its route, at 0).
    fn sync_target(&mut self, id: u64) -> Result<(), TraceError> {
        let bits = self.bits(id);
        let Some(attached) = self.attached.as_mut() else {
            return Ok(());
        };
        if bits == 0 {
            let _ = attached.targets.remove(&id);
            lock(&attached.shared.routes).remove(&id);
            return Ok(());
        }
        attached
            .targets
            .insert(id, bits, 0)
            .map_err(|e| TraceError::Map(super::one_line(&e)))
    }

    fn idle(&self) -> bool {
        self.sessions.is_empty() && self.crash.is_empty()
    }
}

/// The host-wide tracer (one set of programs serves every session of the process).
pub struct Tracer {
    inner: Mutex<Inner>,
}

impl Tracer {
    /// The tracer of this process.
    pub fn global() -> &'static Tracer {
        static TRACER: OnceLock<Tracer> = OnceLock::new();
        TRACER.get_or_init(|| Tracer {
            inner: Mutex::default(),
        })
    }

    /// Traces the processes of cgroup `cgroup_id` (a cgroup v2 directory's inode) as `service` of
    /// `session`, onto `bus`. Loads and attaches the programs if no session had them.
    pub fn register(
        &self,
        session: &str,
        cgroup_id: u64,
        service: Arc<str>,
        bus: Arc<EventBus>,
    ) -> Result<(), TraceError> {
        let mut inner = self.lock();
        if inner.attached.is_none() {
            inner.attached = Some(attach()?);
        }
        let bits = inner.bits(cgroup_id) | TARGET_TRACE;
        let result = {
            let attached = inner.attached.as_mut().expect("attached above");
            lock(&attached.shared.routes).insert(cgroup_id, Route::new(service, bus));
            attached
                .targets
                .insert(cgroup_id, bits, 0)
                .map_err(|e| TraceError::Map(super::one_line(&e)))
        };
        match result {
            Ok(()) => {
                inner
                    .sessions
                    .entry(session.to_owned())
                    .or_default()
                    .push(cgroup_id);
                Ok(())
            }
            Err(e) => {
                let _ = inner.sync_target(cgroup_id);
                if inner.idle() {
                    detach(&mut inner);
                }
                Err(e)
            }
        }
    }

    /// Delivers what the ring holds to the buses, then stops tracing `session`'s cgroups; detaches the
    /// programs when no session is left. Call after the session's processes are gone and before its
    /// bus closes. A session that never registered is a no-op.
    pub fn unregister(&self, session: &str) {
        let mut inner = self.lock();
        let Some(ids) = inner.sessions.remove(session) else {
            return;
        };
        if let Some(attached) = inner.attached.as_mut() {
            drain(&attached.shared);
        }
        for id in ids {
            let _ = inner.sync_target(id);
        }
        if inner.idle() {
            detach(&mut inner);
        }
    }

    /// Makes `rules` (crash rules without path, destination or probability) the crash entries of
    /// cgroup `cgroup_id`, service `service` of `session`: each syscall of each rule, the first rule
    /// (lowest id) winning a syscall, sends the rule's signal to the calling process at every entry.
    /// Loads and attaches the programs if nothing had them; no rules removes the cgroup's entries
    /// (adding their last hits to the rules) and detaches the programs when nothing else uses them.
    pub fn set_crash(
        &self,
        session: &str,
        cgroup_id: u64,
        service: Arc<str>,
        bus: Arc<EventBus>,
        rules: &[Arc<Rule>],
    ) -> Result<(), TraceError> {
        let mut inner = self.lock();
        let mut wanted: Vec<(Key, Arc<Rule>, u64)> = Vec::new();
        let mut sorted: Vec<&Arc<Rule>> = rules.iter().collect();
        sorted.sort_by_key(|r| r.id);
        for rule in sorted {
            if !matches!(rule.action, Action::Crash { .. }) {
                continue;
            }
            for sc in &rule.syscalls {
                let key = Key(CrashKey {
                    cgroup_id,
                    nr: sc.nr,
                    _pad: 0,
                });
                if !wanted.iter().any(|(k, _, _)| *k == key) {
                    wanted.push((key, rule.clone(), 0));
                }
            }
        }
        if wanted.is_empty() && !inner.crash.contains_key(&cgroup_id) {
            return Ok(());
        }
        if wanted.len() > names::MAX_CRASH as usize {
            return Err(TraceError::Map(format!(
                "{} crash entries is more than the {} fd_crash holds",
                wanted.len(),
                names::MAX_CRASH
            )));
        }
        if inner.attached.is_none() {
            inner.attached = Some(attach()?);
        }
        let result = self.install_crash(&mut inner, session, cgroup_id, service, bus, wanted);
        if inner.idle() {
            detach(&mut inner);
        }
        result
    }

    fn install_crash(
        &self,
        inner: &mut Inner,
        session: &str,
        cgroup_id: u64,
        service: Arc<str>,
        bus: Arc<EventBus>,
        wanted: Vec<(Key, Arc<Rule>, u64)>,
    ) -> Result<(), TraceError> {
        let old = inner.crash.remove(&cgroup_id);
        let attached = inner.attached.as_mut().expect("attached by the caller");
        drain(&attached.shared);
        if let Some(old) = old {
            for (key, rule, seen) in old.entries {
                if let Ok(v) = attached.crash.get(&key, 0) {
                    rule.add_hits(v.0.hits.saturating_sub(seen));
                }
                if !wanted.iter().any(|(k, _, _)| *k == key) {
                    let _ = attached.crash.remove(&key);
                }
            }
        }
        if wanted.is_empty() {
            return inner.sync_target(cgroup_id);
        }
        lock(&attached.shared.routes).insert(cgroup_id, Route::new(service, bus));
        let mut installed = Vec::with_capacity(wanted.len());
        for (key, rule, _) in wanted {
            let Action::Crash { signal } = rule.action else {
                continue;
            };
            let value = Value(CrashValue {
                signal: signal as u32,
                rule_id: rule.id,
                hits: 0,
            });
            if let Err(e) = attached.crash.insert(key, value, 0) {
                for (key, _, _) in &installed {
                    let _ = attached.crash.remove(key);
                }
                let _ = inner.sync_target(cgroup_id);
                return Err(TraceError::Map(super::one_line(&e)));
            }
            installed.push((key, rule, 0));
        }
        inner.crash.insert(
            cgroup_id,
            CrashTarget {
                session: session.to_owned(),
                entries: installed,
            },
        );
        if let Err(e) = inner.sync_target(cgroup_id) {
            if let (Some(t), Some(a)) = (inner.crash.remove(&cgroup_id), inner.attached.as_mut()) {
                for (key, _, _) in t.entries {
                    let _ = a.crash.remove(&key);
                }
            }
            let _ = inner.sync_target(cgroup_id);
            return Err(e);
        }
        Ok(())
    }

    /// Removes every crash entry of `session` (adding their last hits to the rules, delivering their
    /// pending events first) and detaches the programs when nothing else uses them.
    pub fn clear_crash(&self, session: &str) {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner
            .crash
            .iter()
            .filter(|(_, t)| t.session == session)
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        if let Some(attached) = inner.attached.as_mut() {
            drain(&attached.shared);
        }
        for id in ids {
            let Some(target) = inner.crash.remove(&id) else {
                continue;
            };
            if let Some(attached) = inner.attached.as_mut() {
                for (key, rule, seen) in target.entries {
                    if let Ok(v) = attached.crash.get(&key, 0) {
                        rule.add_hits(v.0.hits.saturating_sub(seen));
                    }
                    let _ = attached.crash.remove(&key);
                }
            }
            let _ = inner.sync_target(id);
        }
        if inner.idle() {
            detach(&mut inner);
        }
    }

    /// Delivers what the ring holds now (before a session flushes its reorder window).
    pub fn sync(&self) {
        if let Some(attached) = self.lock().attached.as_ref() {
            drain(&attached.shared);
        }
    }

    /// Events delivered to buses since the programs were last attached (0 when detached).
    pub fn delivered(&self) -> u64 {
        self.lock()
            .attached
            .as_ref()
            .map_or(0, |a| a.shared.delivered.load(Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Loads and attaches both programs and starts the reader.
fn attach() -> Result<Attached, TraceError> {
    let mut ebpf = load()?;
    for (name, tracepoint) in [
        (names::PROG_ENTER, "sys_enter"),
        (names::PROG_EXIT, "sys_exit"),
    ] {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| TraceError::Load(format!("the object has no program {name}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| TraceError::Load(super::one_line(&e)))?;
        prog.attach(tracepoint).map_err(|e| TraceError::Attach {
            tracepoint,
            reason: super::one_line(&e),
        })?;
    }
    let take = |ebpf: &mut Ebpf, name: &str| {
        ebpf.take_map(name)
            .ok_or_else(|| TraceError::Load(format!("the object has no map {name}")))
    };
    let targets = BpfHashMap::try_from(take(&mut ebpf, names::MAP_TARGETS)?)
        .map_err(|e| TraceError::Load(super::one_line(&e)))?;
    let crash = BpfHashMap::try_from(take(&mut ebpf, names::MAP_CRASH)?)
        .map_err(|e| TraceError::Load(super::one_line(&e)))?;
    let ring = RingBuf::try_from(take(&mut ebpf, names::MAP_EVENTS)?)
        .map_err(|e| TraceError::Load(super::one_line(&e)))?;
    let lost = PerCpuArray::try_from(take(&mut ebpf, names::MAP_LOST)?)
        .map_err(|e| TraceError::Load(super::one_line(&e)))?;
    let shared = Arc::new(Shared {
        ring: Mutex::new(ring),
        lost,
        routes: Mutex::default(),
        paths: Mutex::default(),
        stop: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
    });
    let reader = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("fd-ebpf-trace".into())
            .spawn(move || read_loop(&shared))
            .map_err(|e| TraceError::Reader(e.to_string()))?
    };
    tracing::info!("ebpf-trace attached to raw_syscalls sys_enter/sys_exit");
    Ok(Attached {
        _ebpf: ebpf,
        targets,
        crash,
        shared,
        reader: Some(reader),
    })
}

/// Stops the reader and drops the programs (their links detach with their fds).
fn detach(inner: &mut Inner) {
    if let Some(mut attached) = inner.attached.take() {
        attached.shared.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = attached.reader.take() {
            let _ = reader.join();
        }
        drop(attached);
        tracing::info!("ebpf-trace detached");
    }
}

/// Waits for the ring to signal (or [`POLL_INTERVAL`]) and drains it, until told to stop.
fn read_loop(shared: &Shared) {
    let fd = lock(&shared.ring).as_raw_fd();
    let mut lost_seen = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd; the ring's fd stays open while `shared` (which owns the
        // ring) lives, and it outlives this thread (detach joins before dropping it).
        unsafe { libc::poll(&mut pfd, 1, POLL_INTERVAL.as_millis() as i32) };
        drain(shared);
        let lost = shared.lost();
        if lost > lost_seen {
            tracing::warn!(
                lost = lost - lost_seen,
                "ebpf-trace: events lost, the ring buffer was full"
            );
            lost_seen = lost;
        }
    }
}

impl Shared {
    /// Events the programs could not queue because the ring was full, summed over CPUs.
    fn lost(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum())
    }
}

/// Delivers every record the ring holds. The ring stays locked until the records are on their buses,
/// so a flushing session cannot overtake (or outlive) a batch the reader thread is delivering.
fn drain(shared: &Shared) {
    let mut ring = lock(&shared.ring);
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(event) = TraceEvent::from_bytes(&item) {
            let opened =
                TraceEvent::path_of(&item).map(|p| String::from_utf8_lossy(p).into_owned());
            batch.push((event, opened));
        }
    }
    if batch.is_empty() {
        return;
    }
    let routes = lock(&shared.routes);
    let mut paths = lock(&shared.paths);
    let mut delivered = 0;
    for (record, opened) in batch {
        let Some(route) = routes.get(&record.cgroup_id) else {
            continue;
        };
        let mut event = syscall_event(&record);
        event.path = paths
            .observe(&record, event.syscall, opened.as_deref())
            .map(|p| p.to_string());
        if event.decision == Decision::Crash {
            // Decided at entry, in the kernel: replaces seccomp's `allow` of the same call.
            route
                .bus
                .emit_kernel_decision(&route.service, event, record.ts_ns);
        } else {
            let entry = (record.enter_ns != 0).then_some(record.enter_ns);
            route
                .bus
                .emit_outcome(&route.service, event, entry, record.ts_ns);
        }
        delivered += 1;
    }
    drop(paths);
    drop(routes);
    drop(ring);
    shared.delivered.fetch_add(delivered, Ordering::Relaxed);
}
