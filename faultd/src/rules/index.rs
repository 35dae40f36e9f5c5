//! The per-syscall index of a [`RuleSet`](super::RuleSet): which rules concern a syscall number, and
//! their path globs precompiled into one [`GlobSet`].
//!
//! Deciding a syscall then costs the same whatever the number of rules on *other* syscalls (a
//! lookup by number), and, for a file syscall whose rules all filter on paths, one [`GlobSet`] match
//! whatever the number of globs: a path no glob matches is answered "no rule" without visiting any
//! rule. When something matches, the candidates are visited in precedence order (the set reports the
//! matching globs sorted, which is rule order), so the first matching rule whose probability draw fires
//! still wins, and only matching rules draw (their `matches`/`hits` counters are what they were).
//!
//! Syscall numbers whose rule lists are equal (`write`, `writev` and `pwrite64` of a `write` rule)
//! share one entry, so a family's globs are compiled once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use globset::{Candidate, GlobSet, GlobSetBuilder};

use super::{Rule, Target};
use crate::syscalls::{self, Syscall};

/// The rules of one syscall number.
#[derive(Debug)]
struct Entry {
    /// Positions in the rule set, in precedence order.
    rules: Box<[u32]>,
    /// The globs of those rules that have one, in the same order; only for file syscalls.
    globs: Option<GlobSet>,
    /// For glob `i` of `globs`, its rule's index in `rules`.
    glob_at: Box<[u32]>,
    /// Whether some rule of `rules` has no glob (so a path no glob matches may still match it).
    unglobbed: bool,
}

/// The index: an entry per syscall number that some rule names.
#[derive(Debug, Default)]
pub(super) struct Index {
    by_nr: Vec<Option<Arc<Entry>>>,
}

thread_local! {
    /// The matching glob indices of the current decision (reused: deciding allocates nothing).
    static MATCHED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

impl Index {
    /// Indexes `rules` (in precedence order).
    pub(super) fn new(rules: &[Arc<Rule>]) -> Index {
        let mut lists: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pos, rule) in rules.iter().enumerate() {
            for sc in &rule.syscalls {
                let list = lists.entry(sc.nr).or_default();
                if list.last() != Some(&(pos as u32)) {
                    list.push(pos as u32);
                }
            }
        }
        let mut shared: HashMap<(Vec<u32>, bool), Arc<Entry>> = HashMap::new();
        let mut by_nr: Vec<Option<Arc<Entry>>> = Vec::new();
        for (nr, list) in lists {
            let file = syscalls::by_nr(nr).is_some_and(syscalls::is_file_syscall);
            let entry = shared
                .entry((list, file))
                .or_insert_with_key(|(list, file)| Arc::new(Entry::new(rules, list, *file)))
                .clone();
            let at = nr as usize;
            if by_nr.len() <= at {
                by_nr.resize(at + 1, None);
            }
            by_nr[at] = Some(entry);
        }
        Index { by_nr }
    }

    /// Whether some rule names syscall `nr`.
    pub(super) fn concerns(&self, nr: u32) -> bool {
        self.entry(nr).is_some()
    }

    fn entry(&self, nr: u32) -> Option<&Entry> {
        self.by_nr.get(nr as usize)?.as_deref()
    }

    /// The first rule of `rules` that matches `sc` on `target` and whose draw fires.
    pub(super) fn decide<'r>(
        &self,
        rules: &'r [Arc<Rule>],
        sc: &Syscall,
        target: &Target<'_>,
    ) -> Option<&'r Arc<Rule>> {
        let entry = self.entry(sc.nr)?;
        let rule = |i: u32| &rules[entry.rules[i as usize] as usize];
        let Some(globs) = &entry.globs else {
            // No glob concerns this syscall: visit its rules in order.
            return entry
                .rules
                .iter()
                .map(|&pos| &rules[pos as usize])
                .find(|r| r.matches(sc, target) && r.draw());
        };
        let Target::Path(path) = target else {
            // A file glob needs a resolved path: only the rules without one can match.
            if !entry.unglobbed {
                return None;
            }
            return (0..entry.rules.len() as u32)
                .map(rule)
                .find(|r| r.glob.is_none() && r.matches(sc, target) && r.draw());
        };
        let candidate = Candidate::new(path);
        if !entry.unglobbed && !globs.is_match_candidate(&candidate) {
            return None;
        }
        MATCHED.with(|matched| {
            let mut matched = matched.borrow_mut();
            globs.matches_candidate_into(&candidate, &mut matched);
            // Merge, in rule order, the rules whose glob matched with the rules without a glob.
            let mut hits = matched.iter().map(|&g| entry.glob_at[g]).peekable();
            for i in 0..entry.rules.len() as u32 {
                let r = rule(i);
                let candidate = if r.glob.is_some() {
                    if hits.peek() != Some(&i) {
                        continue;
                    }
                    hits.next();
                    true
                } else {
                    r.matches(sc, target)
                };
                if candidate && r.draw() {
                    return Some(r);
                }
                if !entry.unglobbed && hits.peek().is_none() {
                    break;
                }
            }
            None
        })
    }
}

impl Entry {
    fn new(rules: &[Arc<Rule>], list: &[u32], file: bool) -> Entry {
        let mut builder = GlobSetBuilder::new();
        let mut glob_at = Vec::new();
        let mut unglobbed = false;
        for (i, &pos) in list.iter().enumerate() {
            match &rules[pos as usize].glob {
                Some(glob) if file => {
                    builder.add(glob.glob().clone());
                    glob_at.push(i as u32);
                }
                _ => unglobbed = true,
            }
        }
        // Every glob already compiled alone (Rule::compile), so the set builds; if it ever did not,
        // deciding by visiting each rule is still right, only slower.
        let globs = (!glob_at.is_empty())
            .then(|| builder.build().ok())
            .flatten();
        if globs.is_none() {
            glob_at.clear();
        }
        Entry {
            rules: list.into(),
            globs,
            glob_at: glob_at.into(),
            unglobbed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Action, RuleSet, RuleSpec, SeededRng};
    use super::*;

    const EIO: Action = Action::Deny { errno: libc::EIO };
    const WRITE: u32 = libc::SYS_write as u32;

    fn rule(id: u32, syscalls: &[&str], glob: Option<&str>, action: Action, p: f64) -> Arc<Rule> {
        let spec = RuleSpec {
            trigger: Default::default(),
            service: "svc".into(),
            op: None,
            syscalls: syscalls.iter().map(|s| s.to_string()).collect(),
            path_glob: glob.map(str::to_string),
            destination: None,
            action,
            probability: p,
            label: None,
        };
        Arc::new(
            Rule::compile(
                id,
                "fs".into(),
                &spec,
                Arc::new(SeededRng::new(u64::from(id))),
            )
            .unwrap(),
        )
    }

    /// What the unindexed definition decides: the first rule, in order, that matches and fires.
    fn linear<'r>(rules: &'r [Arc<Rule>], nr: u32, target: &Target<'_>) -> Option<&'r Arc<Rule>> {
        let sc = syscalls::by_nr(nr)?;
        rules.iter().find(|r| r.matches(sc, target) && r.draw())
    }

    #[test]
    fn precedence_is_rule_order_across_globbed_and_unglobbed_rules() {
        let set = RuleSet::new(vec![
            rule(1, &["write"], Some("/data/keep/*.wal"), Action::Allow, 1.0),
            rule(2, &["fsync"], None, EIO, 1.0),
            rule(3, &["write"], Some("/data/**/*.wal"), EIO, 1.0),
            rule(
                4,
                &["write", "fsync"],
                None,
                Action::Deny {
                    errno: libc::ENOSPC,
                },
                1.0,
            ),
            rule(5, &["write"], Some("/data/keep/*.wal"), EIO, 1.0),
        ]);
        let id = |nr: u32, t: Target<'_>| set.decide(nr, &t).map(|r| r.id);
        assert_eq!(id(WRITE, Target::Path("/data/keep/a.wal")), Some(1));
        assert_eq!(id(WRITE, Target::Path("/data/x/a.wal")), Some(3));
        assert_eq!(id(WRITE, Target::Path("/data/x/a.log")), Some(4));
        assert_eq!(id(WRITE, Target::Path("socket:[9]")), Some(4));
        assert_eq!(id(WRITE, Target::None), Some(4));
        assert_eq!(id(libc::SYS_fsync as u32, Target::None), Some(2));
        assert_eq!(id(libc::SYS_fdatasync as u32, Target::None), Some(2));
        assert_eq!(
            id(libc::SYS_read as u32, Target::Path("/data/x/a.wal")),
            None
        );
        assert!(set.concerns(libc::SYS_pwrite64 as u32));
        assert!(!set.concerns(libc::SYS_read as u32));
        // Rule 5 is shadowed by rule 1 and never even drew.
        assert_eq!(set.rules()[4].matches_count(), 0);
        assert_eq!(set.rules()[0].hits(), 1);
        assert_eq!(set.rules()[1].hits(), 2);
        assert_eq!(set.rules()[3].hits(), 3);
    }

    #[test]
    fn only_matching_rules_draw_and_a_failed_draw_falls_through() {
        let never = rule(1, &["write"], Some("/tmp/*.wal"), EIO, 0.0);
        let other = rule(2, &["write"], Some("/var/*.log"), EIO, 1.0);
        let then = rule(3, &["write"], Some("/tmp/**"), Action::Allow, 1.0);
        let set = RuleSet::new(vec![never, other, then]);
        assert_eq!(
            set.decide(WRITE, &Target::Path("/tmp/a.wal")).unwrap().id,
            3
        );
        assert_eq!(
            set.decide(WRITE, &Target::Path("/elsewhere")).map(|r| r.id),
            None
        );
        let r = set.rules();
        assert_eq!((r[0].matches_count(), r[0].hits()), (1, 0));
        assert_eq!((r[1].matches_count(), r[1].hits()), (0, 0));
        assert_eq!((r[2].matches_count(), r[2].hits()), (1, 1));
    }

    #[test]
    fn a_thousand_rules_decide_like_the_linear_scan() {
        let mut rules = Vec::new();
        for i in 0..1000u32 {
            let (calls, glob): (&[&str], Option<String>) = match i % 5 {
                0 => (&["write"], Some(format!("/srv/svc-{i}/*.wal"))),
                1 => (&["fsync"], Some(format!("/srv/svc-{i}/**"))),
                2 => (&["write", "read"], Some(format!("/srv/*/{i}.log"))),
                3 => (&["pwrite64"], Some(format!("**/*.d{i}"))),
                _ => (&["write"], (i % 10 == 4).then(|| "/never/*".to_string())),
            };
            let p = if i % 7 == 0 { 0.5 } else { 1.0 };
            rules.push(rule(i + 1, calls, glob.as_deref(), EIO, p));
        }
        // Same seeds, separate counters: index and linear scan must draw the same sequence.
        let twin: Vec<Arc<Rule>> = rules
            .iter()
            .map(|r| {
                let glob = r.path_glob.as_deref();
                let names: Vec<&str> = r.syscall_names().to_vec();
                rule(r.id, &names, glob, r.action, r.probability())
            })
            .collect();
        let set = RuleSet::new(rules);
        let targets = [
            "/srv/svc-0/a.wal",
            "/srv/svc-5/a.wal",
            "/srv/x/2.log",
            "/srv/x/7.log",
            "/a/b.d3",
            "/never/x",
            "/dev/null",
        ];
        for nr in [
            WRITE,
            libc::SYS_read as u32,
            libc::SYS_fsync as u32,
            libc::SYS_pwrite64 as u32,
        ] {
            for _ in 0..3 {
                for t in targets {
                    let got = set.decide(nr, &Target::Path(t)).map(|r| r.id);
                    let want = linear(&twin, nr, &Target::Path(t)).map(|r| r.id);
                    assert_eq!(got, want, "nr {nr} on {t}");
                }
                let got = set.decide(nr, &Target::None).map(|r| r.id);
                assert_eq!(got, linear(&twin, nr, &Target::None).map(|r| r.id));
            }
        }
        for (a, b) in set.rules().iter().zip(&twin) {
            assert_eq!(
                (a.matches_count(), a.hits()),
                (b.matches_count(), b.hits()),
                "rule {}",
                a.id
            );
        }
    }
}
