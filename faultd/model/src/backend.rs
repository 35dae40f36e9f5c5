//! The enforcement backends and what each can enforce in principle.
//!
//! [`refusal`] is the capability table: given a rule's shape it says, in one sentence, why a backend
//! could never enforce it. faultd's backends start from it and add what only the host knows (is the
//! backend loaded, does the filter intercept the syscall); faultctl uses it at spec load to refuse
//! rules on attached services. Adding a backend adds a [`BackendKind`] and an arm here.

use std::fmt;
use std::str::FromStr;

use crate::action::Action;

/// An enforcement backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    /// seccomp user notification: faultd answers each intercepted syscall.
    Seccomp,
    /// cgroup/connect4/6 and cgroup_skb programs: connect faults and partitions in the kernel.
    EbpfCgroup,
    /// raw_syscalls tracepoints: observation, and crash by `bpf_send_signal`.
    EbpfTrace,
    /// kprobe + `bpf_override_return` on syscall entry.
    EbpfOverride,
    /// BPF LSM hooks returning the errno.
    EbpfLsm,
}

impl BackendKind {
    /// Every backend, in the order `probe` lists them.
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Seccomp,
        BackendKind::EbpfOverride,
        BackendKind::EbpfLsm,
        BackendKind::EbpfCgroup,
        BackendKind::EbpfTrace,
    ];

    /// `seccomp`, `ebpf-cgroup`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Seccomp => "seccomp",
            BackendKind::EbpfCgroup => "ebpf-cgroup",
            BackendKind::EbpfTrace => "ebpf-trace",
            BackendKind::EbpfOverride => "ebpf-override",
            BackendKind::EbpfLsm => "ebpf-lsm",
        }
    }

    /// Whether the backend needs faultd to launch the service (its filter is installed before exec).
    pub fn needs_launch(self) -> bool {
        self == BackendKind::Seccomp
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend name faultd does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?} (known: seccomp, ebpf-cgroup, ebpf-trace, ebpf-override, ebpf-lsm)")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownBackend(s.to_string()))
    }
}

/// What the capability table looks at in a rule.
#[derive(Debug, Clone, Copy)]
pub struct RuleShape<'a> {
    /// The rule's syscalls, expanded (`write`, `writev`, ...).
    pub syscalls: &'a [&'a str],
    /// What it does.
    pub action: &'a Action,
    /// Whether it filters on a path glob.
    pub path_glob: bool,
    /// Whether it filters on a connect destination.
    pub destination: bool,
    /// Chance in [0, 1] that a matching syscall is decided.
    pub probability: f64,
    /// Whether it has a trigger (`after=` or `max_fires=`): only a backend that counts calls can.
    pub triggered: bool,
}

/// Why `kind` can never enforce a rule of this shape, in one sentence; `None` when it can (given a
/// host where it is available).
pub fn refusal(kind: BackendKind, rule: &RuleShape<'_>) -> Option<String> {
    if kind != BackendKind::Seccomp && rule.action.is_storage() {
        return Some(format!(
            "the {kind} backend cannot enforce {}: only the seccomp backend, which answers each \
             intercepted call itself, can do I/O on the caller's behalf, answer a sync without \
             syncing or track what a write overwrites",
            rule.action.describe()
        ));
    }
    if kind != BackendKind::Seccomp && rule.triggered {
        return Some(format!(
            "the {kind} backend decides in the kernel without counting matching calls, so a rule \
             with after= or max_fires= needs the seccomp backend"
        ));
    }
    match kind {
        BackendKind::Seccomp => None,
        BackendKind::EbpfCgroup => cgroup_refusal(rule),
        BackendKind::EbpfTrace => trace_refusal(rule),
        BackendKind::EbpfOverride => override_refusal(rule),
        BackendKind::EbpfLsm => lsm_refusal(rule),
    }
}

/// Open syscalls: with a path glob, the in-kernel backends decide them at `lsm/file_open`, on the path
/// the kernel resolved.
pub const OPEN_SYSCALLS: [&str; 4] = ["open", "openat", "openat2", "creat"];

/// Syscalls whose fd a path glob is matched against (the file's path as opened).
const FD_PATH_SYSCALLS: [&str; 20] = [
    "read",
    "readv",
    "pread64",
    "preadv",
    "preadv2",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "sendfile",
    "splice",
    "copy_file_range",
    "fsync",
    "fdatasync",
    "sync_file_range",
    "fallocate",
    "ftruncate",
    "close",
    "io_uring_setup",
];

/// Syscalls `lsm/file_permission` sees (they check `rw_verify_area`): the ebpf-lsm backend's reads
/// and writes.
pub const LSM_PERMISSION_SYSCALLS: [&str; 13] = [
    "read",
    "readv",
    "pread64",
    "preadv",
    "preadv2",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "sendfile",
    "splice",
    "copy_file_range",
];

/// Syscalls the ebpf-lsm backend's operation hooks decide (`inode_unlink`, `inode_rmdir`,
/// `inode_mkdir`, `inode_rename`, `path_truncate`, `file_truncate`, `socket_connect`). Of these only
/// `ftruncate` has a file to match a path glob against.
pub const LSM_OP_SYSCALLS: [&str; 11] = [
    "unlink",
    "unlinkat",
    "rmdir",
    "mkdir",
    "mkdirat",
    "rename",
    "renameat",
    "renameat2",
    "truncate",
    "ftruncate",
    "connect",
];

/// What the in-kernel backends share: deny and allow only, no destination filter.
fn in_kernel_refusal(kind: BackendKind, rule: &RuleShape<'_>) -> Option<String> {
    match rule.action {
        Action::Deny { .. } | Action::Allow => {}
        Action::Delay(_) => {
            return Some(format!(
                "the {kind} backend cannot delay a syscall (a kernel hook cannot sleep on the \
                 caller's behalf); delays stay with the seccomp backend"
            ));
        }
        Action::Crash { .. } => {
            return Some(format!(
                "the {kind} backend does not crash services; crashes go to the seccomp or \
                 ebpf-trace backend"
            ));
        }
        Action::Short { .. } | Action::Lie | Action::Volatile | Action::PowerLoss { .. } => {
            return Some(format!(
                "the {kind} backend cannot enforce {}: storage faults need the seccomp backend",
                rule.action.describe()
            ));
        }
    }
    if rule.destination {
        return Some(format!(
            "the {kind} backend does not filter connect destinations; those rules go to the \
             ebpf-cgroup or seccomp backend"
        ));
    }
    None
}

fn override_refusal(rule: &RuleShape<'_>) -> Option<String> {
    let kind = BackendKind::EbpfOverride;
    if let Some(why) = in_kernel_refusal(kind, rule) {
        return Some(why);
    }
    if rule.path_glob
        && let Some(other) = rule.syscalls.iter().find(|s| {
            !OPEN_SYSCALLS.contains(s) && !FD_PATH_SYSCALLS.contains(s) && is_path_syscall(s)
        })
    {
        return Some(format!(
            "the ebpf-override backend matches path globs only on opens and on fds (the path a file \
             was opened as), and this rule also covers {other}, whose path it does not resolve"
        ));
    }
    None
}

fn lsm_refusal(rule: &RuleShape<'_>) -> Option<String> {
    let kind = BackendKind::EbpfLsm;
    if let Some(why) = in_kernel_refusal(kind, rule) {
        return Some(why);
    }
    if let Some(other) = rule.syscalls.iter().find(|s| {
        !OPEN_SYSCALLS.contains(s)
            && !LSM_PERMISSION_SYSCALLS.contains(s)
            && !LSM_OP_SYSCALLS.contains(s)
    }) {
        return Some(format!(
            "the ebpf-lsm backend enforces opens (lsm/file_open), the read and write families \
             (lsm/file_permission), unlink, rmdir, mkdir, rename, truncate and connect (their LSM \
             hooks), and no hook of it sees {other}"
        ));
    }
    if rule.path_glob
        && let Some(other) = rule
            .syscalls
            .iter()
            .find(|s| LSM_OP_SYSCALLS.contains(s) && **s != "ftruncate")
    {
        return Some(format!(
            "the ebpf-lsm backend matches path globs only on opens and on fds (the path a file was \
             opened as), and this rule also covers {other}, whose hook has no path it can match"
        ));
    }
    None
}

/// Whether `name` is a syscall with a path argument (its target is a path, not an fd).
fn is_path_syscall(name: &str) -> bool {
    crate::syscalls::lookup(name)
        .is_some_and(|sc| matches!(sc.args, crate::syscalls::ArgKind::Path { .. }))
}

/// Why no backend that works without a launch can enforce the rule, i.e. why it needs a service faultd
/// launches (seccomp); `None` when one can.
pub fn needs_launch(rule: &RuleShape<'_>) -> Option<String> {
    let mut reasons = BackendKind::ALL
        .into_iter()
        .filter(|k| !k.needs_launch())
        .map(|k| refusal(k, rule));
    // The refusal of the backend that is meant for this kind of action is the one worth reading.
    let relevant = if matches!(rule.action, Action::Crash { .. }) {
        BackendKind::EbpfTrace
    } else if rule.syscalls.iter().all(|s| *s == "connect") {
        BackendKind::EbpfCgroup
    } else {
        BackendKind::EbpfOverride
    };
    if reasons.any(|r| r.is_none()) {
        return None;
    }
    refusal(relevant, rule)
}

fn cgroup_refusal(rule: &RuleShape<'_>) -> Option<String> {
    if let Some(other) = rule.syscalls.iter().find(|s| **s != "connect") {
        return Some(format!(
            "the ebpf-cgroup backend only enforces connect (its cgroup/connect4 and connect6 hooks \
             see nothing else), and this rule also covers {other}"
        ));
    }
    match rule.action {
        Action::Deny { .. } | Action::Allow => {}
        Action::Delay(_) => {
            return Some(
                "the ebpf-cgroup backend cannot delay a connect (its hook can only let it through \
                 or fail it); use the seccomp backend for delays"
                    .into(),
            );
        }
        Action::Crash { .. } => {
            return Some(
                "the ebpf-cgroup backend cannot crash a service at connect; use the seccomp backend"
                    .into(),
            );
        }
        // Refused above, with the sentence that applies to every eBPF backend.
        Action::Short { .. } | Action::Lie | Action::Volatile | Action::PowerLoss { .. } => {}
    }
    if rule.probability < 1.0 {
        return Some(
            "the ebpf-cgroup backend does not draw probabilities (an in-kernel draw is not seeded, \
             so a run could not replay); drop the probability or use the seccomp backend"
                .into(),
        );
    }
    None
}

fn trace_refusal(rule: &RuleShape<'_>) -> Option<String> {
    if !matches!(rule.action, Action::Crash { .. }) {
        return Some(format!(
            "the ebpf-trace backend only enforces crash rules (it observes everything else), and \
             this rule is {}",
            rule.action.describe()
        ));
    }
    let filter = if rule.path_glob {
        "a path glob"
    } else if rule.destination {
        "a destination"
    } else if rule.probability < 1.0 {
        "a probability"
    } else {
        return None;
    };
    Some(format!(
        "the ebpf-trace backend crashes at a syscall only for rules without a path glob, \
         destination or probability (its map is keyed by cgroup and syscall number, and an \
         in-kernel draw is not seeded), and this rule has {filter}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape<'a>(syscalls: &'a [&'a str], action: &'a Action) -> RuleShape<'a> {
        RuleShape {
            syscalls,
            action,
            path_glob: false,
            destination: false,
            probability: 1.0,
            triggered: false,
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.as_str().parse::<BackendKind>(), Ok(kind));
        }
        let e = "ebpf".parse::<BackendKind>().unwrap_err().to_string();
        assert!(e.contains("known: seccomp"), "{e}");
    }

    #[test]
    fn the_table_says_which_backend_can_enforce_what() {
        let deny = Action::Deny { errno: 111 };
        let crash = Action::Crash { signal: 9 };
        let delay = Action::Delay(std::time::Duration::from_millis(5));
        assert_eq!(
            refusal(BackendKind::EbpfCgroup, &shape(&["connect"], &deny)),
            None
        );
        assert!(refusal(BackendKind::EbpfCgroup, &shape(&["write"], &deny)).is_some());
        assert!(refusal(BackendKind::EbpfCgroup, &shape(&["connect"], &delay)).is_some());
        assert_eq!(
            refusal(BackendKind::EbpfTrace, &shape(&["write"], &crash)),
            None
        );
        let mut with_path = shape(&["write"], &crash);
        with_path.path_glob = true;
        let why = refusal(BackendKind::EbpfTrace, &with_path).unwrap();
        assert!(why.contains("a path glob"), "{why}");
        assert_eq!(refusal(BackendKind::Seccomp, &with_path), None);
        assert_eq!(needs_launch(&shape(&["connect"], &deny)), None);
        let lie = Action::Lie;
        for kind in [
            BackendKind::EbpfCgroup,
            BackendKind::EbpfTrace,
            BackendKind::EbpfLsm,
        ] {
            let why = refusal(kind, &shape(&["fsync"], &lie)).unwrap();
            assert!(why.contains("only the seccomp backend"), "{why}");
        }
        assert_eq!(
            refusal(BackendKind::Seccomp, &shape(&["fsync"], &lie)),
            None
        );
        assert!(needs_launch(&shape(&["fsync"], &lie)).is_some());
        let mut third = shape(&["connect"], &deny);
        third.triggered = true;
        let why = refusal(BackendKind::EbpfCgroup, &third).unwrap();
        assert!(why.contains("after= or max_fires="), "{why}");
        assert_eq!(refusal(BackendKind::Seccomp, &third), None);
        assert!(needs_launch(&with_path).unwrap().contains("ebpf-trace"));
        assert_eq!(needs_launch(&shape(&["write"], &deny)), None);
        assert!(
            needs_launch(&shape(&["write"], &delay))
                .unwrap()
                .contains("ebpf-override backend cannot delay")
        );
        assert!(
            needs_launch(&shape(&["connect"], &delay))
                .unwrap()
                .contains("ebpf-cgroup")
        );
    }

    #[test]
    fn in_kernel_backends_deny_and_allow_file_syscalls() {
        let deny = Action::Deny { errno: 5 };
        let over = |s: &[&str], glob: bool| {
            let mut r = shape(s, &deny);
            r.path_glob = glob;
            refusal(BackendKind::EbpfOverride, &r)
        };
        assert_eq!(over(&["write", "writev", "fsync"], true), None);
        assert_eq!(over(&["openat"], true), None);
        assert_eq!(over(&["unlink"], false), None);
        let why = over(&["unlink"], true).unwrap();
        assert!(why.contains("also covers unlink"), "{why}");
        let lsm = |s: &[&str]| refusal(BackendKind::EbpfLsm, &shape(s, &deny));
        assert_eq!(lsm(&["write", "pwrite64", "openat"]), None);
        let why = lsm(&["write", "fsync"]).unwrap();
        assert!(why.ends_with("no hook of it sees fsync"), "{why}");
        assert_eq!(lsm(&LSM_OP_SYSCALLS), None);
        let lsm_glob = |s: &[&str]| {
            let mut r = shape(s, &deny);
            r.path_glob = true;
            refusal(BackendKind::EbpfLsm, &r)
        };
        assert_eq!(lsm_glob(&["ftruncate", "write"]), None, "fds have a path");
        let why = lsm_glob(&["write", "rename"]).unwrap();
        assert!(why.contains("also covers rename"), "{why}");
        let delay = Action::Delay(std::time::Duration::from_millis(1));
        for kind in [BackendKind::EbpfOverride, BackendKind::EbpfLsm] {
            let why = refusal(kind, &shape(&["write"], &delay)).unwrap();
            assert!(
                why.contains("delays stay with the seccomp backend"),
                "{why}"
            );
            let mut probable = shape(&["write"], &deny);
            probable.probability = 0.5;
            assert_eq!(refusal(kind, &probable), None, "seeded in the kernel");
        }
    }
}
