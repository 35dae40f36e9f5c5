//! Property tests over what a request can carry: rule compilation, deciding with any compiled rule,
//! name and destination parsing, and whole ApplyFaults/CreateSession requests against a live engine.
//! Nothing may panic; every refusal is a status a client can read.

mod support;

use std::sync::Arc;
use std::time::Duration;

use faultd::rules::{Action, Destination, Rule, RuleSet, RuleSpec, SeededRng, Target};
use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use support::{root_or_skip, service};

/// Syscall names faultd knows, plus strings it does not.
fn syscall_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "write",
            "read",
            "open",
            "openat",
            "fsync",
            "connect",
            "sendto",
            "unlink",
            "rename",
            "io_uring_setup",
        ])
        .prop_map(str::to_owned),
        "[a-z_0-9]{0,12}",
        any::<String>(),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        any::<i32>().prop_map(|errno| Action::Deny { errno }),
        (0u64..10_000).prop_map(|us| Action::Delay(Duration::from_micros(us))),
        Just(Action::Allow),
        any::<i32>().prop_map(|signal| Action::Crash { signal }),
    ]
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (
        prop::collection::vec(syscall_name(), 0..4),
        prop::option::of(prop_oneof!["/tmp/[*?a-z/]{0,12}", any::<String>()]),
        prop::option::of(prop_oneof![
            ":[0-9]{1,6}",
            "[0-9.:\\[\\]a-z]{0,20}",
            any::<String>()
        ]),
        action(),
        prop_oneof![Just(1.0), Just(f64::NAN), any::<f64>(), 0.0f64..1.0],
    )
        .prop_map(
            |(syscalls, path_glob, destination, action, probability)| RuleSpec {
                trigger: Default::default(),
                service: "db".into(),
                op: None,
                syscalls,
                path_glob,
                destination,
                action,
                probability,
                label: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_rule_compiles_or_is_refused_and_decides_without_panicking(
        spec in rule_spec(),
        nr in 0u32..600,
        path in any::<String>(),
    ) {
        if let Ok(rule) = Rule::compile(1, "fs1".into(), &spec, Arc::new(SeededRng::new(7))) {
            prop_assert!((0.0..=1.0).contains(&rule.probability()));
            let set = RuleSet::new(vec![Arc::new(rule)]);
            let _ = set.decide(nr, &Target::Path(&path));
            let _ = set.decide(nr, &Target::None);
        }
    }

    #[test]
    fn names_and_destinations_parse_or_are_refused(text in any::<String>()) {
        if faultd_model::names::check("service", &text).is_ok() {
            prop_assert!(!text.contains('/') && text != ".." && !text.is_empty());
        }
        let _ = Destination::parse(&text);
    }
}

fn fault_rule() -> impl Strategy<Value = pb::FaultRule> {
    (
        prop_oneof![Just("svc".to_owned()), any::<String>()],
        prop::collection::vec(syscall_name(), 0..3),
        prop_oneof![Just(String::new()), any::<String>()],
        prop_oneof![Just(String::new()), ":[0-9]{1,6}", any::<String>()],
        prop_oneof![
            Just("EIO".to_owned()),
            Just("ECONNREFUSED".to_owned()),
            any::<String>()
        ],
        prop::option::of(any::<f64>()),
        prop_oneof![
            Just(String::new()),
            Just("ebpf-cgroup".to_owned()),
            any::<String>()
        ],
    )
        .prop_map(
            |(service, syscalls, path_glob, destination, errno, probability, backend)| {
                pb::FaultRule {
                    service,
                    syscalls,
                    path_glob,
                    destination,
                    action: Some(pb::fault_rule::Action::Deny(pb::Deny { errno })),
                    probability,
                    backend,
                    ..Default::default()
                }
            },
        )
}

/// Codes a well-formed refusal may have; anything else (Unknown, Internal, a transport error) means
/// the handler broke.
const REFUSALS: [tonic::Code; 4] = [
    tonic::Code::InvalidArgument,
    tonic::Code::FailedPrecondition,
    tonic::Code::ResourceExhausted,
    tonic::Code::NotFound,
];

#[test]
fn random_requests_get_a_status_and_the_engine_keeps_serving() {
    if !root_or_skip("random_requests_get_a_status_and_the_engine_keeps_serving") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = FaultdClient::new(faultd::embedded::channel().await.unwrap());
        let session = client
            .create_session(pb::CreateSessionRequest {
                name: "fuzz".into(),
                services: vec![service("svc", &["sleep", "60"], &["write", "connect"])],
                lease_ms: 0,
                trace: 0,
            })
            .await
            .expect("a session to fuzz")
            .into_inner()
            .session_id;
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 128,
            ..ProptestConfig::default()
        });
        for _ in 0..128 {
            let rules = prop::collection::vec(fault_rule(), 0..4)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let outcome = client
                .apply_faults(pb::ApplyFaultsRequest {
                    session_id: session.clone(),
                    rules: rules.clone(),
                    seed: 1,
                    partitions: vec![],
                    ..Default::default()
                })
                .await;
            match outcome {
                Ok(applied) => {
                    client
                        .clear_faults(pb::ClearFaultsRequest {
                            session_id: session.clone(),
                            fault_set_id: applied.into_inner().fault_set_id,
                        })
                        .await
                        .expect("clear what was applied");
                }
                Err(status) => assert!(
                    REFUSALS.contains(&status.code()) && !status.message().is_empty(),
                    "{rules:?} got {status:?}"
                ),
            }
            // Names that become paths never reach the launcher: argv points nowhere.
            let name = any::<String>().new_tree(&mut runner).unwrap().current();
            let created = client
                .create_session(pb::CreateSessionRequest {
                    name: name.clone(),
                    services: vec![service(&name, &["/nonexistent/faultd-fuzz"], &[])],
                    lease_ms: 0,
                    trace: 0,
                })
                .await;
            match created {
                Ok(_) => panic!("a service without a binary was started ({name:?})"),
                Err(status) => assert!(
                    REFUSALS.contains(&status.code()) && !status.message().is_empty(),
                    "{name:?} got {status:?}"
                ),
            }
        }
        client
            .probe(pb::ProbeRequest {})
            .await
            .expect("the engine still answers");
        client
            .delete_session(pb::DeleteSessionRequest {
                session_id: session,
            })
            .await
            .expect("delete");
    });
}
