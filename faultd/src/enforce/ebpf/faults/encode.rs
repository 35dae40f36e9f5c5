//! What the in-kernel fault programs read, computed from faultd's rules: globs compiled to the NFA
//! `faults.bpf.c` runs, probabilities as draw thresholds, and the (cgroup, syscall) entries in
//! precedence order with the hook that decides each rule. Pure functions, tested on any host.

use std::collections::BTreeMap;

use faultd_ebpf::faults::{
    ALWAYS, FaultEntry, FaultKey, FaultRule, Glob, HOOK_ENTRY, HOOK_OP, HOOK_OPEN, HOOK_PERM,
    NO_FD, RULES_PER_ENTRY,
};
use faultd_model::backend::{LSM_OP_SYSCALLS, LSM_PERMISSION_SYSCALLS, OPEN_SYSCALLS};

use crate::enforce::BackendKind;
use crate::rules::{Action, Rule};
use crate::syscalls::{self, ArgKind, Syscall};

/// States a glob may use (bit 63 is the last accept state).
const MAX_TOKENS: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `?`: one byte other than `/`.
    One,
    /// `*`: any bytes other than `/`.
    Star,
    /// `**`: any bytes.
    DeepStar,
}

/// Compiles a glob (faultd's syntax: `*` and `?` within a segment, `**` across) to the programs' NFA;
/// the error is the sentence saying which part the kernel matcher lacks.
pub(crate) fn compile_glob(glob: &str) -> Result<Glob, String> {
    let mut tokens = Vec::new();
    let bytes = glob.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let token = match bytes[i] {
            b'*' if bytes.get(i + 1) == Some(&b'*') => {
                i += 1;
                Token::DeepStar
            }
            b'*' => Token::Star,
            b'?' => Token::One,
            c @ (b'[' | b']' | b'{' | b'}' | b'\\') => {
                return Err(format!(
                    "the in-kernel backends match globs with `*`, `?` and `**` only, and {glob:?} \
                     uses `{}`",
                    c as char
                ));
            }
            c => Token::Byte(c),
        };
        tokens.push(token);
        i += 1;
    }
    if tokens.len() > MAX_TOKENS {
        return Err(format!(
            "the in-kernel backends match globs of at most {MAX_TOKENS} characters, and {glob:?} is \
             longer"
        ));
    }
    let mut g = Glob::default();
    for (j, token) in tokens.iter().enumerate() {
        let bit = 1u64 << j;
        match token {
            Token::Byte(c) => g.consume[*c as usize] |= bit,
            Token::One => (1..256).filter(|c| *c != b'/' as usize).for_each(|c| {
                g.consume[c] |= bit;
            }),
            Token::Star | Token::DeepStar => {
                g.eps1 |= bit;
                let deep = *token == Token::DeepStar;
                for c in 1..256 {
                    if deep || c != b'/' as usize {
                        g.loop_[c] |= bit << 1;
                    }
                }
                // `**/` after a `/` or at the start also matches no directory at all.
                let segment_start = j == 0 || tokens[j - 1] == Token::Byte(b'/');
                if deep && segment_start && tokens.get(j + 1) == Some(&Token::Byte(b'/')) {
                    g.eps2 |= bit;
                }
            }
        }
    }
    g.accept = 1u64 << tokens.len();
    Ok(g)
}

/// What `faults.bpf.c`'s `glob_match` computes, for tests.
#[cfg(test)]
pub(crate) fn glob_matches(g: &Glob, path: &str) -> bool {
    let close = |d: u64| {
        let d = d | ((d & g.eps1) << 1);
        let d = d | ((d & g.eps2) << 2);
        d | ((d & g.eps1) << 1)
    };
    let mut d = close(1);
    for c in path.bytes().take(faultd_ebpf::faults::PATH_MAX - 1) {
        d = close(((d & g.consume[c as usize]) << 1) | (d & g.loop_[c as usize]));
        if d == 0 {
            return false;
        }
    }
    d & g.accept != 0
}

/// The draw threshold for probability `p`: the programs fire when `splitmix64 >> 11` is below it,
/// which is exactly when faultd's [`crate::rules::SeededRng`] would draw below `p`.
pub(crate) fn threshold(p: f64) -> u64 {
    if p >= 1.0 {
        ALWAYS
    } else {
        (p * (1u64 << 53) as f64).ceil() as u64
    }
}

/// The hook that decides syscall `sc` of a rule on backend `kind`, or why none can.
pub(crate) fn hook(kind: BackendKind, sc: &Syscall, has_glob: bool) -> Result<u8, String> {
    let open = OPEN_SYSCALLS.contains(&sc.name);
    match kind {
        BackendKind::EbpfOverride if open && has_glob => Ok(HOOK_OPEN),
        BackendKind::EbpfOverride => Ok(HOOK_ENTRY),
        BackendKind::EbpfLsm if open => Ok(HOOK_OPEN),
        BackendKind::EbpfLsm if LSM_PERMISSION_SYSCALLS.contains(&sc.name) => Ok(HOOK_PERM),
        BackendKind::EbpfLsm if LSM_OP_SYSCALLS.contains(&sc.name) => Ok(HOOK_OP),
        _ => Err(format!("the {kind} backend has no hook for {}", sc.name)),
    }
}

/// The slots a rule's in-kernel form refers to.
pub(crate) trait Slots {
    /// The glob slot (0-based) of `glob`.
    fn glob(&self, glob: &str) -> u16;
    /// The random-source slot of the rule's fault set.
    fn rng(&self, rule: &Rule) -> u16;
}

/// The entries of one cgroup for `rules` (precedence order, each with its backend).
pub(crate) fn entries(
    cgroup_id: u64,
    rules: &[(&Rule, BackendKind)],
    slots: &impl Slots,
) -> Result<BTreeMap<FaultKey, FaultEntry>, String> {
    let mut out: BTreeMap<FaultKey, FaultEntry> = BTreeMap::new();
    for (rule, kind) in rules {
        let errno = match rule.action {
            Action::Deny { errno } => errno,
            Action::Allow => 0,
            _ => {
                return Err(format!(
                    "the {kind} backend cannot enforce {}",
                    rule.action.describe()
                ));
            }
        };
        for sc in &rule.syscalls {
            let glob = rule
                .path_glob
                .as_deref()
                .filter(|_| syscalls::is_file_syscall(sc));
            let key = FaultKey {
                cgroup_id,
                nr: sc.nr,
                _pad: 0,
            };
            let entry = out.entry(key).or_insert_with(|| FaultEntry {
                fd_arg: match sc.args {
                    ArgKind::Fd { fd } => fd as u8,
                    _ => NO_FD,
                },
                ..FaultEntry::default()
            });
            let slot = entry.count as usize;
            if slot >= RULES_PER_ENTRY {
                return Err(format!(
                    "the in-kernel backends take at most {RULES_PER_ENTRY} rules per syscall of a \
                     service, and {} has more on {}",
                    rule.service, sc.name
                ));
            }
            entry.rules[slot] = FaultRule {
                rule_id: rule.id,
                errno,
                threshold: threshold(rule.probability()),
                glob: glob.map_or(0, |g| slots.glob(g) + 1),
                rng: slots.rng(rule),
                hook: hook(*kind, sc, glob.is_some())?,
                _pad: [0; 3],
            };
            entry.count += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::rules::{RuleSpec, SeededRng, compile_glob as compile_globset};

    #[test]
    fn every_operation_syscall_has_an_lsm_program_and_a_hook() {
        let mut covered: Vec<&str> = faultd_ebpf::faults::OP_PROGRAMS
            .iter()
            .flat_map(|(_, _, syscalls)| syscalls.iter().copied())
            .collect();
        covered.sort_unstable();
        covered.dedup();
        let mut listed = LSM_OP_SYSCALLS.to_vec();
        listed.sort_unstable();
        assert_eq!(covered, listed);
        for name in LSM_OP_SYSCALLS {
            let sc = syscalls::lookup(name).unwrap();
            assert_eq!(hook(BackendKind::EbpfLsm, sc, false), Ok(HOOK_OP), "{name}");
        }
    }

    #[test]
    fn kernel_globs_agree_with_faultds_globs() {
        let globs = [
            "/data/*.wal",
            "/data/**/*.wal",
            "**/wal/*",
            "/tmp/?.log",
            "/srv/**",
            "**",
            "*.db",
            "/a/**/b/**/c",
            "/exact/path",
        ];
        let paths = [
            "/data/1.wal",
            "/data/x/1.wal",
            "/data/x/y/1.wal",
            "/data/1.wal.bak",
            "/data/.wal",
            "/wal/1",
            "/x/wal/1",
            "wal/1",
            "/x/wal/1/2",
            "/tmp/a.log",
            "/tmp/ab.log",
            "/tmp//.log",
            "/srv/a",
            "/srv/a/b",
            "x.db",
            "/x.db",
            "/a/b/c",
            "/a/x/b/y/c",
            "/a/bc",
            "/exact/path",
            "/exact/path2",
            "",
        ];
        for glob in globs {
            let ours = compile_glob(glob).unwrap();
            let theirs = compile_globset(glob).unwrap();
            for path in paths {
                assert_eq!(
                    glob_matches(&ours, path),
                    theirs.is_match(path),
                    "{glob:?} on {path:?}"
                );
            }
        }
    }

    #[test]
    fn globs_the_kernel_cannot_match_are_refused_in_a_sentence() {
        let why = compile_glob("/data/[ab].wal").unwrap_err();
        assert!(why.contains("uses `[`"), "{why}");
        let why = compile_glob(&"a".repeat(64)).unwrap_err();
        assert!(why.contains("at most 63"), "{why}");
        assert!(compile_glob(&"a".repeat(63)).is_ok());
    }

    /// The kernel's draw (threshold on the same SplitMix64 output) replays faultd's seeded sequence.
    #[test]
    fn thresholds_reproduce_the_seeded_sequence() {
        let splitmix = |seed: u64, n: u64| {
            let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for p in [0.0, 0.001, 0.25, 0.5, 0.999] {
            let rng = SeededRng::new(42);
            let t = threshold(p);
            for n in 0..2000 {
                let kernel = (splitmix(42, n) >> 11) < t;
                assert_eq!(kernel, rng.next_unit() < p, "p={p} draw {n}");
            }
        }
        assert_eq!(threshold(1.0), ALWAYS);
    }

    struct Fixed;
    impl Slots for Fixed {
        fn glob(&self, glob: &str) -> u16 {
            if glob.ends_with(".wal") { 3 } else { 0 }
        }
        fn rng(&self, _rule: &Rule) -> u16 {
            7
        }
    }

    fn rule(id: u32, syscalls: &[&str], glob: Option<&str>, action: Action, p: f64) -> Rule {
        let spec = RuleSpec {
            trigger: Default::default(),
            service: "db".into(),
            op: None,
            syscalls: syscalls.iter().map(|s| s.to_string()).collect(),
            path_glob: glob.map(str::to_string),
            destination: None,
            action,
            probability: p,
            label: None,
        };
        Rule::compile(id, "fs1".into(), &spec, Arc::new(SeededRng::new(1))).unwrap()
    }

    #[test]
    fn entries_keep_precedence_and_pick_the_hook() {
        let eio = Action::Deny { errno: libc::EIO };
        let persist = rule(1, &["write", "fsync"], Some("/d/*.wal"), eio, 1.0);
        let allow = rule(2, &["write"], None, Action::Allow, 1.0);
        let open = rule(3, &["open"], Some("/d/*.wal"), eio, 0.5);
        let kinds = [
            (&persist, BackendKind::EbpfOverride),
            (&allow, BackendKind::EbpfOverride),
            (&open, BackendKind::EbpfOverride),
        ];
        let map = entries(9, &kinds, &Fixed).unwrap();
        let at = |nr: i64| {
            map[&FaultKey {
                cgroup_id: 9,
                nr: nr as u32,
                _pad: 0,
            }]
        };
        let write = at(libc::SYS_write);
        assert_eq!(write.count, 2);
        assert_eq!(write.fd_arg, 0);
        assert_eq!(
            (
                write.rules[0].rule_id,
                write.rules[0].glob,
                write.rules[0].errno
            ),
            (1, 4, libc::EIO)
        );
        assert_eq!((write.rules[1].rule_id, write.rules[1].errno), (2, 0));
        assert_eq!(write.rules[0].hook, HOOK_ENTRY);
        assert_eq!(write.rules[0].threshold, ALWAYS);
        assert_eq!(at(libc::SYS_fsync).count, 1);
        let openat = at(libc::SYS_openat);
        assert_eq!(openat.fd_arg, NO_FD);
        assert_eq!(
            openat.rules[0].hook, HOOK_OPEN,
            "globbed opens are decided at file_open"
        );
        assert_eq!(openat.rules[0].rng, 7);
        assert_eq!(openat.rules[0].threshold, 1u64 << 52);
        // On ebpf-lsm, writes go to file_permission and fsync has no hook.
        let lsm = entries(9, &[(&allow, BackendKind::EbpfLsm)], &Fixed).unwrap();
        assert_eq!(lsm.values().next().unwrap().rules[0].hook, HOOK_PERM);
        let why = entries(9, &[(&persist, BackendKind::EbpfLsm)], &Fixed).unwrap_err();
        assert_eq!(why, "the ebpf-lsm backend has no hook for fsync");
        // At most RULES_PER_ENTRY rules per syscall.
        let many: Vec<Rule> = (0..9)
            .map(|i| rule(i + 1, &["write"], None, eio, 1.0))
            .collect();
        let kinds: Vec<_> = many
            .iter()
            .map(|r| (r, BackendKind::EbpfOverride))
            .collect();
        let why = entries(9, &kinds, &Fixed).unwrap_err();
        assert!(why.contains("at most 8 rules per syscall"), "{why}");
    }
}
