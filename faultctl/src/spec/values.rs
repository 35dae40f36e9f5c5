//! The Starlark values a spec builds: services, interfaces, healthchecks, ops, actions, fault
//! assumptions and step responses. Each wraps plain data from [`super::model`].

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;

use allocative::Allocative;
use starlark::collections::StarlarkHasher;
use starlark::environment::{Methods, MethodsBuilder};
use starlark::values::{
    Heap, NoSerialize, ProvidesStaticType, StarlarkValue, Value, ValueLike, starlark_value,
};
use starlark::{starlark_module, starlark_simple_value};

use super::model::{Action, FaultSet, Healthcheck, Interface, Op, Protocol, ProxyAction};
use super::steps;

/// A `service(...)`: its name, interfaces and ops (what steps and fault rules need at run time).
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct ServiceValue {
    pub name: String,
    #[allocative(skip)]
    pub interfaces: Vec<Interface>,
    #[allocative(skip)]
    pub ops: Vec<Op>,
    /// Attached by cgroup (`attach=`), not launched: only connect faults apply.
    pub attached: bool,
}
starlark_simple_value!(ServiceValue);

impl fmt::Display for ServiceValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service({:?})", self.name)
    }
}

impl ServiceValue {
    /// The reference to one of its interfaces.
    pub(crate) fn interface(&self, name: &str) -> Option<InterfaceRefValue> {
        self.interfaces
            .iter()
            .find(|i| i.name == name)
            .map(|i| InterfaceRefValue {
                service: self.name.clone(),
                iface: i.clone(),
                ops: self.ops.clone(),
                attached: self.attached,
            })
    }
}

starlark::methods_static!(STEP_METHODS = all_steps);

fn all_steps(builder: &mut MethodsBuilder) {
    steps::step_methods(builder);
    super::db_steps::db_methods(builder);
}
starlark::methods_static!(RESPONSE_METHODS = response_methods);

#[starlark_value(type = "service")]
impl<'v> StarlarkValue<'v> for ServiceValue {
    fn get_methods() -> Option<&'static Methods> {
        Some(STEP_METHODS.methods())
    }

    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        if attribute == "name" {
            return Some(heap.alloc(self.name.as_str()));
        }
        self.interface(attribute).map(|i| heap.alloc(i))
    }

    fn has_attr(&self, attribute: &str, _heap: Heap<'v>) -> bool {
        attribute == "name" || self.interfaces.iter().any(|i| i.name == attribute)
    }

    fn dir_attr(&self) -> Vec<String> {
        let mut names = vec!["name".to_owned()];
        names.extend(self.interfaces.iter().map(|i| i.name.clone()));
        names
    }

    fn equals(&self, other: Value<'v>) -> starlark::Result<bool> {
        Ok(other
            .downcast_ref::<Self>()
            .is_some_and(|o| o.name == self.name))
    }

    fn write_hash(&self, hasher: &mut StarlarkHasher) -> starlark::Result<()> {
        self.name.hash(hasher);
        Ok(())
    }
}

/// An `interface(name, protocol, port)` not yet attached to a service.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct InterfaceValue(#[allocative(skip)] pub Interface);
starlark_simple_value!(InterfaceValue);

impl fmt::Display for InterfaceValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.0;
        write!(
            f,
            "interface({:?}, {:?}, {})",
            i.name,
            i.protocol.name(),
            i.port
        )
    }
}

#[starlark_value(type = "interface")]
impl<'v> StarlarkValue<'v> for InterfaceValue {}

/// `svc.<iface>`: an interface of a declared service, with its address and steps.
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct InterfaceRefValue {
    pub service: String,
    #[allocative(skip)]
    pub iface: Interface,
    #[allocative(skip)]
    pub ops: Vec<Op>,
    /// Its service is attached by cgroup.
    pub attached: bool,
}
starlark_simple_value!(InterfaceRefValue);

impl InterfaceRefValue {
    /// Where consumers reach it: `localhost:<proxy port>` when proxied, else `localhost:<port>`.
    pub(crate) fn addr(&self) -> String {
        format!(
            "localhost:{}",
            self.iface.proxy_port.unwrap_or(self.iface.port)
        )
    }

    /// The service's own address, bypassing any proxy.
    pub(crate) fn internal_addr(&self) -> String {
        format!("localhost:{}", self.iface.port)
    }
}

impl fmt::Display for InterfaceRefValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{} ({} {})",
            self.service,
            self.iface.name,
            self.iface.protocol.name(),
            self.addr()
        )
    }
}

#[starlark_value(type = "interface_ref")]
impl<'v> StarlarkValue<'v> for InterfaceRefValue {
    fn get_methods() -> Option<&'static Methods> {
        Some(STEP_METHODS.methods())
    }

    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        match attribute {
            "addr" => Some(heap.alloc(self.addr())),
            "internal_addr" => Some(heap.alloc(self.internal_addr())),
            "host" => Some(heap.alloc("localhost")),
            "port" => Some(heap.alloc(i32::from(self.iface.port))),
            "name" => Some(heap.alloc(self.iface.name.as_str())),
            "protocol" => Some(heap.alloc(self.iface.protocol.name())),
            "service" => Some(heap.alloc(self.service.as_str())),
            _ => None,
        }
    }

    fn has_attr(&self, attribute: &str, _heap: Heap<'v>) -> bool {
        REF_ATTRS.contains(&attribute)
    }

    fn dir_attr(&self) -> Vec<String> {
        REF_ATTRS.iter().map(|s| (*s).to_owned()).collect()
    }
}

const REF_ATTRS: &[&str] = &[
    "addr",
    "host",
    "internal_addr",
    "name",
    "port",
    "protocol",
    "service",
];

/// `tcp(addr)` / `http(url)`.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct HealthcheckValue(#[allocative(skip)] pub Healthcheck);
starlark_simple_value!(HealthcheckValue);

impl fmt::Display for HealthcheckValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.check {
            super::model::Check::Tcp(a) => write!(f, "tcp({a:?})"),
            super::model::Check::Http(u) => write!(f, "http({u:?})"),
            super::model::Check::Redis(a) => write!(f, "ready({a:?}, \"redis\")"),
            super::model::Check::Postgres { addr, .. } => {
                write!(f, "ready({addr:?}, \"postgres\")")
            }
        }
    }
}

#[starlark_value(type = "healthcheck")]
impl<'v> StarlarkValue<'v> for HealthcheckValue {}

/// `op(syscalls=[...], path=...)`; its name comes from the `ops=` key.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct OpValue {
    #[allocative(skip)]
    pub syscalls: Vec<String>,
    #[allocative(skip)]
    pub path: Option<String>,
}
starlark_simple_value!(OpValue);

impl fmt::Display for OpValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op(syscalls={:?}", self.syscalls)?;
        if let Some(p) = &self.path {
            write!(f, ", path={p:?}")?;
        }
        write!(f, ")")
    }
}

#[starlark_value(type = "op")]
impl<'v> StarlarkValue<'v> for OpValue {}

/// `deny(...)`, `delay(...)` or `allow()`.
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct ActionValue {
    #[allocative(skip)]
    pub action: Action,
    pub label: Option<String>,
    pub probability: Option<f64>,
    /// `to=svc.iface`: the destination a connect rule is restricted to.
    pub destination: Option<String>,
    /// `after=`, `max_fires=`.
    #[allocative(skip)]
    pub trigger: faultd_model::Trigger,
}
starlark_simple_value!(ActionValue);

impl fmt::Display for ActionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.action {
            Action::Deny { errno } => write!(f, "deny({errno:?}")?,
            Action::Delay { duration } => write!(f, "delay(\"{}ms\"", duration.as_millis())?,
            Action::Allow => write!(f, "allow(")?,
            Action::Crash { signal } => write!(f, "crash(signal={signal:?}")?,
            Action::Short { fraction } => write!(f, "short(fraction={}", fraction.get())?,
            Action::Lie => write!(f, "lie(")?,
            Action::Volatile => write!(f, "volatile(")?,
            Action::PowerLoss { mode } => write!(f, "power_loss(mode={:?}", mode.as_str())?,
        }
        let mut sep = !matches!(self.action, Action::Allow | Action::Lie | Action::Volatile);
        if let Some(l) = &self.label {
            write!(f, "{}label={l:?}", if sep { ", " } else { "" })?;
            sep = true;
        }
        if let Some(d) = &self.destination {
            write!(f, "{}to={d:?}", if sep { ", " } else { "" })?;
            sep = true;
        }
        if let Some(p) = self.probability {
            write!(f, "{}probability={p}", if sep { ", " } else { "" })?;
            sep = true;
        }
        if self.trigger.after > 0 {
            write!(
                f,
                "{}after={}",
                if sep { ", " } else { "" },
                self.trigger.after
            )?;
            sep = true;
        }
        if let Some(n) = self.trigger.max_fires {
            write!(f, "{}max_fires={n}", if sep { ", " } else { "" })?;
        }
        write!(f, ")")
    }
}

#[starlark_value(type = "action")]
impl<'v> StarlarkValue<'v> for ActionValue {}

/// `error(...)`, `response(...)`, `delay(delay=...)` or `drop()`: a protocol rule not yet bound to
/// an interface.
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct ProtocolRuleValue {
    #[allocative(skip)]
    pub action: ProxyAction,
    #[allocative(skip)]
    pub matchers: BTreeMap<String, String>,
    pub probability: Option<f64>,
    pub label: Option<String>,
}
starlark_simple_value!(ProtocolRuleValue);

impl fmt::Display for ProtocolRuleValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match &self.action {
            ProxyAction::Error { .. } => "error",
            ProxyAction::Response { .. } => "response",
            ProxyAction::Delay(_) => "delay",
            ProxyAction::Drop => "drop",
        };
        write!(f, "{name}(")?;
        let mut parts: Vec<String> = Vec::new();
        if let ProxyAction::Delay(d) = &self.action {
            parts.push(format!("delay=\"{}ms\"", d.as_millis()));
        }
        parts.extend(self.matchers.iter().map(|(k, v)| format!("{k}={v:?}")));
        if let Some(l) = &self.label {
            parts.push(format!("label={l:?}"));
        }
        write!(f, "{})", parts.join(", "))
    }
}

#[starlark_value(type = "protocol_rule")]
impl<'v> StarlarkValue<'v> for ProtocolRuleValue {}

/// A `fault_assumption(...)`: a named fault set.
#[derive(Debug, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct AssumptionValue(#[allocative(skip)] pub FaultSet);
starlark_simple_value!(AssumptionValue);

impl fmt::Display for AssumptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault_assumption({:?})", self.0.name)
    }
}

#[starlark_value(type = "fault_assumption")]
impl<'v> StarlarkValue<'v> for AssumptionValue {
    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        (attribute == "name").then(|| heap.alloc(self.0.name.as_str()))
    }

    fn equals(&self, other: Value<'v>) -> starlark::Result<bool> {
        Ok(other
            .downcast_ref::<Self>()
            .is_some_and(|o| o.0.name == self.0.name))
    }

    fn write_hash(&self, hasher: &mut StarlarkHasher) -> starlark::Result<()> {
        self.0.name.hash(hasher);
        Ok(())
    }
}

/// What an HTTP step returned. Truthy when the request got an answer (`ok`), whatever its status.
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct ResponseValue {
    pub status: u32,
    pub body: String,
    pub headers: BTreeMap<String, String>,
    pub ok: bool,
    pub error: String,
    pub duration_ms: u64,
}
starlark_simple_value!(ResponseValue);

impl fmt::Display for ResponseValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.ok {
            return write!(f, "response(ok=False, error={:?})", self.error);
        }
        const MAX: usize = 120;
        let body: String = self.body.chars().take(MAX).collect();
        let more = if self.body.chars().count() > MAX {
            "…"
        } else {
            ""
        };
        write!(
            f,
            "response(status={}, body={body:?}{more}, duration_ms={})",
            self.status, self.duration_ms
        )
    }
}

#[starlark_value(type = "response")]
impl<'v> StarlarkValue<'v> for ResponseValue {
    fn get_methods() -> Option<&'static Methods> {
        Some(RESPONSE_METHODS.methods())
    }

    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        match attribute {
            "status" => Some(heap.alloc(self.status)),
            "body" => Some(heap.alloc(self.body.as_str())),
            "headers" => Some(heap.alloc(self.headers.clone())),
            "ok" => Some(Value::new_bool(self.ok)),
            "error" => Some(heap.alloc(self.error.as_str())),
            "duration_ms" => Some(heap.alloc(self.duration_ms)),
            "data" => Some(
                match serde_json::from_str::<serde_json::Value>(&self.body) {
                    Ok(parsed) => heap.alloc(parsed),
                    Err(_) => heap.alloc(self.body.as_str()),
                },
            ),
            _ => None,
        }
    }

    fn has_attr(&self, attribute: &str, _heap: Heap<'v>) -> bool {
        RESPONSE_ATTRS.contains(&attribute)
    }

    fn dir_attr(&self) -> Vec<String> {
        RESPONSE_ATTRS.iter().map(|s| (*s).to_owned()).collect()
    }

    fn to_bool(&self) -> bool {
        self.ok
    }
}

const RESPONSE_ATTRS: &[&str] = &[
    "body",
    "data",
    "duration_ms",
    "error",
    "headers",
    "ok",
    "status",
];

#[starlark_module]
fn response_methods(builder: &mut MethodsBuilder) {
    /// The body parsed as JSON.
    fn json<'v>(this: &ResponseValue, heap: Heap<'v>) -> anyhow::Result<Value<'v>> {
        let parsed: serde_json::Value = serde_json::from_str(&this.body)
            .map_err(|e| anyhow::anyhow!("response body is not JSON ({e}): {:?}", this.body))?;
        Ok(heap.alloc(parsed))
    }
}

/// `Protocol` from its spec-language name.
pub(crate) fn parse_protocol(name: &str) -> Option<Protocol> {
    match name {
        "tcp" => Some(Protocol::Tcp),
        "http" => Some(Protocol::Http),
        "redis" => Some(Protocol::Redis),
        "postgres" => Some(Protocol::Postgres),
        _ => None,
    }
}

/// A function value's name: `place_order` for a `def`, `lambda` for a lambda.
pub(crate) fn function_name(value: Value<'_>) -> String {
    let repr = value.to_repr();
    repr.rsplit('.').next().unwrap_or(&repr).to_owned()
}
