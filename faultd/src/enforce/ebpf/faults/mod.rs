//! The in-kernel fault programs (`faultd-ebpf/src/bpf/faults.bpf.c`), shared by the ebpf-override and
//! ebpf-lsm backends.
//!
//! One object is loaded while any service has rules on either backend, and dropped (every program
//! detached, every map freed) when the last one leaves. Its maps hold, per service cgroup, the rules of
//! each faulted syscall in precedence order ([`encode`]); the programs decide in the kernel and push
//! each decision on a ring buffer, which a reader thread turns into [`SyscallEvent`]s naming the
//! backend on the service's bus (stamped with the kernel's clock, so the bus orders them). Hits are
//! counted per rule in the kernel and added to the rules whenever rules change and when a service
//! leaves.
//!
//! Probabilities are drawn in the kernel from the fault set's seed with the same SplitMix64 sequence
//! as faultd's userspace source, one counter per fault set shared by every service and CPU: one
//! sequence of in-kernel decisions gives the same outcomes run after run, while concurrent callers
//! (threads, several services of the set) take draws in whatever order the CPUs reach them, and the
//! kernel's counter is separate from the one seccomp-routed rules of the same set use.

mod encode;
mod events;
mod load;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
use aya::programs::kprobe::KProbeLinkId;
use aya::{Btf, Ebpf, Pod};
use faultd_ebpf::faults::{
    CGROUPS_MAP, ENTRY_PROGRAM, EVENTS_MAP, FILE_FREE_PROGRAM, FaultEntry, FaultKey, FaultState,
    GLOBS, GLOBS_MAP, Glob, HITS_MAP, HOOK_ENTRY, HOOK_OP, HOOK_OPEN, HOOK_PERM, HitKey, HitValue,
    OP_PROGRAMS, OPEN_PROGRAM, PERM_PROGRAM, RNGS, RNGS_MAP, RULES_MAP, Rng, STATE_MAP,
};

use encode::Slots;
pub(crate) use encode::compile_glob;
use events::{EVENTS_POLL, Events, Sink};
use load::{attach_lsm, kprobe, load_object};
pub(crate) use load::{probe_lsm, probe_override};

use crate::enforce::{BackendKind, ServiceTarget};
use crate::rules::{Rule, SeededRng};

macro_rules! pod {
    ($($name:ident($inner:ty)),*) => {$(
        #[derive(Clone, Copy)]
        #[repr(transparent)]
        struct $name($inner);
        // SAFETY: the wrapped type is #[repr(C)] plain old data with explicit padding, valid for any
        // bit pattern.
        unsafe impl Pod for $name {}
    )*};
}
pod!(
    Key(FaultKey),
    Entry(FaultEntry),
    GlobSlot(Glob),
    RngSlot(Rng),
    Hit(HitKey),
    Hits(HitValue),
    StateSlot(FaultState)
);

/// A service's place in the shared programs, for one backend; dropping it removes its rules (and the
/// programs with the last service).
pub(crate) struct Registration {
    cgroup_id: u64,
    kind: BackendKind,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let Some(programs) = shared.as_mut() else {
            return;
        };
        if let Err(e) = programs.set(self.cgroup_id, self.kind, Vec::new(), None) {
            tracing::warn!("removing in-kernel fault rules: {e}");
        }
        if programs.services.is_empty() {
            // Detaches every program and frees the maps.
            shared.take();
        }
    }
}

/// Makes `rules` the service's rules on backend `kind` (empty removes them).
pub(crate) fn install(
    kind: BackendKind,
    service: &ServiceTarget<'_>,
    rules: &[Arc<Rule>],
) -> Result<(), String> {
    service.state.with(kind, |slot: &mut Option<Registration>| {
        if rules.is_empty() {
            drop(slot.take());
            return Ok(());
        }
        let cgroup = service.cgroup.ok_or_else(|| {
            format!(
                "{} runs without a cgroup, so {kind} cannot target it",
                service.name
            )
        })?;
        let cgroup_id = cgroup_id(cgroup)?;
        let sink = Sink {
            service: service.name.clone(),
            bus: service.bus.clone(),
            rules: HashMap::new(),
            _late: service.bus.late_source(),
        };
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if shared.is_none() {
            *shared = Some(Programs::load()?);
        }
        let programs = shared.as_mut().expect("loaded above");
        let result = programs.set(cgroup_id, kind, rules.to_vec(), Some(sink));
        if result.is_ok() && slot.is_none() {
            *slot = Some(Registration { cgroup_id, kind });
        }
        if programs.services.is_empty() {
            shared.take();
        }
        result
    })
}

/// The cgroup v2 id of a cgroup directory: its inode number.
fn cgroup_id(dir: &Path) -> Result<u64, String> {
    std::fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|e| format!("cannot stat the cgroup {}: {e}", dir.display()))
}

static SHARED: Mutex<Option<Programs>> = Mutex::new(None);

/// One service's rules on the two backends, and what was already added to each rule's counters.
#[derive(Default)]
struct Service {
    rules: BTreeMap<BackendKind, Vec<Arc<Rule>>>,
    counted: HashMap<u32, (Arc<Rule>, HitValue)>,
    keys: Vec<FaultKey>,
}

/// The loaded object and what it enforces.
struct Programs {
    bpf: Ebpf,
    services: HashMap<u64, Service>,
    events: Arc<Events>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Attached kprobes by syscall number.
    kprobes: BTreeMap<u32, KProbeLinkId>,
    /// LSM programs attached so far (they stay until the object drops).
    lsm: BTreeSet<&'static str>,
    globs: [Option<String>; GLOBS],
    glob_gen: u64,
    /// Random-source slots by fault set (its source's address), holding the source alive.
    rngs: HashMap<usize, (u16, Arc<SeededRng>)>,
}

impl Programs {
    fn load() -> Result<Programs, String> {
        let mut bpf = load_object()?;
        let ring = bpf
            .take_map(EVENTS_MAP)
            .ok_or_else(|| format!("faultd's fault object has no map {EVENTS_MAP}"))
            .and_then(|m| RingBuf::try_from(m).map_err(|e| format!("{EVENTS_MAP}: {e}")))?;
        let events = Arc::new(Events {
            ring: Mutex::new(ring),
            sinks: Mutex::default(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (events, stop) = (events.clone(), stop.clone());
            std::thread::Builder::new()
                .name("faultd-faults".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        events.drain();
                        std::thread::sleep(EVENTS_POLL);
                    }
                })
                .map_err(|e| format!("cannot start the in-kernel event reader: {e}"))?
        };
        Ok(Programs {
            bpf,
            services: HashMap::new(),
            events,
            stop,
            reader: Some(reader),
            kprobes: BTreeMap::new(),
            lsm: BTreeSet::new(),
            globs: Default::default(),
            glob_gen: 0,
            rngs: HashMap::new(),
        })
    }

    /// Makes `rules` the rules of cgroup `cgroup_id` on `kind`, then brings the maps and attachments
    /// in line with every service's rules.
    fn set(
        &mut self,
        cgroup_id: u64,
        kind: BackendKind,
        rules: Vec<Arc<Rule>>,
        sink: Option<Sink>,
    ) -> Result<(), String> {
        self.events.drain();
        let service = self.services.entry(cgroup_id).or_default();
        if rules.is_empty() {
            service.rules.remove(&kind);
        } else {
            service.rules.insert(kind, rules);
        }
        let all: Vec<Arc<Rule>> = service.rules.values().flatten().cloned().collect();
        {
            let mut sinks = self.events.sinks.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(sink) = sink {
                sinks.entry(cgroup_id).or_insert(sink);
            }
            if let Some(sink) = sinks.get_mut(&cgroup_id) {
                for rule in &all {
                    sink.rules.entry(rule.id).or_insert_with(|| rule.clone());
                }
            }
        }
        self.sync_hits(cgroup_id);
        self.assign_slots()?;
        self.write_entries(cgroup_id)?;
        if self
            .services
            .get(&cgroup_id)
            .is_some_and(|s| s.rules.is_empty())
        {
            self.services.remove(&cgroup_id);
            self.events
                .sinks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&cgroup_id);
            let _ = map::<u64, u32>(&mut self.bpf, CGROUPS_MAP)?.remove(&cgroup_id);
        } else {
            map::<u64, u32>(&mut self.bpf, CGROUPS_MAP)?
                .insert(cgroup_id, 1, 0)
                .map_err(|e| format!("{CGROUPS_MAP}: {e}"))?;
        }
        self.attach()
    }

    /// Gives every glob and fault set in use a slot, frees the others, and bumps the glob generation
    /// when a glob slot changed (files' cached matches are then recomputed from their paths).
    fn assign_slots(&mut self) -> Result<(), String> {
        let rules: Vec<Arc<Rule>> = self
            .services
            .values()
            .flat_map(|s| s.rules.values().flatten().cloned())
            .collect();
        let globs: BTreeSet<&str> = rules
            .iter()
            .filter_map(|r| r.path_glob.as_deref())
            .collect();
        let mut changed = false;
        for slot in &mut self.globs {
            if slot.as_deref().is_some_and(|g| !globs.contains(g)) {
                *slot = None;
                changed = true;
            }
        }
        let mut compiled = Vec::new();
        for glob in globs {
            if self.globs.iter().any(|s| s.as_deref() == Some(glob)) {
                continue;
            }
            let free = self.globs.iter().position(Option::is_none).ok_or_else(|| {
                format!(
                    "the in-kernel backends hold at most {GLOBS} path globs at once, and the \
                     active fault sets use more"
                )
            })?;
            self.globs[free] = Some(glob.to_owned());
            compiled.push((free as u32, compile_glob(glob)?));
            changed = true;
        }
        if changed {
            let mut slots: Array<&mut MapData, GlobSlot> = array(&mut self.bpf, GLOBS_MAP)?;
            for (slot, glob) in compiled {
                slots
                    .set(slot, GlobSlot(glob), 0)
                    .map_err(|e| format!("{GLOBS_MAP}: {e}"))?;
            }
            self.glob_gen += 1;
            let used = self
                .globs
                .iter()
                .enumerate()
                .filter(|(_, g)| g.is_some())
                .fold(0u64, |m, (i, _)| m | 1 << i);
            let state = FaultState {
                glob_gen: self.glob_gen,
                globs: used,
            };
            array::<StateSlot>(&mut self.bpf, STATE_MAP)?
                .set(0, StateSlot(state), 0)
                .map_err(|e| format!("{STATE_MAP}: {e}"))?;
        }
        let wanted: HashMap<usize, Arc<SeededRng>> = rules
            .iter()
            .filter(|r| r.probability() < 1.0)
            .map(|r| (Arc::as_ptr(r.rng()) as usize, r.rng().clone()))
            .collect();
        self.rngs.retain(|k, _| wanted.contains_key(k));
        for (key, rng) in wanted {
            if self.rngs.contains_key(&key) {
                continue;
            }
            let used: BTreeSet<u16> = self.rngs.values().map(|(s, _)| *s).collect();
            let slot = (0..RNGS as u16).find(|s| !used.contains(s)).ok_or_else(|| {
                format!(
                    "the in-kernel backends draw for at most {RNGS} fault sets at once, and more \
                     have probabilities"
                )
            })?;
            let seeded = Rng {
                seed: rng.seed(),
                next: 0,
            };
            array::<RngSlot>(&mut self.bpf, RNGS_MAP)?
                .set(u32::from(slot), RngSlot(seeded), 0)
                .map_err(|e| format!("{RNGS_MAP}: {e}"))?;
            self.rngs.insert(key, (slot, rng));
        }
        Ok(())
    }

    /// Writes the entries of one cgroup and its hit counters, removing what its rules no longer need.
    fn write_entries(&mut self, cgroup_id: u64) -> Result<(), String> {
        let Some(service) = self.services.get(&cgroup_id) else {
            return Ok(());
        };
        let mut rules: Vec<(&Rule, BackendKind)> = service
            .rules
            .iter()
            .flat_map(|(kind, rules)| rules.iter().map(move |r| (&**r, *kind)))
            .collect();
        // Rule ids grow in precedence order within a session.
        rules.sort_by_key(|(r, _)| r.id);
        let slots = SlotView {
            globs: &self.globs,
            rngs: &self.rngs,
        };
        let entries = encode::entries(cgroup_id, &rules, &slots)?;
        let ids: Vec<(u32, Arc<Rule>)> = service
            .rules
            .values()
            .flatten()
            .map(|r| (r.id, r.clone()))
            .collect();
        let stale: Vec<FaultKey> = service
            .keys
            .iter()
            .filter(|k| !entries.contains_key(k))
            .copied()
            .collect();
        {
            let mut hits: BpfHashMap<&mut MapData, Hit, Hits> = map(&mut self.bpf, HITS_MAP)?;
            let service = self.services.get_mut(&cgroup_id).expect("checked above");
            for (id, rule) in &ids {
                if !service.counted.contains_key(id) {
                    let key = hit_key(cgroup_id, *id);
                    hits.insert(key, Hits(HitValue::default()), 0)
                        .map_err(|e| format!("{HITS_MAP}: {e}"))?;
                    service
                        .counted
                        .insert(*id, (rule.clone(), HitValue::default()));
                }
            }
            let gone: Vec<u32> = service
                .counted
                .keys()
                .copied()
                .filter(|id| !ids.iter().any(|(i, _)| i == id))
                .collect();
            for id in gone {
                let _ = hits.remove(&hit_key(cgroup_id, id));
                service.counted.remove(&id);
            }
        }
        let mut map: BpfHashMap<&mut MapData, Key, Entry> = map(&mut self.bpf, RULES_MAP)?;
        for (key, entry) in &entries {
            map.insert(Key(*key), Entry(*entry), 0)
                .map_err(|e| format!("{RULES_MAP}: {e}"))?;
        }
        for key in stale {
            let _ = map.remove(&Key(key));
        }
        if let Some(service) = self.services.get_mut(&cgroup_id) {
            service.keys = entries.into_keys().collect();
        }
        Ok(())
    }

    /// Attaches the kprobes of every syscall some rule decides at its entry (detaching the others) and
    /// the LSM programs the rules need.
    fn attach(&mut self) -> Result<(), String> {
        let mut entry_nrs = BTreeSet::new();
        let mut op_nrs = BTreeSet::new();
        let mut hooks = BTreeSet::new();
        let mut globs = false;
        for service in self.services.values() {
            for rule in service.rules.values().flatten() {
                globs |= rule.path_glob.is_some();
            }
        }
        let rules_map: BpfHashMap<&MapData, Key, Entry> = BpfHashMap::try_from(
            self.bpf
                .map(RULES_MAP)
                .ok_or_else(|| format!("faultd's fault object has no map {RULES_MAP}"))?,
        )
        .map_err(|e| format!("{RULES_MAP}: {e}"))?;
        for service in self.services.values() {
            for key in &service.keys {
                if let Ok(Entry(entry)) = rules_map.get(&Key(*key), 0) {
                    for rule in &entry.rules[..entry.count as usize] {
                        hooks.insert(rule.hook);
                        match rule.hook {
                            HOOK_ENTRY => entry_nrs.insert(key.nr),
                            HOOK_OP => op_nrs.insert(key.nr),
                            _ => false,
                        };
                    }
                }
            }
        }
        let mut lsm: Vec<(&'static str, &'static str)> = Vec::new();
        if globs || hooks.contains(&HOOK_OPEN) {
            lsm.push((OPEN_PROGRAM, "file_open"));
            lsm.push((FILE_FREE_PROGRAM, "file_free_security"));
        }
        if hooks.contains(&HOOK_PERM) {
            lsm.push((PERM_PROGRAM, "file_permission"));
        }
        // The operation hooks of the syscalls some rule decides there (ftruncate's also needs the
        // paths files were opened as, from file_open).
        for (program, hook, syscalls) in OP_PROGRAMS {
            let needed = op_nrs.iter().any(|nr| {
                crate::syscalls::by_nr(*nr).is_some_and(|sc| syscalls.contains(&sc.name))
            });
            if needed {
                lsm.push((program, hook));
            }
        }
        lsm.retain(|(name, _)| !self.lsm.contains(name));
        if !lsm.is_empty() {
            let btf = Btf::from_sys_fs()
                .map_err(|e| format!("the kernel has no BTF for LSM programs: {e}"))?;
            for (name, hook) in lsm {
                attach_lsm(&mut self.bpf, &btf, name, hook)?;
                self.lsm.insert(name);
            }
        }
        let program = kprobe(&mut self.bpf)?;
        if !entry_nrs.is_empty() && program.fd().is_err() {
            program
                .load()
                .map_err(|e| format!("cannot load {ENTRY_PROGRAM}: {}", super::one_line(&e)))?;
        }
        let stale: Vec<u32> = self
            .kprobes
            .keys()
            .copied()
            .filter(|nr| !entry_nrs.contains(nr))
            .collect();
        for nr in stale {
            if let Some(link) = self.kprobes.remove(&nr) {
                let _ = program.detach(link);
            }
        }
        for nr in entry_nrs {
            if self.kprobes.contains_key(&nr) {
                continue;
            }
            let name = faultd_ebpf::syscall_name(nr).unwrap_or("unknown");
            let link = program
                .attach(format!("__x64_sys_{name}"), 0)
                .map_err(|e| {
                    format!(
                        "cannot attach a kprobe to __x64_sys_{name}: {}",
                        super::one_line(&e)
                    )
                })?;
            self.kprobes.insert(nr, link);
        }
        Ok(())
    }

    /// Adds the kernel's counts since the last sync to the cgroup's rules.
    fn sync_hits(&mut self, cgroup_id: u64) {
        let Ok(hits) = map::<Hit, Hits>(&mut self.bpf, HITS_MAP) else {
            return;
        };
        let Some(service) = self.services.get_mut(&cgroup_id) else {
            return;
        };
        for (id, (rule, seen)) in &mut service.counted {
            if let Ok(Hits(now)) = hits.get(&hit_key(cgroup_id, *id), 0) {
                rule.add_counts(
                    now.matches.saturating_sub(seen.matches),
                    now.hits.saturating_sub(seen.hits),
                );
                *seen = now;
            }
        }
    }
}

impl Drop for Programs {
    fn drop(&mut self) {
        let cgroups: Vec<u64> = self.services.keys().copied().collect();
        for cgroup_id in cgroups {
            self.sync_hits(cgroup_id);
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.events.drain();
    }
}

struct SlotView<'a> {
    globs: &'a [Option<String>; GLOBS],
    rngs: &'a HashMap<usize, (u16, Arc<SeededRng>)>,
}

impl Slots for SlotView<'_> {
    fn glob(&self, glob: &str) -> u16 {
        self.globs
            .iter()
            .position(|g| g.as_deref() == Some(glob))
            .unwrap_or(0) as u16
    }

    fn rng(&self, rule: &Rule) -> u16 {
        self.rngs
            .get(&(Arc::as_ptr(rule.rng()) as usize))
            .map_or(0, |(slot, _)| *slot)
    }
}

fn hit_key(cgroup_id: u64, rule_id: u32) -> Hit {
    Hit(HitKey {
        cgroup_id,
        rule_id,
        _pad: 0,
    })
}

fn map<'a, K: Pod, V: Pod>(
    bpf: &'a mut Ebpf,
    name: &str,
) -> Result<BpfHashMap<&'a mut MapData, K, V>, String> {
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| format!("faultd's fault object has no map {name}"))?;
    BpfHashMap::try_from(map).map_err(|e| format!("{name}: {e}"))
}

fn array<'a, V: Pod>(bpf: &'a mut Ebpf, name: &str) -> Result<Array<&'a mut MapData, V>, String> {
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| format!("faultd's fault object has no map {name}"))?;
    Array::try_from(map).map_err(|e| format!("{name}: {e}"))
}
