//! Compiled fault rules: what a service's intercepted syscalls are matched against.
//!
//! A [`RuleSet`] is an immutable snapshot of every active rule of one service, in precedence order (earlier
//! fault sets first, then rule order within a set). The answering loop of a backend loads the current
//! snapshot from the service's [`RuleSlot`] for each syscall; applying or clearing a fault set publishes a
//! new snapshot. The first rule that matches the syscall and whose probability draw fires decides.
//!
//! A snapshot is indexed by syscall number, with the path globs of each syscall's rules compiled into
//! one set ([`index`]): a syscall no rule matches costs the same with 1 rule or 1,000.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use globset::{GlobBuilder, GlobMatcher};

use crate::enforce::BackendKind;
use crate::syscalls::{self, Syscall};

pub use faultd_model::action::{Action, Fraction, PowerLossMode, Trigger, format_duration};

mod index;

/// What a syscall is about, as far as a backend could resolve it.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Nothing to match (no path argument, or it could not be resolved).
    None,
    /// The resolved path of the fd or path argument (`socket:[123]` for sockets).
    Path(&'a str),
    /// The destination of a `connect`.
    Addr(SocketAddr),
}

/// A destination filter for `connect` rules: `host:port` or `:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    /// The address that must match, or any when `None`.
    pub ip: Option<IpAddr>,
    /// The port that must match.
    pub port: u16,
}

impl Destination {
    /// Parses `127.0.0.1:5432`, `[::1]:5432`, `localhost:5432` (loopback) or `:5432`.
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let bad = || RuleError::Destination(text.to_string());
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = match host {
            "" | "*" => None,
            "localhost" => Some(IpAddr::from([127, 0, 0, 1])),
            _ => Some(host.parse().map_err(|_| bad())?),
        };
        Ok(Destination { ip, port })
    }

    fn matches(&self, addr: &SocketAddr) -> bool {
        addr.port() == self.port && self.ip.is_none_or(|ip| ip == addr.ip())
    }
}

/// Why a rule could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// A syscall or family name faultd does not know.
    #[error("unknown syscall or family {0:?}")]
    UnknownSyscall(String),
    /// A path glob that does not parse.
    #[error("invalid path glob {glob:?}: {reason}")]
    Glob {
        /// The glob as given.
        glob: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A destination that is not `host:port` or `:port`.
    #[error("invalid destination {0:?}: expected host:port or :port")]
    Destination(String),
    /// A probability outside [0, 1].
    #[error("probability {0} is outside [0, 1]")]
    Probability(f64),
    /// A rule that names no syscall.
    #[error("the rule names no syscall")]
    NoSyscalls,
    /// A storage action on a syscall it does not apply to.
    #[error("{0}")]
    Misfit(String),
}

/// Compiles a path glob: `*` and `?` stay within a path segment, `**` crosses segments, `[...]` classes.
pub(crate) fn compile_glob(glob: &str) -> Result<GlobMatcher, RuleError> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| RuleError::Glob {
            glob: glob.to_string(),
            reason: e.kind().to_string(),
        })
}

/// A deterministic random source shared by the rules of one fault set.
///
/// Each draw takes the next index of a counter and hashes it with the seed (SplitMix64), so the same seed
/// and the same sequence of draws give the same decisions, without a lock on the answering path.
#[derive(Debug)]
pub struct SeededRng {
    seed: u64,
    next: AtomicU64,
}

impl SeededRng {
    /// A source that starts at the beginning of `seed`'s sequence.
    pub fn new(seed: u64) -> Self {
        SeededRng {
            seed,
            next: AtomicU64::new(0),
        }
    }

    /// The seed (in-kernel backends draw the same sequence from it, with their own counter).
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// The next number of the sequence, uniform in [0, 1).
    pub(crate) fn next_unit(&self) -> f64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A set of syscall numbers, as a bitmap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NrSet([u64; 8]);

impl NrSet {
    /// Adds `nr`; numbers of 512 and above are not representable and are ignored.
    pub fn insert(&mut self, nr: u32) {
        if let Some(word) = self.0.get_mut((nr / 64) as usize) {
            *word |= 1 << (nr % 64);
        }
    }

    /// Whether `nr` is in the set.
    pub fn contains(&self, nr: u32) -> bool {
        self.0
            .get((nr / 64) as usize)
            .is_some_and(|w| w & (1 << (nr % 64)) != 0)
    }
}

/// What a client asks for: one rule before compilation.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// The service the rule applies to.
    pub service: String,
    /// The op it came from, for the trace (`persist(write)`).
    pub op: Option<String>,
    /// Syscall or family names.
    pub syscalls: Vec<String>,
    /// Path glob for file syscalls.
    pub path_glob: Option<String>,
    /// Destination filter for `connect`.
    pub destination: Option<String>,
    /// What the rule does.
    pub action: Action,
    /// Chance in [0, 1] that a matching syscall is decided by this rule.
    pub probability: f64,
    /// Shown in the trace as `[label]`.
    pub label: Option<String>,
    /// When it fires among the calls it matches.
    pub trigger: Trigger,
}

/// One compiled rule with its counters.
#[derive(Debug)]
pub struct Rule {
    /// Unique within the session; 0 is never used.
    pub id: u32,
    /// The fault set the rule belongs to.
    pub fault_set: Arc<str>,
    /// The service it applies to.
    pub service: Arc<str>,
    /// The op it came from.
    pub op: Option<Arc<str>>,
    /// What it does.
    pub action: Action,
    /// Its label.
    pub label: Option<Arc<str>>,
    /// The expanded syscalls it covers, in table order.
    pub syscalls: Vec<&'static Syscall>,
    /// The path glob as given.
    pub path_glob: Option<String>,
    /// The destination as given.
    pub destination: Option<String>,
    /// The backend that enforces it (`seccomp` unless the session chose another, e.g. `ebpf-cgroup`).
    pub backend: BackendKind,
    /// Made from a `partition(a, b)`: the ebpf-cgroup backend also drops the packets of open
    /// connections to its destination.
    pub partition: bool,
    /// Set on every part of a rule split across backends (per syscall): the id of the first part,
    /// under which the parts are reported as one rule.
    pub split_from: Option<u32>,
    names: Vec<&'static str>,
    nrs: NrSet,
    glob: Option<GlobMatcher>,
    dest: Option<Destination>,
    probability: f64,
    trigger: Trigger,
    rng: Arc<SeededRng>,
    matches: AtomicU64,
    hits: AtomicU64,
}

impl Rule {
    /// Compiles `spec` as rule `id` of `fault_set`, drawing from `rng`.
    pub fn compile(
        id: u32,
        fault_set: Arc<str>,
        spec: &RuleSpec,
        rng: Arc<SeededRng>,
    ) -> Result<Rule, RuleError> {
        let mut syscalls: Vec<&'static Syscall> = Vec::new();
        for name in &spec.syscalls {
            let expanded =
                syscalls::expand(name).ok_or_else(|| RuleError::UnknownSyscall(name.clone()))?;
            for sc in expanded {
                if !syscalls.iter().any(|s| s.nr == sc.nr) {
                    syscalls.push(sc);
                }
            }
        }
        if syscalls.is_empty() {
            return Err(RuleError::NoSyscalls);
        }
        if !(0.0..=1.0).contains(&spec.probability) {
            return Err(RuleError::Probability(spec.probability));
        }
        if let Some(why) = syscalls.iter().find_map(|sc| spec.action.misfit(sc.name)) {
            return Err(RuleError::Misfit(why));
        }
        let mut nrs = NrSet::default();
        syscalls.iter().for_each(|s| nrs.insert(s.nr));
        let glob = spec.path_glob.as_deref().map(compile_glob).transpose()?;
        let dest = spec
            .destination
            .as_deref()
            .map(Destination::parse)
            .transpose()?;
        let names = syscalls.iter().map(|s| s.name).collect();
        Ok(Rule {
            id,
            fault_set,
            service: spec.service.as_str().into(),
            op: spec.op.as_deref().map(Arc::from),
            action: spec.action,
            label: spec.label.as_deref().map(Arc::from),
            syscalls,
            path_glob: spec.path_glob.clone(),
            destination: spec.destination.clone(),
            backend: BackendKind::Seccomp,
            partition: false,
            split_from: None,
            names,
            nrs,
            glob,
            dest,
            probability: spec.probability,
            trigger: spec.trigger,
            rng,
            matches: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    /// The same rule narrowed to `syscalls` (a subset of its own), as rule `id`, with fresh counters and
    /// the same random source.
    pub(crate) fn part(&self, id: u32, syscalls: Vec<&'static Syscall>) -> Rule {
        let mut nrs = NrSet::default();
        syscalls.iter().for_each(|s| nrs.insert(s.nr));
        Rule {
            id,
            fault_set: self.fault_set.clone(),
            service: self.service.clone(),
            op: self.op.clone(),
            action: self.action,
            label: self.label.clone(),
            names: syscalls.iter().map(|s| s.name).collect(),
            syscalls,
            path_glob: self.path_glob.clone(),
            destination: self.destination.clone(),
            backend: self.backend,
            partition: self.partition,
            split_from: self.split_from,
            nrs,
            glob: self.glob.clone(),
            dest: self.dest,
            probability: self.probability,
            trigger: self.trigger,
            rng: self.rng.clone(),
            matches: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        }
    }

    /// Whether the rule applies to syscall `sc` on `target` (before the probability draw).
    ///
    /// A path glob only constrains file syscalls, and only a resolved path that matches satisfies it:
    /// sockets, pipes and unresolvable fds never match a file glob. A destination only constrains
    /// `connect`-like syscalls and needs a decoded address.
    pub fn matches(&self, sc: &Syscall, target: &Target<'_>) -> bool {
        if !self.nrs.contains(sc.nr) {
            return false;
        }
        if let Some(glob) = &self.glob
            && syscalls::is_file_syscall(sc)
        {
            match target {
                Target::Path(path) if glob.is_match(path) => {}
                _ => return false,
            }
        }
        if let Some(dest) = &self.dest
            && matches!(sc.args, syscalls::ArgKind::SockAddr { .. })
        {
            match target {
                Target::Addr(addr) if dest.matches(addr) => {}
                _ => return false,
            }
        }
        true
    }

    /// The names of its expanded syscalls.
    pub fn syscall_names(&self) -> &[&'static str] {
        &self.names
    }

    /// Whether the rule filters on file paths.
    pub(crate) fn is_file_rule(&self) -> bool {
        self.glob.is_some() || self.syscalls.iter().any(|s| syscalls::is_file_syscall(s))
    }

    /// The parsed destination filter, if the rule has one.
    pub fn destination_filter(&self) -> Option<Destination> {
        self.dest
    }

    /// Chance in [0, 1] that a matching syscall is decided by this rule.
    pub fn probability(&self) -> f64 {
        self.probability
    }

    /// Adds `n` decisions counted outside faultd (in-kernel backends): each is a match and a hit.
    pub fn add_hits(&self, n: u64) {
        self.add_counts(n, n);
    }

    /// Adds matches and hits counted outside faultd (an in-kernel draw may match without firing).
    pub fn add_counts(&self, matches: u64, hits: u64) {
        self.matches.fetch_add(matches, Ordering::Relaxed);
        self.hits.fetch_add(hits, Ordering::Relaxed);
    }

    /// The fault set's random source the rule draws from.
    pub(crate) fn rng(&self) -> &Arc<SeededRng> {
        &self.rng
    }

    /// Times the rule matched a syscall, fired or not.
    pub fn matches_count(&self) -> u64 {
        self.matches.load(Ordering::Relaxed)
    }

    /// Times the rule decided a syscall.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The next number of the rule's seeded sequence, in [0, 1) (a torn power loss's cut).
    pub(crate) fn unit(&self) -> f64 {
        self.rng.next_unit()
    }

    /// The rule's trigger.
    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    fn draw(&self) -> bool {
        let nth = self.matches.fetch_add(1, Ordering::Relaxed) + 1;
        if nth <= self.trigger.after {
            return false;
        }
        if let Some(max) = self.trigger.max_fires {
            // Reserve a fire before drawing, so concurrent callers never exceed the budget.
            let reserved = self
                .hits
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                    (h < max).then_some(h + 1)
                });
            if reserved.is_err() {
                return false;
            }
            let fires = self.probability >= 1.0 || self.rng.next_unit() < self.probability;
            if !fires {
                self.hits.fetch_sub(1, Ordering::Relaxed);
            }
            return fires;
        }
        let fires = self.probability >= 1.0 || self.rng.next_unit() < self.probability;
        if fires {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        fires
    }
}

/// Every active rule of one service, in precedence order.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    /// How many of `rules` were given (the rest are implied by power-loss globs).
    explicit: usize,
    file_rule: bool,
    index: index::Index,
}

impl RuleSet {
    /// A snapshot of `rules` in the given order.
    ///
    /// A `power_loss` rule with a path glob also tracks that glob: a `volatile` rule on the write
    /// family, ftruncate and fallocate with the same glob is added after every other rule (it never
    /// shadows one; it decides only calls no other rule takes).
    pub fn new(mut rules: Vec<Arc<Rule>>) -> Self {
        let file_rule = rules.iter().any(|r| r.is_file_rule());
        let explicit = rules.len();
        let implied: Vec<Arc<Rule>> = rules.iter().filter_map(|r| tracks_glob(r)).collect();
        rules.extend(implied);
        let index = index::Index::new(&rules);
        RuleSet {
            rules,
            explicit,
            file_rule,
            index,
        }
    }

    /// Whether some rule names syscall `nr` (whatever its action): its target is then worth resolving.
    pub fn concerns(&self, nr: u32) -> bool {
        self.index.concerns(nr)
    }

    /// First rule that matches `nr` and `target` and whose probability draw fires; counts matches and
    /// hits. `None` means the syscall proceeds untouched.
    pub fn decide(&self, nr: u32, target: &Target<'_>) -> Option<&Arc<Rule>> {
        if !self.index.concerns(nr) {
            return None;
        }
        let sc = syscalls::by_nr(nr)?;
        self.index.decide(&self.rules, sc, target)
    }

    /// Whether any active rule concerns files (io_uring_setup is then refused with ENOSYS, so io_uring
    /// users fall back to plain syscalls that faultd sees).
    pub fn has_file_rule(&self) -> bool {
        self.file_rule
    }

    /// The rules, in precedence order.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules[..self.explicit]
    }
}

/// The volatile rule a `power_loss` rule with a path glob implies (id 0: it is no rule of the
/// client's, and counts no hits of one).
fn tracks_glob(rule: &Rule) -> Option<Arc<Rule>> {
    if !matches!(rule.action, Action::PowerLoss { .. }) {
        return None;
    }
    let glob = rule.path_glob.clone()?;
    let spec = RuleSpec {
        trigger: Default::default(),
        service: rule.service.to_string(),
        op: None,
        syscalls: vec!["write".into(), "ftruncate".into(), "fallocate".into()],
        path_glob: Some(glob),
        destination: None,
        action: Action::Volatile,
        probability: 1.0,
        label: rule.label.as_deref().map(str::to_owned),
    };
    let rng = Arc::new(SeededRng::new(0));
    Rule::compile(0, rule.fault_set.clone(), &spec, rng)
        .ok()
        .map(Arc::new)
}

/// The current [`RuleSet`] of a service; backends load it per syscall, the session publishes new ones.
#[derive(Debug, Default)]
pub struct RuleSlot(RwLock<Arc<RuleSet>>);

impl RuleSlot {
    /// The current snapshot.
    pub fn load(&self) -> Arc<RuleSet> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Publishes a new snapshot; syscalls decided after this see it.
    pub fn store(&self, set: Arc<RuleSet>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = set;
    }
}

#[cfg(test)]
mod tests;
