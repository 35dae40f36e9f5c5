//! The registry routes rules through the [`Backend`] trait alone: a fake backend registered here gets
//! the rules it accepts, without any change outside the registry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::rules::{Action, RuleSpec, SeededRng};
use crate::syscalls;

/// A backend that takes denials of `unlink` for free and remembers what it was given.
struct Fake {
    kind: BackendKind,
    cost: u32,
    available: bool,
    installed: Mutex<Vec<u32>>,
}

impl Fake {
    fn new(kind: BackendKind, cost: u32) -> Fake {
        Fake {
            kind,
            cost,
            available: true,
            installed: Mutex::default(),
        }
    }
}

impl Backend for Arc<Fake> {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    fn capability(&self) -> probe::Backend {
        probe::Backend {
            name: self.kind.as_str(),
            available: self.available,
            reason: if self.available {
                "fake".into()
            } else {
                "switched off".into()
            },
            actions: Vec::new(),
        }
    }

    fn cost(&self, _rule: &Rule) -> u32 {
        self.cost
    }

    fn accepts(&self, rule: &Rule, _service: &ServiceTarget<'_>) -> Result<(), Refusal> {
        let unlink_deny =
            matches!(rule.action, Action::Deny { .. }) && rule.syscall_names() == ["unlink"];
        if self.kind == BackendKind::Seccomp || unlink_deny {
            Ok(())
        } else {
            Err(Refusal::Unsupported(format!(
                "{} only denies unlink",
                self.kind
            )))
        }
    }

    fn install(&self, _service: &ServiceTarget<'_>, rules: &[Arc<Rule>]) -> Result<(), String> {
        *self.installed.lock().unwrap() = rules.iter().map(|r| r.id).collect();
        Ok(())
    }
}

fn rule(id: u32, syscall: &str, action: Action) -> Rule {
    rule_of(id, &[syscall], action)
}

fn rule_of(id: u32, syscalls: &[&str], action: Action) -> Rule {
    let spec = RuleSpec {
        trigger: Default::default(),
        service: "db".into(),
        op: None,
        syscalls: syscalls.iter().map(|s| s.to_string()).collect(),
        path_glob: None,
        destination: None,
        action,
        probability: 1.0,
        label: None,
    };
    Rule::compile(id, "fs1".into(), &spec, Arc::new(SeededRng::new(0))).unwrap()
}

struct Service {
    name: Arc<str>,
    intercepted: Vec<&'static syscalls::Syscall>,
    rules: Arc<RuleSlot>,
    bus: Arc<EventBus>,
    state: BackendState,
}

impl Service {
    fn new() -> Service {
        Service {
            name: "db".into(),
            intercepted: ["unlink", "mkdir"]
                .iter()
                .flat_map(|s| syscalls::expand(s).unwrap())
                .collect(),
            rules: Arc::default(),
            bus: Arc::new(EventBus::new(16)),
            state: BackendState::default(),
        }
    }

    fn target(&self) -> ServiceTarget<'_> {
        ServiceTarget {
            session: "s1",
            name: &self.name,
            cgroup: None,
            attached: false,
            intercepted: &self.intercepted,
            rules: &self.rules,
            bus: &self.bus,
            state: &self.state,
        }
    }
}

#[test]
fn rules_go_to_the_cheapest_backend_that_accepts_them() {
    let slow = Arc::new(Fake::new(BackendKind::Seccomp, 10));
    let fake = Arc::new(Fake::new(BackendKind::EbpfLsm, 1));
    let registry = Registry::new(vec![Box::new(slow.clone()), Box::new(fake.clone())]);
    let service = Service::new();
    let target = service.target();

    let deny = rule(1, "unlink", Action::Deny { errno: libc::EIO });
    let delay = rule(2, "unlink", Action::Delay(Duration::from_millis(1)));
    assert_eq!(
        registry.choose(&deny, &target, None),
        Ok(BackendKind::EbpfLsm)
    );
    assert_eq!(
        registry.choose(&delay, &target, None),
        Ok(BackendKind::Seccomp)
    );
    assert_eq!(
        registry.choose(&deny, &target, Some(BackendKind::Seccomp)),
        Ok(BackendKind::Seccomp)
    );
    let refused = registry
        .choose(&delay, &target, Some(BackendKind::EbpfLsm))
        .unwrap_err();
    assert_eq!(
        refused,
        Refusal::Unsupported("ebpf-lsm only denies unlink".into())
    );
    let missing = registry
        .choose(&deny, &target, Some(BackendKind::EbpfCgroup))
        .unwrap_err();
    assert!(
        missing.reason().contains("no ebpf-cgroup backend"),
        "{missing:?}"
    );

    let mut deny = deny;
    deny.backend = BackendKind::EbpfLsm;
    let mut delay = delay;
    delay.backend = BackendKind::Seccomp;
    let rules = [Arc::new(deny), Arc::new(delay)];
    registry.install(&target, rules.iter()).unwrap();
    assert_eq!(*fake.installed.lock().unwrap(), [1]);
    assert_eq!(*slow.installed.lock().unwrap(), [2]);
}

#[test]
fn an_unavailable_backend_is_skipped_and_named_when_forced() {
    let slow = Arc::new(Fake::new(BackendKind::Seccomp, 10));
    let mut off = Fake::new(BackendKind::EbpfLsm, 1);
    off.available = false;
    let registry = Registry::new(vec![Box::new(slow), Box::new(Arc::new(off))]);
    let service = Service::new();
    let deny = rule(1, "unlink", Action::Deny { errno: libc::EIO });
    assert_eq!(
        registry.choose(&deny, &service.target(), None),
        Ok(BackendKind::Seccomp)
    );
    let forced = registry
        .choose(&deny, &service.target(), Some(BackendKind::EbpfLsm))
        .unwrap_err();
    assert_eq!(
        forced,
        Refusal::Unavailable("the ebpf-lsm backend is not available here: switched off".into())
    );
}

#[test]
fn a_rule_spanning_two_backends_is_split_per_syscall_unless_forced() {
    let seccomp = Arc::new(Fake::new(BackendKind::Seccomp, 10));
    let lsm = Arc::new(Fake::new(BackendKind::EbpfLsm, 1));
    let registry = Registry::new(vec![Box::new(seccomp), Box::new(lsm)]);
    let service = Service::new();
    let target = service.target();
    let names = |route: Vec<(BackendKind, Vec<&'static syscalls::Syscall>)>| {
        route
            .into_iter()
            .map(|(kind, scs)| (kind, scs.iter().map(|s| s.name).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };

    let deny = rule_of(1, &["mkdir", "unlink"], Action::Deny { errno: libc::EIO });
    assert_eq!(
        names(registry.route(&deny, &target, None).unwrap()),
        [
            (BackendKind::Seccomp, vec!["mkdir"]),
            (BackendKind::EbpfLsm, vec!["unlink"])
        ]
    );
    assert_eq!(
        names(
            registry
                .route(&deny, &target, Some(BackendKind::Seccomp))
                .unwrap()
        ),
        [(BackendKind::Seccomp, vec!["mkdir", "unlink"])]
    );
    // Nothing to split: every syscall has the same cheapest backend.
    let delay = rule_of(
        2,
        &["mkdir", "unlink"],
        Action::Delay(Duration::from_millis(1)),
    );
    assert_eq!(
        names(registry.route(&delay, &target, None).unwrap()),
        [(BackendKind::Seccomp, vec!["mkdir", "unlink"])]
    );
    let part = deny.part(7, vec![syscalls::lookup("unlink").unwrap()]);
    assert_eq!((part.id, part.syscall_names()), (7, &["unlink"][..]));
}
