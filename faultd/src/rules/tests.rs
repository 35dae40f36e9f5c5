//! Rule compilation and matching: families, globs, precedence, destinations, draws, triggers.

use super::*;

fn spec(syscalls: &[&str], glob: Option<&str>, action: Action) -> RuleSpec {
    RuleSpec {
        trigger: Default::default(),
        service: "inventory".into(),
        op: None,
        syscalls: syscalls.iter().map(|s| s.to_string()).collect(),
        path_glob: glob.map(str::to_string),
        destination: None,
        action,
        probability: 1.0,
        label: None,
    }
}

fn rule(id: u32, spec: &RuleSpec, seed: u64) -> Arc<Rule> {
    Arc::new(Rule::compile(id, "fs1".into(), spec, Arc::new(SeededRng::new(seed))).unwrap())
}

const EIO: Action = Action::Deny { errno: libc::EIO };

#[test]
fn family_names_expand_and_members_stand_for_themselves() {
    let r = rule(1, &spec(&["write"], None, EIO), 1);
    let names: Vec<_> = r.syscalls.iter().map(|s| s.name).collect();
    assert_eq!(names, ["write", "writev", "pwrite64"]);
    let r = rule(2, &spec(&["pwrite64"], None, EIO), 1);
    assert_eq!(r.syscalls.len(), 1);
    assert!(matches!(
        Rule::compile(
            3,
            "x".into(),
            &spec(&["wrte"], None, EIO),
            Arc::new(SeededRng::new(0))
        ),
        Err(RuleError::UnknownSyscall(_))
    ));
}

#[test]
fn globs_stay_within_segments_unless_double_star() {
    let g = compile_glob("/tmp/*.wal").unwrap();
    assert!(g.is_match("/tmp/inventory.wal"));
    assert!(!g.is_match("/tmp/sub/inventory.wal"));
    assert!(!g.is_match("socket:[1234]"));
    let g = compile_glob("/data/**/*.log").unwrap();
    assert!(g.is_match("/data/a/b/c.log"));
    assert!(g.is_match("/data/c.log"));
    let g = compile_glob("/tmp/wal-?.[ab]").unwrap();
    assert!(g.is_match("/tmp/wal-1.a"));
    assert!(!g.is_match("/tmp/wal-12.a"));
    assert!(compile_glob("/tmp/[").is_err());
}

#[test]
fn path_rules_fire_only_on_matching_resolved_paths() {
    let set = RuleSet::new(vec![rule(1, &spec(&["write"], Some("/tmp/*.wal"), EIO), 1)]);
    let write = libc::SYS_write as u32;
    assert_eq!(
        set.decide(write, &Target::Path("/tmp/a.wal")).map(|r| r.id),
        Some(1)
    );
    assert!(set.decide(write, &Target::Path("/tmp/a.log")).is_none());
    assert!(set.decide(write, &Target::Path("socket:[77]")).is_none());
    assert!(set.decide(write, &Target::None).is_none());
    assert!(
        set.decide(libc::SYS_fsync as u32, &Target::Path("/tmp/a.wal"))
            .is_none()
    );
    assert!(set.has_file_rule());
}

#[test]
fn first_matching_rule_wins() {
    let set = RuleSet::new(vec![
        rule(
            1,
            &spec(&["write"], Some("/tmp/keep.wal"), Action::Allow),
            1,
        ),
        rule(2, &spec(&["write", "fsync"], None, EIO), 1),
    ]);
    let write = libc::SYS_write as u32;
    assert_eq!(
        set.decide(write, &Target::Path("/tmp/keep.wal"))
            .unwrap()
            .id,
        1
    );
    assert_eq!(
        set.decide(write, &Target::Path("/tmp/other.wal"))
            .unwrap()
            .id,
        2
    );
    assert_eq!(
        set.decide(libc::SYS_fdatasync as u32, &Target::None)
            .unwrap()
            .id,
        2
    );
    assert_eq!(set.rules()[0].hits(), 1);
    assert_eq!(set.rules()[1].hits(), 2);
}

#[test]
fn after_lets_calls_through_and_max_fires_stops_the_rule() {
    let mut s = spec(&["write"], None, EIO);
    s.trigger = Trigger {
        after: 2,
        max_fires: Some(1),
    };
    let set = RuleSet::new(vec![rule(1, &s, 1)]);
    let fired: Vec<bool> = (0..5)
        .map(|_| set.decide(libc::SYS_write as u32, &Target::None).is_some())
        .collect();
    assert_eq!(
        fired,
        [false, false, true, false, false],
        "the third write only"
    );
    assert_eq!(
        (set.rules()[0].matches_count(), set.rules()[0].hits()),
        (5, 1)
    );
}

#[test]
fn destinations_filter_connect_only() {
    let mut s = spec(
        &["connect"],
        None,
        Action::Deny {
            errno: libc::ECONNREFUSED,
        },
    );
    s.destination = Some(":5432".into());
    let set = RuleSet::new(vec![rule(1, &s, 1)]);
    let connect = libc::SYS_connect as u32;
    let to = |p| Target::Addr(SocketAddr::from(([127, 0, 0, 1], p)));
    assert!(set.decide(connect, &to(5432)).is_some());
    assert!(set.decide(connect, &to(8080)).is_none());
    assert_eq!(
        Destination::parse("localhost:80").unwrap(),
        Destination {
            ip: Some(IpAddr::from([127, 0, 0, 1])),
            port: 80
        }
    );
    assert!(Destination::parse("nope").is_err());
}

#[test]
fn seeded_probability_replays_and_is_roughly_right() {
    let mut s = spec(&["write"], None, EIO);
    s.probability = 0.3;
    let run = |seed| {
        let set = RuleSet::new(vec![rule(1, &s, seed)]);
        (0..2000)
            .map(|_| set.decide(libc::SYS_write as u32, &Target::None).is_some())
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same decisions");
    assert_ne!(a, run(8), "another seed, other decisions");
    let fired = a.iter().filter(|f| **f).count();
    assert!(
        (450..750).contains(&fired),
        "fired {fired} of 2000 at p=0.3"
    );
    s.probability = 1.5;
    assert!(Rule::compile(1, "x".into(), &s, Arc::new(SeededRng::new(0))).is_err());
}
