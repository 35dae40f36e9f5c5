//! A service's life: launched (or attached by cgroup), its output read into the trace, waited for
//! until ready, and stopped (SIGTERM to every process, SIGKILL after the grace period).

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument;

use super::config::ServiceConfig;
use super::{ServiceInfo, ServiceSummary};
use crate::cgroup::{Cgroup, CgroupTree};
use crate::enforce::ebpf::trace::Tracer;
use crate::enforce::seccomp::Supervisor;
use crate::enforce::seccomp::storage::{KillTarget, Storage};
use crate::enforce::{BackendState, Interceptor, ServiceTarget};
use crate::engine::EngineError;
use crate::health;
use crate::launch;
use crate::netns::Net;
use crate::reaper::Reaper;
use crate::rules::RuleSlot;
use crate::syscalls::Syscall;
use crate::trace::{EventBus, EventKind, ExitStatus, Stream};

use super::output::{Tail, spawn_output_reader, stderr_excerpt};

/// How long an exit waits for the service's output pipes to drain (a grandchild may keep them open).
const OUTPUT_DRAIN: Duration = Duration::from_millis(300);

/// A started (or attached) service of a session.
pub(super) struct Service {
    pub(super) name: Arc<str>,
    pub(super) config: ServiceConfig,
    /// Its main process (the latest, after a restart); 0 when attached.
    pub(super) pid: AtomicI32,
    pub(super) cgroup: Option<Cgroup>,
    /// Attached by cgroup (not launched): faultd never signals its processes nor removes the cgroup.
    pub(super) attached: bool,
    pub(super) rules: Arc<RuleSlot>,
    /// Volatile tracking and power loss (storage actions).
    pub(super) storage: Arc<Storage>,
    intercepted: Vec<&'static Syscall>,
    supervisor: Mutex<Option<Supervisor>>,
    /// What each backend keeps for this service (attached programs); dropped with the service.
    pub(super) backends: BackendState,
    /// How its latest main process ended, once it has.
    exit: Mutex<watch::Receiver<Option<ExitStatus>>>,
    pub(super) stopping: Arc<AtomicBool>,
    stdout_tail: Tail,
    stderr_tail: Tail,
    ready_after: Duration,
    /// The session's network (its namespace, or the host's).
    pub(super) net: Net,
}

impl Service {
    /// The service as its backends see it.
    pub(super) fn target<'a>(
        &'a self,
        session: &'a str,
        bus: &'a Arc<EventBus>,
    ) -> ServiceTarget<'a> {
        ServiceTarget {
            session,
            name: &self.name,
            cgroup: self.cgroup.as_ref().map(|c| c.path()),
            attached: self.attached,
            intercepted: &self.intercepted,
            rules: &self.rules,
            bus,
            state: &self.backends,
        }
    }

    /// As reported to the client once started.
    pub(super) fn info(&self) -> ServiceInfo {
        ServiceInfo {
            name: self.name.to_string(),
            pid: self.pid.load(Ordering::Relaxed) as u32,
            cgroup: self.cgroup.as_ref().map(|c| c.path().display().to_string()),
            ready_after: self.ready_after,
            intercepted: self.intercepted.iter().map(|s| s.name).collect(),
        }
    }

    /// What finds its processes ([`Members::pids`]), to take to a blocking thread.
    pub(super) fn members(&self) -> Members {
        Members {
            cgroup: self.cgroup.clone(),
            pid: self.pid.load(Ordering::Relaxed),
        }
    }

    /// A receiver of its latest process's exit.
    pub(super) fn exit(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How it ended and what it last printed.
    pub(super) fn summary(&self) -> ServiceSummary {
        let tail = |t: &Tail| {
            t.lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect()
        };
        ServiceSummary {
            name: self.name.to_string(),
            exit: *self.exit().borrow(),
            stopped_by_faultd: self.stopping.load(Ordering::Relaxed),
            stdout_tail: tail(&self.stdout_tail),
            stderr_tail: tail(&self.stderr_tail),
        }
    }
}

/// A service's processes: its cgroup's, else its main process's group's.
pub(super) struct Members {
    cgroup: Option<Cgroup>,
    pid: i32,
}

impl Members {
    /// The pids now. Blocks briefly (reads `cgroup.procs`, or all of `/proc` without a cgroup).
    pub(super) fn pids(&self) -> Vec<i32> {
        match &self.cgroup {
            Some(cg) => cg.pids(),
            None => crate::netns::ports::group_members(self.pid),
        }
    }
}

/// Launches a service (or attaches to its cgroup), registers it with the tracer when the session traces
/// every syscall, and waits until its healthcheck passes. A service that fails to start is stopped.
pub(super) async fn start_service(
    session_id: &str,
    config: ServiceConfig,
    intercepted: Vec<&'static Syscall>,
    cgroups: Option<&CgroupTree>,
    bus: &Arc<EventBus>,
    trace_all: bool,
    net: &Net,
) -> Result<Service, EngineError> {
    let name: Arc<str> = config.name.as_str().into();
    if let Some(dir) = &config.attach_cgroup {
        // Finding the cgroup v2 root probes it (creates and removes a directory): off the async workers.
        let dir = dir.clone();
        let cgroup = tokio::task::spawn_blocking(move || {
            let root = crate::cgroup::cgroup_v2_root();
            Cgroup::existing(&dir, root.as_deref())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(|e| EngineError::FailedPrecondition(format!("service {name}: {e}")))?;
        return attach_service(session_id, config, cgroup, bus, trace_all).await;
    }
    if net.namespace().is_none() {
        let svc = config.clone();
        crate::engine::blocking(move || super::network::check_ports(&svc)).await??;
    }
    let cgroup =
        match cgroups {
            Some(tree) => Some(tree.service(session_id, &config.name).map_err(|e| {
                EngineError::Start(format!("cannot create the cgroup of {name}: {e}"))
            })?),
            None => None,
        };
    if trace_all {
        // Registered before launch, so the trace starts with the service's first syscall.
        let traced = match &cgroup {
            Some(cg) => match std::fs::metadata(cg.path()) {
                Ok(meta) => {
                    // Loading and attaching the programs takes a while: off the async workers.
                    let (session, service, bus) =
                        (session_id.to_owned(), name.clone(), bus.clone());
                    tokio::task::spawn_blocking(move || {
                        Tracer::global().register(&session, meta.ino(), service, bus)
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                }
                Err(e) => Err(e.to_string()),
            },
            None => Err("services run without cgroups here".to_owned()),
        };
        if let Err(e) = traced {
            if let Some(cg) = &cgroup {
                let _ = cg.remove();
            }
            return Err(EngineError::FailedPrecondition(format!(
                "cannot trace every syscall of {name} (ebpf-trace): {e}"
            )));
        }
    }
    let mut service = Service {
        name: name.clone(),
        pid: AtomicI32::new(0),
        cgroup,
        attached: false,
        rules: Arc::new(RuleSlot::default()),
        storage: Arc::new(Storage::default()),
        intercepted,
        supervisor: Mutex::new(None),
        backends: BackendState::default(),
        exit: Mutex::new(watch::channel(None).1),
        stopping: Arc::new(AtomicBool::new(false)),
        stdout_tail: Tail::default(),
        stderr_tail: Tail::default(),
        ready_after: Duration::ZERO,
        net: net.clone(),
        config,
    };
    let spawned_at = Instant::now();
    if let Err(e) = spawn_process(&service, bus).await {
        if let Some(cg) = &service.cgroup {
            let _ = cg.remove();
        }
        return Err(e);
    }
    match wait_healthy(&service).await {
        Ok(()) => service.ready_after = spawned_at.elapsed(),
        Err(message) => {
            stop_service(&service).await;
            return Err(EngineError::Start(message));
        }
    }
    bus.emit(
        &name,
        EventKind::Ready {
            after: service.ready_after,
        },
    );
    Ok(service)
}

/// Waits until the service's healthcheck passes (at once without one); why not, when its process
/// exits first or the check times out.
pub(super) async fn wait_healthy(service: &Service) -> Result<(), String> {
    let Some((check, timeout, interval)) = service.config.healthcheck.clone() else {
        return Ok(());
    };
    let name = &service.name;
    let mut exit = service.exit();
    tokio::select! {
        ready = super::network::wait_ready(service, &check, timeout, interval) => ready.map_err(|e| {
            format!("service {name} did not become ready: {e}")
        }),
        status = async { exit.wait_for(Option::is_some).await.ok().and_then(|s| *s) } => {
            Err(format!(
                "service {name} exited before it was ready ({}){}",
                status.map_or("status unknown".to_string(), |s| s.to_string()),
                stderr_excerpt(&service.stderr_tail)
            ))
        }
    }
}

/// Spawns the service's main process (in its cgroup, under its filter, with its rules and storage
/// state), reads its output into the trace and watches its exit: at start and at each restart.
pub(super) async fn spawn_process(
    service: &Service,
    bus: &Arc<EventBus>,
) -> Result<(), EngineError> {
    let name = &service.name;
    let cgroup = service
        .cgroup
        .as_ref()
        .map(Cgroup::dir_fd)
        .transpose()
        .map_err(|e| EngineError::Start(format!("cannot open the cgroup of {name}: {e}")))?;
    // Created straight in a fresh cgroup; a restart joins it by `cgroup.procs`, because Linux 6.18
    // SIGKILLs a child cloned into a cgroup that `cgroup.kill` emptied before (a power loss, a stop).
    let placement = if service.pid.load(Ordering::Relaxed) == 0 {
        launch::Placement::current()
    } else {
        launch::Placement::Write
    };
    let cgroup = cgroup.map(|fd| (fd, placement));
    let interceptor = Interceptor {
        service: name.clone(),
        rules: service.rules.clone(),
        bus: bus.clone(),
        resolve_paths: service.config.resolve_paths,
        storage: service.storage.clone(),
    };
    let netns = service
        .net
        .namespace()
        .map(crate::netns::NetNs::fd)
        .transpose()
        .map_err(|e| EngineError::Start(format!("cannot open the network namespace: {e}")))?;
    let launched = launch::launch(
        service.config.launch.clone(),
        cgroup,
        netns,
        service.intercepted.clone(),
        interceptor,
    )
    .await
    .map_err(|e| EngineError::Start(format!("service {name}: {e}")))?;
    let pid = launched.pid;
    service.pid.store(pid, Ordering::Relaxed);
    service.storage.set_kill_target(match &service.cgroup {
        Some(cg) => KillTarget::Cgroup(cg.path().to_owned()),
        None => KillTarget::Group(pid),
    });
    bus.emit(
        name,
        EventKind::Started {
            pid: pid as u32,
            cgroup: service
                .cgroup
                .as_ref()
                .map(|c| c.path().display().to_string()),
        },
    );
    let stdout_done = spawn_output_reader(
        launched.stdout,
        Stream::Stdout,
        name,
        bus,
        &service.stdout_tail,
    );
    let stderr_done = spawn_output_reader(
        launched.stderr,
        Stream::Stderr,
        name,
        bus,
        &service.stderr_tail,
    );
    let (exit_tx, exit_rx) = watch::channel(None);
    {
        let exited = Reaper::global().watch(pid);
        let bus = bus.clone();
        let name = name.clone();
        let stopping = service.stopping.clone();
        let drained = [stdout_done, stderr_done];
        let storage = service.storage.clone();
        tokio::spawn(
            async move {
                if let Ok(status) = exited.await {
                    // Killed by a power loss: reported once its files are restored.
                    let _ = crate::engine::blocking(move || storage.settled()).await;
                    // The trace shows a service's last output before its exit. A grandchild may hold the
                    // pipes open, so wait only briefly for them to drain.
                    for mut done in drained {
                        let _ = tokio::time::timeout(OUTPUT_DRAIN, done.wait_for(|d| *d)).await;
                    }
                    let _ = exit_tx.send(Some(status));
                    bus.emit(
                        &name,
                        EventKind::Exited {
                            status,
                            stopped_by_faultd: stopping.load(Ordering::Relaxed),
                        },
                    );
                }
            }
            .in_current_span(),
        );
    }
    *service.exit.lock().unwrap_or_else(|e| e.into_inner()) = exit_rx;
    *service.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = launched.supervisor;
    Ok(())
}

/// A service faultd does not launch: the processes of an existing cgroup v2 directory. It has no pid,
/// exit or output; its healthcheck still decides when it is ready.
async fn attach_service(
    session_id: &str,
    config: ServiceConfig,
    cgroup: Cgroup,
    bus: &Arc<EventBus>,
    trace_all: bool,
) -> Result<Service, EngineError> {
    let name: Arc<str> = config.name.as_str().into();
    let attached_at = Instant::now();
    if trace_all {
        let meta = std::fs::metadata(cgroup.path()).map_err(|e| {
            EngineError::FailedPrecondition(format!(
                "cannot trace every syscall of {name} (ebpf-trace): {e}"
            ))
        })?;
        let (session, service, bus) = (session_id.to_owned(), name.clone(), bus.clone());
        tokio::task::spawn_blocking(move || {
            Tracer::global().register(&session, meta.ino(), service, bus)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| {
            EngineError::FailedPrecondition(format!(
                "cannot trace every syscall of {name} (ebpf-trace): {e}"
            ))
        })?;
    }
    bus.emit(
        &name,
        EventKind::Started {
            pid: 0,
            cgroup: Some(cgroup.path().display().to_string()),
        },
    );
    // Never sent: faultd does not see an attached service exit.
    let (_exit_tx, exit_rx) = watch::channel(None);
    let mut service = Service {
        name: name.clone(),
        pid: AtomicI32::new(0),
        cgroup: Some(cgroup),
        attached: true,
        rules: Arc::new(RuleSlot::default()),
        storage: Arc::default(),
        intercepted: Vec::new(),
        supervisor: Mutex::new(None),
        backends: BackendState::default(),
        exit: Mutex::new(exit_rx),
        stopping: Arc::new(AtomicBool::new(false)),
        stdout_tail: Arc::default(),
        stderr_tail: Arc::default(),
        ready_after: Duration::ZERO,
        net: Net::host(),
        config,
    };
    if let Some((check, timeout, interval)) = service.config.healthcheck.clone() {
        health::wait_ready(&check, timeout, interval)
            .await
            .map_err(|e| EngineError::Start(format!("service {name} did not become ready: {e}")))?;
        service.ready_after = attached_at.elapsed();
    }
    bus.emit(
        &name,
        EventKind::Ready {
            after: service.ready_after,
        },
    );
    Ok(service)
}

/// SIGTERM to every process of the service, SIGKILL after the grace period, then removes its cgroup
/// and stops answering its notifications. An attached service is left alone.
pub(super) async fn stop_service(service: &Service) {
    if service.attached {
        // Not ours to stop: its programs were detached with its rules.
        return;
    }
    halt(service).await;
    if let Some(cgroup) = &service.cgroup
        && let Err(e) = cgroup.remove()
    {
        tracing::warn!(service = %service.name, "cannot remove its cgroup: {e}");
    }
    shutdown_supervisor(service).await;
}

/// SIGTERM to every process of the service, SIGKILL after the grace period; waits (briefly) for its
/// main process's exit to be reported. Its cgroup stays, so it can be restarted.
pub(super) async fn halt(service: &Service) {
    service.stopping.store(true, Ordering::Relaxed);
    let grace = service.config.stop_grace;
    let pid = service.pid.load(Ordering::Relaxed);
    match &service.cgroup {
        Some(cgroup) => {
            cgroup.signal(libc::SIGTERM);
            if !cgroup.wait_empty(grace).await {
                tracing::debug!(service = %service.name, "still running after SIGTERM; SIGKILL");
                cgroup.signal(libc::SIGKILL);
                if !cgroup.wait_empty(Duration::from_secs(5)).await {
                    tracing::warn!(service = %service.name, "processes survive SIGKILL");
                }
            }
        }
        None => {
            // Process-group fallback: reaches every process that did not leave the group.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
            let mut exit = service.exit();
            if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                // SAFETY: as above.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            // SAFETY: as above; the group may still hold children of an exited leader.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
    let mut exit = service.exit();
    let _ = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(Option::is_some)).await;
}

/// Stops answering the service's notifications (its processes are gone).
pub(super) async fn shutdown_supervisor(service: &Service) {
    let supervisor = service
        .supervisor
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(supervisor) = supervisor {
        // Joins the answering thread: off the async workers.
        let _ = crate::engine::blocking(move || supervisor.shutdown()).await;
    }
}
