//! Fault keywords to rules: a keyword is one of the target's op names, else a syscall or family name
//! (`faultd::syscalls`); errno names are checked against faultd's table.

use faultd_model::syscalls;

use super::load_errors::{SpecError, did_you_mean};
use super::model::{Action, Op, Rule};
use super::values::ActionValue;

/// A service as a fault target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub service: &'a str,
    pub ops: &'a [Op],
    /// Attached by cgroup: no seccomp filter, so only rules ebpf-cgroup enforces are possible.
    pub attached: bool,
}

/// Checks a syscall or family name.
pub(crate) fn check_syscall(name: &str) -> Result<(), SpecError> {
    if syscalls::expand(name).is_some() {
        return Ok(());
    }
    Err(
        SpecError::new(format!("unknown syscall or family `{name}`"))
            .suggest(did_you_mean(name, syscalls::names())),
    )
}

/// Checks an errno name (any case); returns it in upper case.
pub(crate) fn check_errno(name: &str) -> Result<String, SpecError> {
    if syscalls::errno(name).is_some() {
        return Ok(name.to_ascii_uppercase());
    }
    let suggestion = did_you_mean(name, syscalls::errno_names()).or_else(|| {
        let mut names: Vec<_> = syscalls::errno_names().collect();
        names.sort_unstable();
        Some(format!("known errno names: {}", names.join(", ")))
    });
    Err(SpecError::new(format!("unknown errno `{name}`")).suggest(suggestion))
}

/// The rule for `key=action` on `target`. `others` lists `(service, op)` of every other declared
/// service, to explain an op used on the wrong service.
pub(crate) fn resolve(
    target: Target<'_>,
    key: &str,
    action: &ActionValue,
    others: &[(String, String)],
) -> Result<Rule, SpecError> {
    let rule = resolve_unchecked(target, key, action, others)?;
    if let Some(why) = misfit(&rule) {
        return Err(SpecError::new(format!("`{key}=`: {why}")).suggest(Some(
            "use the storage action on an op or syscall of its family, e.g. \
             `fsync=lie()` or `write=short(fraction=0.5)`"
                .into(),
        )));
    }
    if target.attached
        && let Some(why) = needs_seccomp(&rule)
    {
        return Err(SpecError::new(format!(
            "service `{}` is attached by cgroup (attach=), so faultd does not launch it and cannot \
             install the seccomp filter that `{key}=` needs: {why}",
            target.service
        ))
        .suggest(Some(
            "on an attached service the in-kernel backends take deny and allow: file syscalls \
             (ebpf-override, or ebpf-lsm for opens, reads, writes and path operations, where the kernel has them), \
             `connect=deny(\"ECONNREFUSED\")` (optionally with to=) or partition(...) without \
             probability, and `crash()` at a syscall without a path; launch the service with a \
             binary for delays"
                .into(),
        )));
    }
    Ok(rule)
}

/// Why `rule`'s storage action cannot apply to one of its syscalls (`lie()` on a read).
fn misfit(rule: &Rule) -> Option<String> {
    let action = model_action(&rule.action);
    rule.syscalls
        .iter()
        .flat_map(|name| syscalls::expand(name).unwrap_or_default())
        .find_map(|sc| action.misfit(sc.name))
}

/// The syscalls volatile tracking must see besides a rule's own: every change and sync of a file.
pub(crate) fn tracking_syscalls(rule: &Rule) -> &'static [&'static str] {
    match rule.action {
        Action::Volatile | Action::PowerLoss { .. } => &[
            "write",
            "ftruncate",
            "fallocate",
            "fsync",
            "sync_file_range",
            "syncfs",
            "sync",
        ],
        _ => &[],
    }
}

/// Why only the seccomp backend could enforce `rule` (so it needs a service faultd launches), from the
/// capability table faultd itself routes rules with; `None` when a backend that works on attached
/// services can.
pub(crate) fn needs_seccomp(rule: &Rule) -> Option<String> {
    let expanded: Vec<&str> = rule
        .syscalls
        .iter()
        .flat_map(|name| syscalls::expand(name).unwrap_or_default())
        .map(|sc| sc.name)
        .collect();
    let action = model_action(&rule.action);
    faultd_model::backend::needs_launch(&faultd_model::RuleShape {
        syscalls: &expanded,
        action: &action,
        path_glob: rule.path.is_some(),
        destination: rule.destination.is_some(),
        probability: rule.probability.unwrap_or(1.0),
        triggered: rule.trigger != Default::default(),
    })
}

/// The shared model's form of a spec action (for the capability table and fit checks).
fn model_action(action: &Action) -> faultd_model::Action {
    match action {
        Action::Deny { errno } => faultd_model::Action::Deny {
            errno: syscalls::errno(errno).unwrap_or(libc::EIO),
        },
        Action::Delay { duration } => faultd_model::Action::Delay(*duration),
        Action::Allow => faultd_model::Action::Allow,
        Action::Crash { signal } => faultd_model::Action::Crash {
            signal: syscalls::signal(signal).unwrap_or(libc::SIGKILL),
        },
        Action::Short { fraction } => faultd_model::Action::Short {
            fraction: *fraction,
        },
        Action::Lie => faultd_model::Action::Lie,
        Action::Volatile => faultd_model::Action::Volatile,
        Action::PowerLoss { mode } => faultd_model::Action::PowerLoss { mode: *mode },
    }
}

fn resolve_unchecked(
    target: Target<'_>,
    key: &str,
    action: &ActionValue,
    others: &[(String, String)],
) -> Result<Rule, SpecError> {
    let rule = |op: Option<String>, syscalls: Vec<String>, path: Option<String>| Rule {
        service: target.service.to_owned(),
        op,
        syscalls,
        path,
        action: action.action.clone(),
        probability: action.probability,
        label: action.label.clone(),
        destination: action.destination.clone(),
        trigger: action.trigger,
    };
    if let Some(op) = target.ops.iter().find(|o| o.name == key) {
        return Ok(rule(
            Some(op.name.clone()),
            op.syscalls.clone(),
            op.path.clone(),
        ));
    }
    if syscalls::expand(key).is_some() {
        return Ok(rule(None, vec![key.to_owned()], None));
    }
    let own_ops = if target.ops.is_empty() {
        "it defines no ops".to_owned()
    } else {
        let names: Vec<_> = target.ops.iter().map(|o| format!("`{}`", o.name)).collect();
        format!("its ops: {}", names.join(", "))
    };
    let owners: Vec<_> = others
        .iter()
        .filter(|(s, o)| o == key && s != target.service)
        .map(|(s, _)| format!("`{s}`"))
        .collect();
    if !owners.is_empty() {
        return Err(SpecError::new(format!(
            "service `{}` has no op `{key}` ({own_ops}); `{key}` is an op of {}",
            target.service,
            owners.join(", ")
        ))
        .suggest(Some(format!(
            "target the service that defines it, or add `{key}` to the ops of `{}`",
            target.service
        ))));
    }
    let mut candidates: Vec<&str> = target.ops.iter().map(|o| o.name.as_str()).collect();
    for name in syscalls::names() {
        candidates.push(name);
    }
    Err(SpecError::new(format!(
        "`{key}` is neither an op of service `{}` ({own_ops}) nor a syscall or family name",
        target.service
    ))
    .suggest(did_you_mean(key, candidates)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny() -> ActionValue {
        ActionValue {
            destination: None,
            action: Action::Deny {
                errno: "EIO".into(),
            },
            label: Some("l".into()),
            probability: None,
            trigger: Default::default(),
        }
    }

    fn ops() -> Vec<Op> {
        vec![Op {
            name: "persist".into(),
            syscalls: vec!["write".into(), "fsync".into()],
            path: Some("/tmp/*.wal".into()),
        }]
    }

    #[test]
    fn op_names_win_over_syscalls() {
        let ops = ops();
        let r = resolve(
            Target {
                service: "inv",
                ops: &ops,
                attached: false,
            },
            "persist",
            &deny(),
            &[],
        )
        .unwrap();
        assert_eq!(r.op.as_deref(), Some("persist"));
        assert_eq!(r.syscalls, ["write", "fsync"]);
        assert_eq!(r.path.as_deref(), Some("/tmp/*.wal"));
        assert_eq!(r.label.as_deref(), Some("l"));
        let r = resolve(
            Target {
                service: "inv",
                ops: &ops,
                attached: false,
            },
            "fsync",
            &deny(),
            &[],
        )
        .unwrap();
        assert_eq!(
            (r.op, r.syscalls, r.path),
            (None, vec!["fsync".to_owned()], None)
        );
    }

    #[test]
    fn unknown_keys_suggest_ops_and_syscalls() {
        let ops = ops();
        let e = resolve(
            Target {
                service: "inv",
                ops: &ops,
                attached: false,
            },
            "persit",
            &deny(),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.suggestion.as_deref(), Some("did you mean `persist`?"));
        let e = resolve(
            Target {
                service: "inv",
                ops: &ops,
                attached: false,
            },
            "fsyn",
            &deny(),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.suggestion.as_deref(), Some("did you mean `fsync`?"));
        assert!(e.message.contains("its ops: `persist`"), "{}", e.message);
    }

    #[test]
    fn an_op_of_another_service_is_named() {
        let e = resolve(
            Target {
                service: "orders",
                ops: &[],
                attached: false,
            },
            "persist",
            &deny(),
            &[("inventory".into(), "persist".into())],
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "service `orders` has no op `persist` (it defines no ops); `persist` is an op of `inventory`"
        );
    }

    #[test]
    fn errno_names_are_case_insensitive_and_checked() {
        assert_eq!(check_errno("eio").unwrap(), "EIO");
        assert_eq!(
            check_errno("EIOO").unwrap_err().suggestion.as_deref(),
            Some("did you mean `EIO`?")
        );
        assert!(check_syscall("write").is_ok());
        assert_eq!(
            check_syscall("wirte").unwrap_err().suggestion.as_deref(),
            Some("did you mean `write`?")
        );
    }
}
