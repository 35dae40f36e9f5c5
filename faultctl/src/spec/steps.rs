//! Steps: requests against a service interface, executed by faultd's `Step` RPC. HTTP interfaces
//! offer `get/post/put/delete/patch(path=, body=, headers=, timeout=)` returning a response; TCP
//! interfaces offer `send(data=, timeout=)` returning the reply line; redis and postgres steps are in
//! [`super::db_steps`].
//! Every service offers `power_loss(mode=)`, `restart()`, `stop()` and `kill(signal=)`.

use std::collections::HashMap;

use faultd_proto::v1 as pb;
use starlark::environment::MethodsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::values::dict::DictRef;
use starlark::values::none::NoneType;
use starlark::values::{Value, ValueLike};

use super::context::session;
use super::model::{Interface, Protocol};
use super::units::parse_duration;
use super::values::{InterfaceRefValue, ResponseValue, ServiceValue};

#[starlark_module]
pub(crate) fn step_methods(builder: &mut MethodsBuilder) {
    /// HTTP GET; on a redis interface, `GET key`.
    fn get<'v>(
        this: Value<'v>,
        #[starlark(default = "/")] path: &str,
        #[starlark(require = named)] headers: Option<Value<'v>>,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        if is_redis(this) {
            let result = super::db_steps::redis_key(eval, this, "GET", path, timeout)?;
            return Ok(eval.heap().alloc(result));
        }
        let response = http(eval, this, "GET", path, None, headers, timeout)?;
        Ok(eval.heap().alloc(response))
    }

    /// HTTP POST.
    fn post<'v>(
        this: Value<'v>,
        #[starlark(default = "/")] path: &str,
        #[starlark(require = named)] body: Option<Value<'v>>,
        #[starlark(require = named)] headers: Option<Value<'v>>,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ResponseValue> {
        http(eval, this, "POST", path, body, headers, timeout)
    }

    /// HTTP PUT.
    fn put<'v>(
        this: Value<'v>,
        #[starlark(default = "/")] path: &str,
        #[starlark(require = named)] body: Option<Value<'v>>,
        #[starlark(require = named)] headers: Option<Value<'v>>,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ResponseValue> {
        http(eval, this, "PUT", path, body, headers, timeout)
    }

    /// HTTP DELETE; on a redis interface, `DEL key` (`del` is a reserved word in Starlark).
    fn delete<'v>(
        this: Value<'v>,
        #[starlark(default = "/")] path: &str,
        #[starlark(require = named)] body: Option<Value<'v>>,
        #[starlark(require = named)] headers: Option<Value<'v>>,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<Value<'v>> {
        if is_redis(this) {
            let result = super::db_steps::redis_key(eval, this, "DEL", path, timeout)?;
            return Ok(eval.heap().alloc(result));
        }
        let response = http(eval, this, "DELETE", path, body, headers, timeout)?;
        Ok(eval.heap().alloc(response))
    }

    /// HTTP PATCH.
    fn patch<'v>(
        this: Value<'v>,
        #[starlark(default = "/")] path: &str,
        #[starlark(require = named)] body: Option<Value<'v>>,
        #[starlark(require = named)] headers: Option<Value<'v>>,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<ResponseValue> {
        http(eval, this, "PATCH", path, body, headers, timeout)
    }

    /// Sends one line over TCP and returns the reply line; fails when no reply comes back.
    fn send<'v>(
        this: Value<'v>,
        data: &str,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<String> {
        let (service, iface) = endpoint(this, Protocol::Tcp)?;
        let request = pb::step_request::Request::Tcp(pb::TcpRequest {
            line: data.to_owned(),
        });
        let answer = step(eval, &service, &iface, request, timeout)?;
        if !answer.ok {
            anyhow::bail!("tcp send failed: {}", answer.error);
        }
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    /// Cuts the service's power now: every process is killed and every file under volatile tracking
    /// goes back to its durable state (`mode="torn"` keeps a prefix drawn from the test's seed).
    /// Returns what was restored, as a sentence.
    fn power_loss<'v>(
        this: Value<'v>,
        #[starlark(require = named)] mode: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<String> {
        let service = service_of(this, "power_loss")?;
        let mode = super::builtins::parse_power_loss_mode(mode)
            .map_err(|e| anyhow::anyhow!("{}", e.one_line()))?;
        let session = session(eval, &format!("`{service}.power_loss()`"))?;
        let req = pb::StepRequest {
            session_id: session.session_id.clone(),
            service: service.clone(),
            request: Some(pb::step_request::Request::PowerLoss(pb::PowerLoss {
                mode: mode.as_str().to_owned(),
                seed: Some(session.seed),
            })),
            ..Default::default()
        };
        let answer = session
            .block_on(session.client.clone().step(req))
            .map_err(|e| anyhow::anyhow!("power loss of `{service}` failed: {e}"))?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    /// Starts the service again (stopping it first if it runs), with the same argv, env, cwd, filter,
    /// active faults and volatile tracking, and waits for its healthcheck.
    fn restart<'v>(this: Value<'v>, eval: &mut Evaluator<'v, '_, '_>) -> anyhow::Result<NoneType> {
        let service = service_of(this, "restart")?;
        process_step(
            eval,
            &service,
            pb::step_request::Request::Restart(pb::Restart {}),
        )
    }

    /// Stops the service (SIGTERM, SIGKILL after its grace period); `restart()` starts it again.
    fn stop<'v>(this: Value<'v>, eval: &mut Evaluator<'v, '_, '_>) -> anyhow::Result<NoneType> {
        let service = service_of(this, "stop")?;
        process_step(eval, &service, pb::step_request::Request::Stop(pb::Stop {}))
    }

    /// Sends a signal to every process of the service, without waiting: `kill(signal="SIGKILL")`.
    fn kill<'v>(
        this: Value<'v>,
        #[starlark(require = named)] signal: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<NoneType> {
        let service = service_of(this, "kill")?;
        let signal = signal.unwrap_or("SIGKILL").to_owned();
        process_step(
            eval,
            &service,
            pb::step_request::Request::Kill(pb::Kill { signal }),
        )
    }
}

/// The service a process step on `this` (a service or one of its interfaces) acts on.
fn service_of(this: Value<'_>, step: &str) -> anyhow::Result<String> {
    if let Some(r) = this.downcast_ref::<InterfaceRefValue>() {
        Ok(r.service.clone())
    } else if let Some(s) = this.downcast_ref::<ServiceValue>() {
        Ok(s.name.clone())
    } else {
        anyhow::bail!("{step}() runs on a service, not {}", this.get_type())
    }
}

/// Runs a step on a service's processes (restart, stop, kill).
fn process_step(
    eval: &Evaluator<'_, '_, '_>,
    service: &str,
    request: pb::step_request::Request,
) -> anyhow::Result<NoneType> {
    let session = session(eval, &format!("a step on `{service}`"))?;
    let req = pb::StepRequest {
        session_id: session.session_id.clone(),
        service: service.to_owned(),
        request: Some(request),
        ..Default::default()
    };
    session
        .block_on(session.client.clone().step(req))
        .map_err(|e| anyhow::anyhow!("step on `{service}` failed: {e}"))?;
    Ok(NoneType)
}

fn is_redis(this: Value<'_>) -> bool {
    this.downcast_ref::<InterfaceRefValue>()
        .is_some_and(|r| r.iface.protocol == Protocol::Redis)
}

fn http<'v>(
    eval: &Evaluator<'v, '_, '_>,
    this: Value<'v>,
    method: &str,
    path: &str,
    body: Option<Value<'v>>,
    headers: Option<Value<'v>>,
    timeout: Option<&str>,
) -> anyhow::Result<ResponseValue> {
    let (service, iface) = endpoint(this, Protocol::Http)?;
    let mut header_map = HashMap::new();
    if let Some(h) = headers.filter(|h| !h.is_none()) {
        let dict = DictRef::from_value(h)
            .ok_or_else(|| anyhow::anyhow!("headers= takes a dict, got {}", h.get_type()))?;
        for (k, v) in dict.iter() {
            let k = k
                .unpack_str()
                .ok_or_else(|| anyhow::anyhow!("header names must be strings"))?;
            header_map.insert(
                k.to_owned(),
                v.unpack_str().map_or_else(|| v.to_str(), str::to_owned),
            );
        }
    }
    let body = match body.filter(|b| !b.is_none()) {
        None => Vec::new(),
        Some(b) => match b.unpack_str() {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                if !header_map
                    .keys()
                    .any(|k| k.eq_ignore_ascii_case("content-type"))
                {
                    header_map.insert("Content-Type".to_owned(), "application/json".to_owned());
                }
                b.to_json()?.into_bytes()
            }
        },
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let request = pb::step_request::Request::Http(pb::HttpRequest {
        method: method.to_owned(),
        path,
        headers: header_map,
        body,
    });
    let answer = step(eval, &service, &iface, request, timeout)?;
    Ok(ResponseValue {
        status: answer.status,
        body: String::from_utf8_lossy(&answer.body).trim().to_owned(),
        headers: answer.headers.into_iter().collect(),
        ok: answer.ok,
        error: answer.error,
        duration_ms: answer.duration_us / 1000,
    })
}

pub(super) fn step(
    eval: &Evaluator<'_, '_, '_>,
    service: &str,
    iface: &Interface,
    request: pb::step_request::Request,
    timeout: Option<&str>,
) -> anyhow::Result<pb::StepResponse> {
    let session = session(eval, &format!("a step on `{service}.{}`", iface.name))?;
    let timeout_ms = match timeout {
        Some(t) => u32::try_from(parse_duration(t).map_err(anyhow::Error::msg)?.as_millis())
            .unwrap_or(u32::MAX),
        None => 0,
    };
    let req = pb::StepRequest {
        session_id: session.session_id.clone(),
        service: service.to_owned(),
        interface: iface.name.clone(),
        request: Some(request),
        timeout_ms,
    };
    session
        .block_on(session.client.clone().step(req))
        .map_err(|e| anyhow::anyhow!("step on `{service}.{}` failed: {e}", iface.name))
}

/// The service and interface a step on `this` goes to, checking the protocol.
pub(super) fn endpoint(this: Value<'_>, protocol: Protocol) -> anyhow::Result<(String, Interface)> {
    let (service, iface) = if let Some(r) = this.downcast_ref::<InterfaceRefValue>() {
        (r.service.clone(), r.iface.clone())
    } else if let Some(s) = this.downcast_ref::<ServiceValue>() {
        match s.interfaces.as_slice() {
            [only] => (s.name.clone(), only.clone()),
            [] => anyhow::bail!(
                "service `{}` declares no interface to send steps to",
                s.name
            ),
            many => {
                let names: Vec<_> = many.iter().map(|i| i.name.as_str()).collect();
                anyhow::bail!(
                    "service `{}` has {} interfaces ({}); call the step on one of them, e.g. `{}.{}.…`",
                    s.name,
                    many.len(),
                    names.join(", "),
                    s.name,
                    names[0]
                );
            }
        }
    } else {
        anyhow::bail!(
            "steps run on services and interfaces, not {}",
            this.get_type()
        );
    };
    if iface.protocol != protocol {
        let offers = match iface.protocol {
            Protocol::Http => "get/post/put/delete/patch(path=...)",
            Protocol::Tcp => "send(data=...)",
            Protocol::Redis => "command(...), get/set/delete/incr/ping",
            Protocol::Postgres => "query(sql), exec(sql)",
        };
        anyhow::bail!(
            "`{service}.{}` speaks {}; its steps are {offers}",
            iface.name,
            iface.protocol.name()
        );
    }
    Ok((service, iface))
}
