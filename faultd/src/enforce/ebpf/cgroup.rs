//! The `ebpf-cgroup` backend: `connect` faults decided in the kernel, per service cgroup.
//!
//! `cgroup/connect4` and `cgroup/connect6` programs (`fd_connect4`, `fd_connect6`, from
//! `faultd-ebpf/src/bpf/cgroup.bpf.c`) are loaded and attached to a service's cgroup only while the
//! service has rules on this backend. They look the destination up in a hash map that
//! [`ConnectFaults::set_rules`] fills from the service's active rules, most specific key first, and fail
//! the connect with the rule's errno through `bpf_set_retval` — no round trip to faultd. The programs
//! count hits per rule in a second map, which faultd adds to the rules' own counters
//! ([`Rule::add_hits`]). Each decision is also a record in a ring buffer, which a task turns into a
//! [`SyscallEvent`] with backend `ebpf-cgroup` on the session's bus — after the fact (within 50 ms, and
//! at once when the rules change), stamped with the kernel's clock at the decision so the bus puts it
//! in time order and merges it with seccomp's `allow` of the same call: the connect has already failed
//! when the event is emitted. Dropping a [`ConnectFaults`] delivers what is pending and
//! closes the links, which detaches the programs.
//!
//! Partitions also drop packets: [`ConnectFaults::set_drops`] fills a map of peers (address or any
//! address, port) and attaches `cgroup_skb/egress` and `cgroup_skb/ingress` programs (`fd_skb_egress`,
//! `fd_skb_ingress`) to the same cgroup while the set is not empty. They drop the service's TCP and UDP
//! packets to and from those peers, so connections opened before the partition stop carrying data too
//! (and UDP datagrams are lost, as on a cut network); the connect programs still refuse new connects
//! at once. Packets are counted per rule in the kernel (`fd_drop_hits`, for `bpftool map dump`) but
//! not added to the rules' hits, which count decided connects.
//!
//! The backend draws no probabilities (the decision is not seeded, so it could not replay), cannot
//! delay or crash, and only sees `connect`; [`unsupported`] says so in one sentence.

use std::collections::HashMap as StdHashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aya::maps::{HashMap, MapData, RingBuf};
use aya::programs::cgroup_skb::CgroupSkbLink;
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};
use faultd_ebpf::cgroup::{
    CONNECT4_PROGRAM, CONNECT6_PROGRAM, ConnEvent, ConnKey, DROP_HITS_MAP, DROP_PEERS_MAP,
    EVENTS_MAP, HITS_MAP, RULES_MAP, SKB_EGRESS_PROGRAM, SKB_INGRESS_PROGRAM,
};

use crate::rules::Rule;
use crate::trace::{Decision, EventBus, LateSource, SyscallEvent};

mod maps;
pub use maps::DropPeer;
use maps::{Key, PeerDrop, Verdict, drop_map, map, precedence_map};

/// The backend's name, as rules, summaries and probes show it.
pub const BACKEND: crate::enforce::BackendKind = crate::enforce::BackendKind::EbpfCgroup;

/// How often pending decisions are read when fewer than the wakeup threshold (64 KiB) are waiting.
const EVENTS_POLL: Duration = Duration::from_millis(50);

/// Whether the packet-drop programs of partitions load here (`fd_skb_egress` is loaded once, then
/// dropped; cached); `Err` is the reason in one sentence.
pub fn drops_available() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            let mut bpf = EbpfLoader::new()
                .load(faultd_ebpf::CGROUP_OBJ)
                .map_err(|e| format!("the kernel refused faultd's cgroup eBPF object: {e}."))?;
            let program: &mut CgroupSkb = bpf
                .program_mut(SKB_EGRESS_PROGRAM)
                .ok_or_else(|| format!("faultd's cgroup object has no {SKB_EGRESS_PROGRAM}."))?
                .try_into()
                .map_err(|e| {
                    format!("{SKB_EGRESS_PROGRAM} is not a cgroup_skb/egress program: {e}.")
                })?;
            program.load().map_err(|e| {
                format!(
                    "the kernel refused to load a cgroup_skb/egress program ({}).",
                    super::one_line(&e)
                )
            })
        })
        .clone()
}

/// Whether the backend works on this host: loads `fd_connect4` once (then drops it) and caches the
/// answer; `Err` is the reason in one sentence.
pub fn available() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED
        .get_or_init(|| {
            let mut bpf = EbpfLoader::new()
                .load(faultd_ebpf::CGROUP_OBJ)
                .map_err(|e| format!("the kernel refused faultd's cgroup eBPF object: {e}."))?;
            let program: &mut CgroupSockAddr = bpf
                .program_mut(CONNECT4_PROGRAM)
                .ok_or_else(|| format!("faultd's cgroup object has no {CONNECT4_PROGRAM}."))?
                .try_into()
                .map_err(|e| {
                    format!("{CONNECT4_PROGRAM} is not a cgroup/connect4 program: {e}.")
                })?;
            program.load().map_err(|e| {
                format!(
                    "the kernel refused to load a cgroup/connect4 program with bpf_set_retval \
                     ({}).",
                    super::one_line(&e)
                )
            })
        })
        .clone()
}

/// Where a service's in-kernel decisions are reported.
#[derive(Clone)]
pub struct EventSink {
    /// The service's name, as events carry it.
    pub service: Arc<str>,
    /// The session's bus.
    pub bus: Arc<EventBus>,
}

/// The ring buffer of decisions and what turning them into events needs.
struct Events {
    ring: Mutex<RingBuf<MapData>>,
    rules: Mutex<StdHashMap<u32, Arc<Rule>>>,
    sink: EventSink,
    /// Decisions arrive up to [`EVENTS_POLL`] late: the bus holds events in its reorder window.
    _late: LateSource,
}

impl Events {
    /// Emits every pending decision.
    fn drain(&self) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(item) = ring.next() {
            let Some(record) = ConnEvent::from_bytes(&item) else {
                continue;
            };
            let rule = self
                .rules
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&record.rule_id)
                .cloned();
            let event = SyscallEvent {
                pid: record.pid,
                tid: record.tid,
                nr: libc::SYS_connect as u32,
                syscall: "connect",
                op: rule.as_ref().and_then(|r| r.op.clone()),
                path: record.destination().map(|a| a.to_string()),
                decision: if record.errno == 0 {
                    Decision::Allow
                } else {
                    Decision::Deny
                },
                errno: record.errno,
                delay: Duration::ZERO,
                label: rule.as_ref().and_then(|r| r.label.clone()),
                rule_id: record.rule_id,
                signal: 0,
                retval: None,
                latency: Duration::ZERO,
                backend: BACKEND,
                io: None,
            };
            // Stamped in the kernel; it replaces seccomp's `allow` of the same connect, if seccomp
            // intercepted it too (see `trace::timeline`).
            self.sink
                .bus
                .emit_kernel_decision(&self.sink.service, event, record.ts_ns);
        }
    }
}

/// The programs attached to one service's cgroup and their maps.
pub struct ConnectFaults {
    bpf: Ebpf,
    events: Option<Arc<Events>>,
    reader: Option<tokio::task::JoinHandle<()>>,
    /// Installed rules by id, with the hit count already added to each.
    counted: StdHashMap<u32, (Arc<Rule>, u64)>,
    /// Keys currently in the rules map.
    keys: Vec<ConnKey>,
    /// The cgroup directory the programs are attached to.
    cgroup: PathBuf,
    /// Keys currently in the drop-peers map.
    drop_keys: Vec<ConnKey>,
    /// The packet-drop programs' links, while there are peers to drop (dropping one detaches it).
    skb_links: Vec<CgroupSkbLink>,
}

impl std::fmt::Debug for ConnectFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectFaults")
            .field("rules", &self.counted.len())
            .field("keys", &self.keys.len())
            .field("drop_peers", &self.drop_keys.len())
            .field("dropping", &!self.skb_links.is_empty())
            .finish_non_exhaustive()
    }
}

impl ConnectFaults {
    /// Loads the connect programs and attaches them to the cgroup directory `cgroup`. With a `sink`,
    /// each decision becomes an event on it (read by a task when called inside a tokio runtime, else
    /// when rules change and on drop).
    pub fn attach(cgroup: &Path, sink: Option<EventSink>) -> Result<ConnectFaults, String> {
        let mut bpf = EbpfLoader::new()
            .load(faultd_ebpf::CGROUP_OBJ)
            .map_err(|e| {
                format!(
                    "cannot load faultd's cgroup eBPF object: {}",
                    super::one_line(&e)
                )
            })?;
        let dir = File::open(cgroup)
            .map_err(|e| format!("cannot open the cgroup {}: {e}", cgroup.display()))?;
        for name in [CONNECT4_PROGRAM, CONNECT6_PROGRAM] {
            let program: &mut CgroupSockAddr = bpf
                .program_mut(name)
                .ok_or_else(|| format!("faultd's cgroup object has no program {name}"))?
                .try_into()
                .map_err(|e| format!("{name}: {e}"))?;
            program
                .load()
                .map_err(|e| format!("cannot load {name}: {}", super::one_line(&e)))?;
            program
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(|e| {
                    format!(
                        "cannot attach {name} to {}: {}",
                        cgroup.display(),
                        super::one_line(&e)
                    )
                })?;
        }
        let mut events = None;
        let mut reader = None;
        if let Some(sink) = sink {
            let ring = bpf
                .take_map(EVENTS_MAP)
                .ok_or_else(|| format!("faultd's cgroup object has no map {EVENTS_MAP}"))
                .and_then(|m| RingBuf::try_from(m).map_err(|e| format!("{EVENTS_MAP}: {e}")))?;
            let fd = ring
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| format!("{EVENTS_MAP}: {e}"))?;
            let shared = Arc::new(Events {
                ring: Mutex::new(ring),
                rules: Mutex::default(),
                _late: sink.bus.late_source(),
                sink,
            });
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let _entered = runtime.enter();
                // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open for its lifetime.
                let ready = unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        fd,
                        tokio::io::Interest::READABLE,
                    )
                }
                .map_err(|e| format!("{EVENTS_MAP}: {}", e.into_parts().1))?;
                let task_events = shared.clone();
                reader = Some(runtime.spawn(async move {
                    // The programs wake the reader only when 64 KiB are pending (a wakeup per record
                    // would cost a cross-CPU IPI per denied connect), so it also polls.
                    let mut tick = tokio::time::interval(EVENTS_POLL);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            ready = ready.readable() => match ready {
                                // Cleared before draining: a record landing meanwhile wakes us again.
                                Ok(mut guard) => guard.clear_ready(),
                                Err(_) => return,
                            },
                            _ = tick.tick() => {}
                        }
                        task_events.drain();
                    }
                }));
            }
            events = Some(shared);
        }
        Ok(ConnectFaults {
            bpf,
            events,
            reader,
            counted: StdHashMap::new(),
            keys: Vec::new(),
            cgroup: cgroup.to_path_buf(),
            drop_keys: Vec::new(),
            skb_links: Vec::new(),
        })
    }

    /// Makes the packet-drop programs drop the TCP and UDP packets to and from `peers` (the first entry
    /// for a peer wins), attaching them to the cgroup when `peers` is not empty and detaching them
    /// when it is.
    pub fn set_drops(&mut self, peers: &[DropPeer]) -> Result<(), String> {
        let wanted = drop_map(peers);
        {
            let mut hits: HashMap<&mut MapData, u32, u64> = map(&mut self.bpf, DROP_HITS_MAP)?;
            for rule in wanted.values() {
                if hits.get(&rule.rule_id, 0).is_err() {
                    hits.insert(rule.rule_id, 0, 0)
                        .map_err(|e| format!("{DROP_HITS_MAP}: {e}"))?;
                }
            }
        }
        {
            let mut map: HashMap<&mut MapData, Key, PeerDrop> = map(&mut self.bpf, DROP_PEERS_MAP)?;
            for (key, rule) in &wanted {
                map.insert(Key(*key), PeerDrop(*rule), 0)
                    .map_err(|e| format!("{DROP_PEERS_MAP}: {e}"))?;
            }
            for stale in self.drop_keys.iter().filter(|k| !wanted.contains_key(k)) {
                let _ = map.remove(&Key(*stale));
            }
        }
        self.drop_keys = wanted.into_keys().collect();
        if self.drop_keys.is_empty() {
            // Dropping the links detaches the programs.
            self.skb_links.clear();
        } else if self.skb_links.is_empty() {
            self.attach_drops()?;
        }
        Ok(())
    }

    /// Loads (once) and attaches `fd_skb_egress` and `fd_skb_ingress` to the cgroup.
    fn attach_drops(&mut self) -> Result<(), String> {
        let dir = File::open(&self.cgroup)
            .map_err(|e| format!("cannot open the cgroup {}: {e}", self.cgroup.display()))?;
        let mut links = Vec::with_capacity(2);
        for (name, attach_type) in [
            (SKB_EGRESS_PROGRAM, CgroupSkbAttachType::Egress),
            (SKB_INGRESS_PROGRAM, CgroupSkbAttachType::Ingress),
        ] {
            let program: &mut CgroupSkb = self
                .bpf
                .program_mut(name)
                .ok_or_else(|| format!("faultd's cgroup object has no program {name}"))?
                .try_into()
                .map_err(|e| format!("{name}: {e}"))?;
            if program.fd().is_err() {
                program
                    .load()
                    .map_err(|e| format!("cannot load {name}: {}", super::one_line(&e)))?;
            }
            let id = program
                .attach(&dir, attach_type, CgroupAttachMode::Single)
                .map_err(|e| {
                    format!(
                        "cannot attach {name} to {}: {}",
                        self.cgroup.display(),
                        super::one_line(&e)
                    )
                })?;
            links.push(
                program
                    .take_link(id)
                    .map_err(|e| format!("{name}: {}", super::one_line(&e)))?,
            );
        }
        // Only now: on an error above, the links taken so far detach when `links` drops.
        self.skb_links = links;
        Ok(())
    }

    /// Makes the programs enforce `rules` (this service's rules on this backend, in precedence order).
    /// Counters of rules that leave are synced into them first.
    pub fn set_rules(&mut self, rules: &[Arc<Rule>]) -> Result<(), String> {
        let wanted = precedence_map(rules);
        {
            let mut hits: HashMap<&mut MapData, u32, u64> = map(&mut self.bpf, HITS_MAP)?;
            for rule in rules {
                if !self.counted.contains_key(&rule.id) {
                    hits.insert(rule.id, 0, 0)
                        .map_err(|e| format!("{HITS_MAP}: {e}"))?;
                }
            }
        }
        for rule in rules {
            self.counted
                .entry(rule.id)
                .or_insert_with(|| (rule.clone(), 0));
        }
        if let Some(events) = &self.events {
            let mut known = events.rules.lock().unwrap_or_else(|e| e.into_inner());
            for rule in rules {
                known.entry(rule.id).or_insert_with(|| rule.clone());
            }
        }
        {
            let mut map: HashMap<&mut MapData, Key, Verdict> = map(&mut self.bpf, RULES_MAP)?;
            for (key, verdict) in &wanted {
                map.insert(Key(*key), Verdict(*verdict), 0)
                    .map_err(|e| format!("{RULES_MAP}: {e}"))?;
            }
            for stale in self.keys.iter().filter(|k| !wanted.contains_key(k)) {
                let _ = map.remove(&Key(*stale));
            }
        }
        self.keys = wanted.into_keys().collect();
        self.sync_hits();
        let gone: Vec<u32> = self
            .counted
            .keys()
            .copied()
            .filter(|id| !rules.iter().any(|r| r.id == *id))
            .collect();
        if !gone.is_empty() {
            let mut hits: HashMap<&mut MapData, u32, u64> = map(&mut self.bpf, HITS_MAP)?;
            for id in gone {
                let _ = hits.remove(&id);
                self.counted.remove(&id);
            }
        }
        Ok(())
    }

    /// Adds the hits counted in the kernel since the last sync to the rules.
    pub fn sync_hits(&mut self) {
        let Ok(hits) = map::<u32, u64>(&mut self.bpf, HITS_MAP) else {
            return;
        };
        for (rule, seen) in self.counted.values_mut() {
            if let Ok(now) = hits.get(&rule.id, 0)
                && now > *seen
            {
                rule.add_hits(now - *seen);
                *seen = now;
            }
        }
    }
}

impl Drop for ConnectFaults {
    fn drop(&mut self) {
        self.sync_hits();
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        if let Some(events) = &self.events {
            events.drain();
        }
    }
}
