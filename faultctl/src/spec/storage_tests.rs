//! The storage actions of the spec language: `short`, `lie`, `volatile`, `power_loss`.

use super::model::Action;
use super::tests::{err_at, ok, with_services};
use faultd_model::{Fraction, PowerLossMode};

#[test]
fn storage_actions_load_and_widen_the_intercept_set() {
    let rt = ok(&with_services(
        r#"
a = fault_assumption("a", target=inventory,
    write = short(fraction=0.25, label="half-written"),
    fsync = lie(probability=0.5),
)
b = fault_assumption("b", target=inventory, persist = volatile(), fdatasync = power_loss(mode="torn"))
fault_scenario("s", scenario=lambda: None, faults=[a, b])
"#,
    ));
    let sets = &rt.spec().tests[0].faults;
    assert_eq!(
        sets[0].rules[0].action,
        Action::Short {
            fraction: Fraction::new(0.25).unwrap()
        }
    );
    assert_eq!(sets[0].rules[0].label.as_deref(), Some("half-written"));
    assert_eq!(sets[0].rules[1].action, Action::Lie);
    assert_eq!(sets[0].rules[1].probability, Some(0.5));
    assert_eq!(sets[1].rules[0].action, Action::Volatile);
    assert_eq!(
        sets[1].rules[1].action,
        Action::PowerLoss {
            mode: PowerLossMode::Torn
        }
    );
    let inventory = rt
        .spec()
        .services
        .iter()
        .find(|s| s.name == "inventory")
        .unwrap();
    for name in ["ftruncate", "fallocate", "syncfs", "sync"] {
        assert!(
            inventory.intercept.contains(name),
            "{:?}",
            inventory.intercept
        );
    }
    let wire = super::wire::rule(&sets[0].rules[0]);
    assert!(
        matches!(wire.action, Some(faultd_proto::v1::fault_rule::Action::Short(s)) if s.fraction == 0.25)
    );
}

#[test]
fn storage_actions_refuse_what_they_cannot_do() {
    let e = err_at("x = short(fraction=1.5)\n", 1, 11);
    assert!(e.message.contains("(0, 1]"), "{}", e.message);
    let e = err_at("x = power_loss(mode=\"melt\")\n", 1, 16);
    assert_eq!(e.message, "unknown power loss mode `melt`");
    let e = err_at(
        &with_services("a = fault_assumption(\"a\", target=inventory, read = lie())\n"),
        17,
        45,
    );
    assert!(
        e.message.contains("lie() does not apply to read"),
        "{}",
        e.message
    );
}

#[test]
fn every_action_takes_after_and_max_fires() {
    let rt = ok(&with_services(
        r#"
a = fault_assumption("a", target=inventory,
    write = power_loss(after=2, max_fires=1),
    fsync = deny("EIO", after=1),
)
fault_scenario("s", scenario=lambda: None, faults=a)
"#,
    ));
    let rules = &rt.spec().tests[0].faults[0].rules;
    assert_eq!(
        (rules[0].trigger.after, rules[0].trigger.max_fires),
        (2, Some(1))
    );
    assert_eq!(
        (rules[1].trigger.after, rules[1].trigger.max_fires),
        (1, None)
    );
    let wire = super::wire::rule(&rules[0]);
    assert_eq!((wire.after, wire.max_fires), (2, Some(1)));
    let e = err_at("x = crash(max_fires=0)\n", 1, 11);
    assert!(e.message.contains("at least 1"), "{}", e.message);
    let e = err_at("x = lie(aftr=1)\n", 1, 9);
    assert_eq!(e.message, "unknown keyword argument `aftr` for lie()");
}

#[test]
fn triggers_and_storage_actions_need_a_launched_service() {
    let attached = r#"
db = service("db", interface("main", "tcp", 5432),
    attach = "cgroup:/sys/fs/cgroup/unified/db",
    ops = {"dial": op(syscalls=["connect"]), "persist": op(syscalls=["write"])},
)
"#;
    for (rule, why) in [
        (
            "dial = deny(\"ECONNREFUSED\", after=1)",
            "after= or max_fires=",
        ),
        ("persist = volatile()", "only the seccomp backend"),
    ] {
        let source = format!("{attached}a = fault_assumption(\"a\", target=db, {rule})\n");
        let e = super::tests::load_err(&source);
        assert!(e.message.contains(why), "{rule}: {}", e.message);
    }
}
