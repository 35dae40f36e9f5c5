//! Unit tests of the protocol-fault spelling: proxied interfaces and their addresses, the rules,
//! their binding to interfaces, and their load errors.

use super::model::{Protocol, ProxyAction};
use super::tests::{err_at, ok};

const TOPOLOGY: &str = r#"
db = service("db", "/bin/true",
    interface("main", "postgres", 5433),
    healthcheck = ready("localhost:5433", "postgres", user = "app"),
)
cache = service("cache", "/bin/true", interface("main", "redis", 6380, proxy = True))
web = service("web", "/bin/true", interface("public", "http", 8081),
    env = {"DB": db.main.addr, "DB_DIRECT": db.main.internal_addr, "CACHE": cache.main.addr},
    user = "nobody",
)
"#;

#[test]
fn faulted_and_proxy_true_interfaces_get_a_proxy_and_addr_leads_to_it() {
    let src = format!(
        "{TOPOLOGY}\nslow = fault_assumption(\"slow\", target = db.main, rules = [delay(delay = \"2s\", query = \"select*\", label = \"slow\")])\n"
    );
    let rt = ok(&src);
    let spec = rt.spec();
    let port = |svc: &str| {
        spec.services
            .iter()
            .find(|s| s.name == svc)
            .unwrap()
            .interfaces[0]
            .clone()
    };
    let (db, cache, web) = (port("db"), port("cache"), port("web"));
    assert_eq!(db.protocol, Protocol::Postgres);
    assert_eq!(cache.protocol, Protocol::Redis);
    let db_proxy = db.proxy_port.expect("a faulted interface is proxied");
    let cache_proxy = cache.proxy_port.expect("proxy=True");
    assert!(db_proxy != 0 && cache_proxy != 0 && db_proxy != cache_proxy);
    assert_eq!(web.proxy_port, None, "nothing faults web: no proxy");
    let env = &spec.services.iter().find(|s| s.name == "web").unwrap().env;
    assert_eq!(env["DB"], format!("localhost:{db_proxy}"));
    assert_eq!(env["DB_DIRECT"], "localhost:5433");
    assert_eq!(env["CACHE"], format!("localhost:{cache_proxy}"));
    let web_service = spec.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web_service.user.as_deref(), Some("nobody"));
}

#[test]
fn rules_bind_to_the_target_interface_and_mix_with_syscall_rules() {
    let src = format!(
        r#"{TOPOLOGY}
dup = fault_assumption("dup", target = db.main,
    rules = [error(query = "INSERT*", sqlstate = "23505", message = "dup", probability = 0.5)])
disk = fault_assumption("disk", target = cache, fsync = deny("EIO"))
both = fault_assumption("both", faults = [dup, disk])
def s():
    pass
fault_scenario("combined", scenario = s, faults = both)
"#
    );
    let rt = ok(&src);
    let test = &rt.spec().tests[0];
    let set = &test.faults[0];
    assert_eq!(set.rules.len(), 1, "the fsync rule");
    assert_eq!(set.proxy_rules.len(), 1, "the protocol rule");
    let rule = &set.proxy_rules[0];
    assert_eq!(
        (rule.service.as_str(), rule.interface.as_str()),
        ("db", "main")
    );
    assert_eq!(rule.matchers["query"], "INSERT*");
    assert_eq!(rule.probability, Some(0.5));
    assert_eq!(
        rule.action,
        ProxyAction::Error {
            status: None,
            message: Some("dup".into()),
            sqlstate: Some("23505".into()),
        }
    );
}

#[test]
fn protocol_rule_errors_point_at_the_argument() {
    // An interface nothing proxies (the rule reaches it through a variable the scan cannot see).
    let e = err_at(
        &format!(
            "{TOPOLOGY}\nt = web.public\nx = fault_assumption(\"x\", target = t, rules = [drop()])\n"
        ),
        13,
        27,
    );
    assert!(e.message.contains("web.public has no proxy"), "{e}");
    assert!(
        e.suggestion
            .as_deref()
            .unwrap_or_default()
            .contains("proxy=True"),
        "{e}"
    );
    let e = err_at(
        &format!("{TOPOLOGY}\nx = error(sqlstate = \"2350\")\n"),
        12,
        11,
    );
    assert!(e.message.contains("is not a SQLSTATE"), "{e}");
    let e = err_at(&format!("{TOPOLOGY}\nx = error(querry = \"x\")\n"), 12, 11);
    assert_eq!(e.message, "unknown keyword argument `querry` for error()");
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `query`?"));
    let e = err_at(
        &format!(
            "{TOPOLOGY}\nx = fault_assumption(\"x\", target = db.main, rules = [deny(\"EIO\")])\n"
        ),
        12,
        5,
    );
    assert!(e.message.contains("expected a protocol rule"), "{e}");
    let e = err_at(
        &format!("{TOPOLOGY}\nx = ready(\"localhost:1\", \"mysql\")\n"),
        12,
        26,
    );
    assert!(e.message.contains("not `mysql`"), "{e}");
}
