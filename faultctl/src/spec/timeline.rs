//! The current test's timeline as the spec queries it: `events(...)` values and the filters of
//! `events`, `assert_eventually`, `assert_never` and `assert_before`, with the failure messages that
//! quote the nearest events.
//!
//! A filter field matches exactly, or as a glob when it contains `*` or `?` (`*` crosses `/`, so
//! `path="*.wal"` matches `/tmp/inventory.wal`). `decision` also matches the peer's composite form:
//! `"deny(EIO)"`, `"delay(500ms)"`.

use std::fmt;

use allocative::Allocative;
use starlark::starlark_simple_value;
use starlark::values::{
    Heap, NoSerialize, ProvidesStaticType, StarlarkValue, Value, starlark_value,
};

use crate::report::model::EventReport;
use crate::runner::glob_match;

/// The filter fields, in the order messages show them.
pub(crate) const FIELDS: &[&str] = &[
    "service", "syscall", "op", "path", "decision", "errno", "label",
];

/// One event of the timeline, as `events()` returns it.
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct EventValue(#[allocative(skip)] pub EventReport);
starlark_simple_value!(EventValue);

impl fmt::Display for EventValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event({})", describe(&self.0))
    }
}

const EVENT_ATTRS: &[&str] = &[
    "decision", "delay_ms", "errno", "label", "op", "path", "pid", "retval", "seq", "service",
    "syscall", "type",
];

#[starlark_value(type = "event")]
impl<'v> StarlarkValue<'v> for EventValue {
    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        let e = &self.0;
        let opt = |s: &Option<String>| match s {
            Some(s) => heap.alloc(s.as_str()),
            None => Value::new_none(),
        };
        Some(match attribute {
            "seq" => heap.alloc(e.seq),
            "service" => heap.alloc(e.service.as_str()),
            "syscall" => heap.alloc(e.syscall.as_str()),
            "type" => heap.alloc("syscall"),
            "decision" => heap.alloc(e.decision.as_str()),
            "pid" => heap.alloc(e.pid),
            "op" => opt(&e.op),
            "path" => opt(&e.path),
            "errno" => opt(&e.errno),
            "label" => opt(&e.label),
            "retval" => e.retval.map_or(Value::new_none(), |r| heap.alloc(r)),
            "delay_ms" => e.delay_ms.map_or(Value::new_none(), |d| heap.alloc(d)),
            _ => return None,
        })
    }

    fn has_attr(&self, attribute: &str, _heap: Heap<'v>) -> bool {
        EVENT_ATTRS.contains(&attribute)
    }

    fn dir_attr(&self) -> Vec<String> {
        EVENT_ATTRS.iter().map(|s| (*s).to_owned()).collect()
    }
}

/// `#48 inventory write deny(EIO) /tmp/inventory.wal [persist broken]`.
pub(crate) fn describe(e: &EventReport) -> String {
    let mut out = format!("#{} {} ", e.seq, e.service);
    match &e.op {
        Some(op) => out.push_str(&format!("{op}({})", e.syscall)),
        None => out.push_str(&e.syscall),
    }
    out.push(' ');
    out.push_str(&composite_decision(e));
    if let Some(p) = &e.path {
        out.push_str(&format!(" {p}"));
    }
    if let Some(l) = &e.label {
        out.push_str(&format!(" [{l}]"));
    }
    out
}

/// `deny(EIO)`, `delay(500ms)`, `crash(SIGKILL)`, else the bare decision.
fn composite_decision(e: &EventReport) -> String {
    match (e.decision.as_str(), &e.errno, e.delay_ms) {
        ("deny" | "crash", Some(errno), _) => format!("{}({errno})", e.decision),
        ("delay", _, Some(ms)) => format!("delay({ms}ms)"),
        _ => e.decision.clone(),
    }
}

/// The string filters of one query: `(field, pattern)` in [`FIELDS`] order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Filter {
    pub fields: Vec<(&'static str, String)>,
}

impl Filter {
    /// Adds `field=pattern`; `field` must be one of [`FIELDS`].
    pub(crate) fn with(mut self, field: &str, pattern: &str) -> Self {
        if let Some(f) = FIELDS.iter().find(|f| **f == field) {
            self.fields.push((f, pattern.to_owned()));
            self.fields
                .sort_by_key(|(f, _)| FIELDS.iter().position(|x| x == f));
        }
        self
    }

    /// How many of the fields `e` matches.
    pub(crate) fn score(&self, e: &EventReport) -> usize {
        self.fields
            .iter()
            .filter(|(f, p)| field_matches(e, f, p))
            .count()
    }

    /// Whether `e` matches every field.
    pub(crate) fn matches(&self, e: &EventReport) -> bool {
        self.score(e) == self.fields.len()
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fields.is_empty() {
            return write!(f, "(any event)");
        }
        let parts: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

fn field_matches(e: &EventReport, field: &str, pattern: &str) -> bool {
    let is = |v: &str| {
        if pattern.contains(['*', '?']) {
            glob_match(pattern, v)
        } else {
            pattern == v
        }
    };
    let opt = |v: &Option<String>| v.as_deref().is_some_and(is);
    match field {
        "service" => is(&e.service),
        "syscall" => is(&e.syscall),
        "op" => opt(&e.op),
        "path" => opt(&e.path),
        "decision" => is(&e.decision) || is(&composite_decision(e)),
        "errno" => opt(&e.errno),
        "label" => opt(&e.label),
        _ => false,
    }
}

/// How many events a failure message quotes.
const QUOTED: usize = 3;

/// The events that come closest to `filter` (most fields matched, then latest), for a message.
pub(crate) fn nearest<'a>(filter: &Filter, events: &'a [EventReport]) -> Vec<&'a EventReport> {
    let mut scored: Vec<(usize, &EventReport)> =
        events.iter().map(|e| (filter.score(e), e)).collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.seq.cmp(&a.1.seq)));
    let best = scored.first().map_or(0, |s| s.0);
    scored
        .into_iter()
        .filter(|(s, _)| *s == best)
        .take(QUOTED)
        .map(|(_, e)| e)
        .collect()
}

/// Why nothing matched: how many events there were and the nearest ones.
pub(crate) fn none_matched(filter: &Filter, events: &[EventReport]) -> String {
    if events.is_empty() {
        return "the test's trace has no syscall events yet (only syscalls a service's filter \
                intercepts are events: name them in trace(svc, syscalls=[...]) or in a fault)"
            .into();
    }
    let near: Vec<String> = nearest(filter, events)
        .into_iter()
        .map(|e| {
            let matched: Vec<&str> = filter
                .fields
                .iter()
                .filter(|(f, p)| field_matches(e, f, p))
                .map(|(f, _)| *f)
                .collect();
            if matched.is_empty() {
                describe(e)
            } else {
                format!("{} (matches {})", describe(e), matched.join(", "))
            }
        })
        .collect();
    format!(
        "no event matches {filter} among {} events; nearest: {}",
        events.len(),
        near.join("; ")
    )
}

/// Quotes matching events: the first few and how many more.
pub(crate) fn quote(matching: &[&EventReport]) -> String {
    let mut parts: Vec<String> = matching.iter().take(QUOTED).map(|e| describe(e)).collect();
    if matching.len() > QUOTED {
        parts.push(format!("and {} more", matching.len() - QUOTED));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(seq: u64, service: &str, syscall: &str, decision: &str) -> EventReport {
        EventReport {
            seq,
            time_ns: seq * 1000,
            service: service.into(),
            pid: 7,
            syscall: syscall.into(),
            op: None,
            path: None,
            decision: decision.into(),
            errno: None,
            delay_ms: None,
            retval: None,
            latency_ns: None,
            backend: None,
            label: None,
            io_requested: None,
            io_done: None,
            interface: None,
            request: None,
        }
    }

    fn trace() -> Vec<EventReport> {
        let mut open = event(1, "inventory", "openat", "allow");
        open.path = Some("/tmp/inventory.wal".into());
        let mut write = event(2, "inventory", "write", "deny");
        write.path = Some("/tmp/inventory.wal".into());
        write.errno = Some("EIO".into());
        write.op = Some("persist".into());
        write.label = Some("persist broken".into());
        let mut lib = event(3, "orders", "openat", "allow");
        lib.path = Some("/etc/hosts".into());
        vec![open, write, lib]
    }

    #[test]
    fn fields_match_exactly_or_as_globs() {
        let t = trace();
        let f = Filter::default().with("path", "*.wal");
        assert_eq!(t.iter().filter(|e| f.matches(e)).count(), 2);
        let f = Filter::default().with("decision", "deny*");
        assert_eq!(t.iter().filter(|e| f.matches(e)).count(), 1);
        let f = Filter::default().with("decision", "deny(EIO)");
        assert!(f.matches(&t[1]));
        let f = Filter::default()
            .with("syscall", "openat")
            .with("service", "orders");
        assert!(!f.matches(&t[0]) && f.matches(&t[2]));
        assert_eq!(f.to_string(), "service=\"orders\", syscall=\"openat\"");
        let f = Filter::default().with("path", "/tmp");
        assert!(t.iter().all(|e| !f.matches(e)));
        assert!(Filter::default().matches(&t[0]));
    }

    #[test]
    fn messages_quote_the_nearest_events() {
        let t = trace();
        let f = Filter::default()
            .with("service", "inventory")
            .with("syscall", "openat")
            .with("path", "*.log");
        let m = none_matched(&f, &t);
        assert_eq!(
            m,
            "no event matches service=\"inventory\", syscall=\"openat\", path=\"*.log\" among 3 \
             events; nearest: #1 inventory openat allow /tmp/inventory.wal (matches service, syscall)"
        );
        assert_eq!(
            describe(&t[1]),
            "#2 inventory persist(write) deny(EIO) /tmp/inventory.wal [persist broken]"
        );
        assert!(none_matched(&f, &[]).contains("no syscall events"));
        let all: Vec<&EventReport> = t.iter().chain(t.iter()).collect();
        assert!(quote(&all).ends_with("and 3 more"), "{}", quote(&all));
    }
}
