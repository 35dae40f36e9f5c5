//! What the cgroup programs' maps hold: destination keys with the deciding rule, in precedence order,
//! and the peers partitions drop packets of; and the `Pod` wrappers aya reads and writes them through.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use aya::maps::{HashMap, MapData};
use aya::{Ebpf, Pod};
use faultd_ebpf::cgroup::{ConnKey, ConnVerdict, DropRule, FD_DROP_EGRESS, FD_DROP_INGRESS};

use crate::rules::{Action, Rule};

#[derive(Clone, Copy)]
#[repr(transparent)]
pub(super) struct Key(pub(super) ConnKey);
// SAFETY: ConnKey is #[repr(C)] plain old data with explicit padding, valid for any bit pattern.
unsafe impl Pod for Key {}

#[derive(Clone, Copy)]
#[repr(transparent)]
pub(super) struct Verdict(pub(super) ConnVerdict);
// SAFETY: ConnVerdict is #[repr(C)] plain old data without padding, valid for any bit pattern.
unsafe impl Pod for Verdict {}

#[derive(Clone, Copy)]
#[repr(transparent)]
pub(super) struct PeerDrop(pub(super) DropRule);
// SAFETY: DropRule is #[repr(C)] plain old data without padding, valid for any bit pattern.
unsafe impl Pod for PeerDrop {}

/// A peer whose TCP and UDP packets a partition drops, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropPeer {
    /// The peer's address, any when `None`.
    pub ip: Option<IpAddr>,
    /// The peer's port (an interface port of the other service).
    pub port: u16,
    /// The partition rule it belongs to (for the in-kernel drop counter).
    pub rule_id: u32,
}

pub(super) fn map<'a, K: Pod, V: Pod>(
    bpf: &'a mut Ebpf,
    name: &str,
) -> Result<HashMap<&'a mut MapData, K, V>, String> {
    let map = bpf
        .map_mut(name)
        .ok_or_else(|| format!("faultd's cgroup object has no map {name}"))?;
    HashMap::try_from(map).map_err(|e| format!("{name}: {e}"))
}

/// The drop-peers map for `peers`: one entry per distinct peer key, the first peer's rule, both
/// directions.
pub(super) fn drop_map(peers: &[DropPeer]) -> BTreeMap<ConnKey, DropRule> {
    let mut out = BTreeMap::new();
    for peer in peers {
        out.entry(ConnKey::new(peer.ip, peer.port))
            .or_insert(DropRule {
                rule_id: peer.rule_id,
                directions: FD_DROP_EGRESS | FD_DROP_INGRESS,
            });
    }
    out
}

/// The rules map for `rules` in precedence order: one entry per distinct destination key, holding the
/// first rule that covers it, so the programs' most-specific-first lookup finds the deciding rule.
pub(super) fn precedence_map(rules: &[Arc<Rule>]) -> BTreeMap<ConnKey, ConnVerdict> {
    let key_of = |rule: &Rule| match rule.destination_filter() {
        None => ConnKey::new(None, 0),
        Some(d) => ConnKey::new(d.ip, d.port),
    };
    let covers = |rule: &Rule, key: &ConnKey| match rule.destination_filter() {
        None => true,
        Some(d) if d.ip.is_none() => key.port == d.port,
        Some(d) => ConnKey::new(d.ip, d.port) == *key,
    };
    let mut out = BTreeMap::new();
    for rule in rules {
        let key = key_of(rule);
        if out.contains_key(&key) {
            continue;
        }
        if let Some(winner) = rules.iter().find(|r| covers(r, &key)) {
            let errno = match winner.action {
                Action::Deny { errno } => errno,
                _ => 0,
            };
            out.insert(
                key,
                ConnVerdict {
                    rule_id: winner.id,
                    errno,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{RuleSpec, SeededRng};

    fn rule(id: u32, dest: Option<&str>, action: Action) -> Arc<Rule> {
        let spec = RuleSpec {
            trigger: Default::default(),
            service: "victim".into(),
            op: None,
            syscalls: vec!["connect".into()],
            path_glob: None,
            destination: dest.map(str::to_string),
            action,
            probability: 1.0,
            label: None,
        };
        Arc::new(Rule::compile(id, "fs1".into(), &spec, Arc::new(SeededRng::new(1))).unwrap())
    }

    const REFUSED: Action = Action::Deny {
        errno: libc::ECONNREFUSED,
    };

    #[test]
    fn earlier_rules_win_over_more_specific_keys() {
        let rules = [
            rule(1, Some(":5432"), REFUSED),
            rule(
                2,
                Some("127.0.0.1:5432"),
                Action::Deny {
                    errno: libc::ETIMEDOUT,
                },
            ),
            rule(3, Some("127.0.0.1:80"), Action::Allow),
            rule(4, None, REFUSED),
        ];
        let map = precedence_map(&rules);
        let local = |p| ConnKey::new(Some([127, 0, 0, 1].into()), p);
        assert_eq!(map[&ConnKey::new(None, 5432)].rule_id, 1);
        assert_eq!(map[&local(5432)].rule_id, 1, "rule 1 comes first");
        assert_eq!(map[&local(80)].rule_id, 3);
        assert_eq!(map[&local(80)].errno, 0);
        assert_eq!(map[&ConnKey::new(None, 0)].rule_id, 4);
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn drop_peers_are_keyed_by_address_and_port_first_rule_wins() {
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let peers = [
            DropPeer {
                ip: None,
                port: 5432,
                rule_id: 1,
            },
            DropPeer {
                ip: local,
                port: 80,
                rule_id: 2,
            },
            DropPeer {
                ip: None,
                port: 5432,
                rule_id: 3,
            },
        ];
        let map = drop_map(&peers);
        assert_eq!(map.len(), 2);
        let any = &map[&ConnKey::new(None, 5432)];
        assert_eq!(any.rule_id, 1);
        assert_eq!(any.directions, FD_DROP_EGRESS | FD_DROP_INGRESS);
        assert_eq!(map[&ConnKey::new(local, 80)].rule_id, 2);
        assert!(drop_map(&[]).is_empty());
    }
}
