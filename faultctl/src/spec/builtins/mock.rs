//! Mocks, as the peer spells them: `mock_service(name, interface(...), routes={...}, default=)`
//! with `json_response`, `text_response`, `status_only` (also `status_response`) answers. faultd
//! serves a mock with its own binary (see `faultd::mock`); it is a service like any other: faults,
//! proxies, healthcheck and trace apply to it.

use std::fmt;

use allocative::Allocative;
use starlark::collections::SmallMap;
use starlark::environment::GlobalsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::DictRef;
use starlark::values::tuple::UnpackTuple;
use starlark::values::{
    NoSerialize, ProvidesStaticType, StarlarkValue, Value, ValueLike, starlark_value,
};
use starlark::{starlark_simple_value, values::none::NoneType};

use super::super::context::{ArgRef, Site, ctx, load_state, raise};
use super::super::load_errors::SpecError;
use super::super::model::{Check, Healthcheck, Protocol, Service};
use super::super::units::parse_duration;
use super::super::values::{HealthcheckValue, InterfaceValue, ServiceValue};
use super::args::*;

/// Most routes of one mock (faultd's bound too).
const MAX_ROUTES: usize = 256;
/// Longest response body.
const MAX_BODY: usize = 64 << 10;
/// Most headers of one response.
const MAX_HEADERS: usize = 32;
/// Longest delay before an answer.
const MAX_DELAY_MS: u64 = 60_000;
/// Longest route table, as JSON (faultd's bound too).
const MAX_CONFIG: usize = 512 << 10;

/// A canned answer of a mock.
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct MockResponseValue {
    status: u16,
    body: String,
    #[allocative(skip)]
    headers: Vec<(String, String)>,
    delay_ms: u64,
}
starlark_simple_value!(MockResponseValue);

impl fmt::Display for MockResponseValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mock_response(status={}, body={:?}",
            self.status, self.body
        )?;
        if self.delay_ms > 0 {
            write!(f, ", delay=\"{}ms\"", self.delay_ms)?;
        }
        write!(f, ")")
    }
}

#[starlark_value(type = "mock_response")]
impl<'v> StarlarkValue<'v> for MockResponseValue {}

impl MockResponseValue {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "status": self.status,
            "body": self.body,
            "headers": self.headers,
            "delay_ms": self.delay_ms,
        })
    }
}

#[starlark_module]
pub(super) fn mocks(builder: &mut GlobalsBuilder) {
    /// A mock dependency faultd serves: `mock_service(name, interface(name, "http"|"tcp", port),
    /// routes={"GET /users/*": json_response(...)}, default=, depends_on=, healthcheck=)`. http keys
    /// are `"METHOD /path"` (`*` one segment, `**` any, method `*` any); tcp keys are globs over
    /// the received line and values a reply line (a string) or `text_response(body=, delay=)`.
    #[allow(clippy::too_many_arguments)] // mirrors the Starlark signature
    fn mock_service<'v>(
        #[starlark(require = pos)] name: &str,
        #[starlark(args)] interfaces: UnpackTuple<Value<'v>>,
        #[starlark(require = named)] routes: Option<Value<'v>>,
        #[starlark(require = named)] default: Option<Value<'v>>,
        #[starlark(require = named)] depends_on: Option<Value<'v>>,
        #[starlark(require = named)] healthcheck: Option<Value<'v>>,
        #[starlark(kwargs)] unknown: SmallMap<String, Value<'v>>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ServiceValue> {
        let site = Site::of(eval);
        reject_unknown(
            eval,
            &site,
            "mock_service",
            &unknown,
            &["routes", "default", "depends_on", "healthcheck"],
        )?;
        let state = load_state(eval, "mock_service")?;
        let fail = |err: SpecError| raise(eval, err);
        check_name("service", name, site.positional(0)).map_err(fail)?;
        if state.borrow().services.iter().any(|(s, _)| s.name == name) {
            return Err(fail(
                SpecError::new(format!("duplicate service name `{name}`"))
                    .at(site.positional(0).as_ref()),
            ));
        }
        let [iface] = interfaces.items.as_slice() else {
            return Err(fail(
                SpecError::new(format!(
                    "mock_service `{name}` takes exactly one interface(...), got {}",
                    interfaces.items.len()
                ))
                .at(site.call())
                .suggest(Some(
                    "declare one mock_service per interface, e.g. mock_service(\"auth\", \
                     interface(\"main\", \"http\", 8090), routes={...})"
                        .into(),
                )),
            ));
        };
        let Some(iface) = iface.downcast_ref::<InterfaceValue>() else {
            return Err(fail(
                SpecError::new(format!(
                    "mock_service() takes an interface(...) after the name, got {} `{}`",
                    iface.get_type(),
                    iface.to_repr()
                ))
                .at(site.positional(1).as_ref()),
            ));
        };
        let mut iface = iface.0.clone();
        let tcp = match iface.protocol {
            Protocol::Http => false,
            Protocol::Tcp => true,
            other => {
                return Err(fail(
                    SpecError::new(format!(
                        "a mock speaks http or tcp; interface `{}` speaks {}",
                        iface.name,
                        other.name()
                    ))
                    .at(site.positional(1).as_ref())
                    .suggest(Some(
                        "run the real server as a service(...) for redis or postgres".into(),
                    )),
                ));
            }
        };
        let mut table = Vec::new();
        if let Some(routes) = routes.filter(|r| !r.is_none()) {
            let Some(dict) = DictRef::from_value(routes) else {
                return Err(fail(
                    SpecError::new(format!(
                        "routes= takes a dict of pattern -> response, got {}",
                        routes.get_type()
                    ))
                    .at(site.keyword("routes").as_ref()),
                ));
            };
            if dict.len() > MAX_ROUTES {
                return Err(fail(
                    SpecError::new(format!(
                        "routes= has {} routes; at most {MAX_ROUTES} are accepted",
                        dict.len()
                    ))
                    .at(site.keyword("routes").as_ref()),
                ));
            }
            for (k, v) in dict.iter() {
                let Some(pattern) = k.unpack_str() else {
                    return Err(fail(
                        SpecError::new(format!(
                            "routes= keys are patterns (strings), got {} `{}`",
                            k.get_type(),
                            k.to_repr()
                        ))
                        .at(site.keyword("routes").as_ref()),
                    ));
                };
                let at = site.string_in(ArgRef::Keyword("routes"), pattern);
                if !tcp && let Err((m, s)) = check_http_pattern(pattern) {
                    return Err(fail(SpecError::new(m).at(at.as_ref()).suggest(Some(s))));
                }
                let response =
                    answer(v, tcp).map_err(|m| fail(SpecError::new(m).at(at.as_ref())))?;
                table.push(serde_json::json!({"pattern": pattern, "response": response.json()}));
            }
        }
        let default = match default.filter(|d| !d.is_none()) {
            None => serde_json::Value::Null,
            Some(d) => answer(d, tcp)
                .map_err(|m| {
                    fail(
                        SpecError::new(format!("default= {m}"))
                            .at(site.keyword("default").as_ref()),
                    )
                })?
                .json(),
        };
        let depends_on = match depends_on {
            Some(d) => service_names(d).map_err(|m| {
                fail(
                    SpecError::new(format!("depends_on= {m}"))
                        .at(site.keyword("depends_on").as_ref()),
                )
            })?,
            None => Vec::new(),
        };
        let healthcheck = match healthcheck.filter(|h| !h.is_none()) {
            None => Healthcheck {
                check: Check::Tcp(format!("127.0.0.1:{}", iface.port)),
                timeout: None,
            },
            Some(h) => match h.downcast_ref::<HealthcheckValue>() {
                Some(h) => h.0.clone(),
                None => {
                    return Err(fail(
                        SpecError::new(format!(
                            "healthcheck= takes tcp(...) or http(...), got {} `{}`",
                            h.get_type(),
                            h.to_repr()
                        ))
                        .at(site.keyword("healthcheck").as_ref()),
                    ));
                }
            },
        };
        let proxied = ctx(eval)?.source.proxied.clone();
        super::proxy_port::assign(name, &mut iface, &proxied)
            .map_err(|why| fail(SpecError::new(why).at(site.call())))?;
        let config = serde_json::json!({
            "protocol": if tcp { "tcp" } else { "http" },
            "routes": table,
            "default": default,
        });
        let config = config.to_string();
        if config.len() > MAX_CONFIG {
            return Err(fail(
                SpecError::new(format!(
                    "mock_service `{name}`: its routes and responses take {} bytes; at most \
                     {MAX_CONFIG} are accepted",
                    config.len()
                ))
                .at(site.keyword("routes").as_ref())
                .suggest(Some("shorten the bodies or split the mock".into())),
            ));
        }
        let service = Service {
            name: name.to_owned(),
            argv: Vec::new(),
            mock: Some(config),
            attach_cgroup: None,
            env: Default::default(),
            user: None,
            cwd: None,
            interfaces: vec![iface.clone()],
            healthcheck: Some(healthcheck),
            depends_on,
            intercept: Default::default(),
            ops: Vec::new(),
            resolve_paths: false,
            host_network: false,
        };
        state
            .borrow_mut()
            .services
            .push((service, site.call().cloned()));
        Ok(ServiceValue {
            name: name.to_owned(),
            interfaces: vec![iface],
            ops: Vec::new(),
            attached: false,
        })
    }

    /// A JSON answer: `json_response(status=200, body=None, headers={}, delay=None)`; `body` is
    /// encoded as JSON, `Content-Type: application/json` unless `headers` sets one.
    fn json_response<'v>(
        #[starlark(default = 200)] status: i32,
        #[starlark(default = NoneType)] body: Value<'v>,
        headers: Option<Value<'v>>,
        #[starlark(require = named)] delay: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<MockResponseValue> {
        let site = Site::of(eval);
        let text = if body.is_none() {
            String::new()
        } else {
            body.to_json().map_err(|e| {
                raise(
                    eval,
                    SpecError::new(format!("body= cannot be encoded as JSON: {e}"))
                        .at(site.keyword("body").as_ref()),
                )
            })?
        };
        let mut r = response(eval, &site, "json_response", status, text, headers, delay)?;
        if !r
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            r.headers
                .push(("Content-Type".into(), "application/json".into()));
        }
        Ok(r)
    }

    /// A plain-text answer: `text_response(status=200, body="", headers={}, delay=None)`; on a tcp
    /// mock, `body` is the reply line.
    fn text_response<'v>(
        #[starlark(default = 200)] status: i32,
        #[starlark(default = "")] body: &str,
        headers: Option<Value<'v>>,
        #[starlark(require = named)] delay: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<MockResponseValue> {
        let site = Site::of(eval);
        response(
            eval,
            &site,
            "text_response",
            status,
            body.to_owned(),
            headers,
            delay,
        )
    }

    /// A status with an empty body: `status_only(code, delay=None)`.
    fn status_only<'v>(
        code: i32,
        #[starlark(require = named)] delay: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<MockResponseValue> {
        let site = Site::of(eval);
        response(eval, &site, "status_only", code, String::new(), None, delay)
    }

    /// `status_only` under the name the issue uses: `status_response(status, delay=None)`.
    fn status_response<'v>(
        status: i32,
        #[starlark(require = named)] delay: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<MockResponseValue> {
        let site = Site::of(eval);
        response(
            eval,
            &site,
            "status_response",
            status,
            String::new(),
            None,
            delay,
        )
    }
}

/// A response from a builtin's arguments, checked.
fn response<'v>(
    eval: &Evaluator<'v, '_, '_>,
    site: &Site,
    builtin: &str,
    status: i32,
    body: String,
    headers: Option<Value<'v>>,
    delay: Option<&str>,
) -> anyhow::Result<MockResponseValue> {
    let status_at = || {
        let keyword = if builtin == "status_only" {
            "code"
        } else {
            "status"
        };
        // The keyword when written so, else the first positional argument.
        site.keyword(keyword)
            .filter(|at| Some(at) != site.call())
            .or_else(|| site.positional(0))
    };
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| {
            raise(
                eval,
                SpecError::new(format!(
                    "{builtin}(): status {status} is not an HTTP status"
                ))
                .at(status_at().as_ref())
                .suggest(Some("use 100..599, e.g. 200, 404 or 503".into())),
            )
        })?;
    if body.len() > MAX_BODY {
        return Err(raise(
            eval,
            SpecError::new(format!(
                "{builtin}(): the body is {} bytes; at most {MAX_BODY} are accepted",
                body.len()
            ))
            .at(site.keyword("body").as_ref()),
        ));
    }
    let headers = match headers {
        None => Vec::new(),
        Some(h) => {
            let map = env_map(h).map_err(|m| {
                raise(
                    eval,
                    SpecError::new(format!("headers= {m}")).at(site.keyword("headers").as_ref()),
                )
            })?;
            if map.len() > MAX_HEADERS {
                return Err(raise(
                    eval,
                    SpecError::new(format!(
                        "headers= has {} headers; at most {MAX_HEADERS} are accepted",
                        map.len()
                    ))
                    .at(site.keyword("headers").as_ref()),
                ));
            }
            map.into_iter().collect()
        }
    };
    let delay_ms = match delay {
        None => 0,
        Some(d) => {
            let ms = parse_duration(d)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .and_then(|ms| {
                    if ms > MAX_DELAY_MS {
                        Err(format!(
                            "delay {d:?} is longer than the 60s a mock waits at most"
                        ))
                    } else {
                        Ok(ms)
                    }
                });
            ms.map_err(|m| {
                raise(
                    eval,
                    SpecError::new(format!("{builtin}(): {m}"))
                        .at(site.keyword("delay").as_ref())
                        .suggest(Some("write a duration such as \"200ms\" or \"2s\"".into())),
                )
            })?
        }
    };
    Ok(MockResponseValue {
        status,
        body,
        headers,
        delay_ms,
    })
}

/// A route's answer: a response value, or (tcp) a reply line.
fn answer(v: Value<'_>, tcp: bool) -> Result<MockResponseValue, String> {
    let r = match (v.downcast_ref::<MockResponseValue>(), v.unpack_str()) {
        (Some(r), _) => r.clone(),
        (None, Some(line)) if tcp => MockResponseValue {
            status: 200,
            body: line.to_owned(),
            headers: Vec::new(),
            delay_ms: 0,
        },
        _ => {
            let want = if tcp {
                "a reply line (string) or text_response(...)"
            } else {
                "json_response(...), text_response(...) or status_only(...)"
            };
            return Err(format!(
                "a route answers with {want}, got {} `{}`",
                v.get_type(),
                v.to_repr()
            ));
        }
    };
    if tcp && r.body.contains(['\n', '\r']) {
        return Err(format!(
            "a tcp mock replies one line; {:?} holds a line break",
            r.body
        ));
    }
    if r.body.len() > MAX_BODY {
        return Err(format!(
            "a reply of {} bytes is longer than the {MAX_BODY} accepted",
            r.body.len()
        ));
    }
    Ok(r)
}

/// `Err((message, suggestion))` unless `pattern` is `"METHOD /path-glob"`.
fn check_http_pattern(pattern: &str) -> Result<(), (String, String)> {
    let example = "write \"METHOD /path\", e.g. \"GET /users/*\" (`*` one segment, `**` any)";
    let Some((method, path)) = pattern.split_once(' ') else {
        return Err((
            format!("route {pattern:?} has no method"),
            format!("{example}; \"* {pattern}\" matches any method"),
        ));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'*') {
        return Err((
            format!("route {pattern:?}: {method:?} is not an HTTP method"),
            example.into(),
        ));
    }
    let path = path.trim();
    if !path.starts_with('/') && path != "*" && path != "**" {
        return Err((
            format!("route {pattern:?}: the path {path:?} does not start with '/'"),
            example.into(),
        ));
    }
    Ok(())
}
