//! Redis and Postgres steps: `svc.iface.command("SET", "k", "v")`, `get/set/delete/incr/ping` on
//! a redis interface (`delete`: `del` is reserved in Starlark); `svc.iface.query(sql)` / `exec(sql)` on a postgres one. Each returns a
//! [`DbResultValue`]; a server error is data (`.error`), not a raised error.

use std::fmt;

use allocative::Allocative;
use faultd_proto::v1 as pb;
use starlark::environment::MethodsBuilder;
use starlark::eval::Evaluator;
use starlark::starlark_module;
use starlark::starlark_simple_value;
use starlark::values::tuple::UnpackTuple;
use starlark::values::{
    Heap, NoSerialize, ProvidesStaticType, StarlarkValue, Value, starlark_value,
};

use super::model::Protocol;
use super::steps::{endpoint, step};

#[starlark_module]
pub(crate) fn db_methods(builder: &mut MethodsBuilder) {
    /// One redis command: `command("SET", "k", "v")`.
    fn command<'v>(
        this: Value<'v>,
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<DbResultValue> {
        let words: Vec<String> = args
            .items
            .iter()
            .map(|v| v.unpack_str().map_or_else(|| v.to_str(), str::to_owned))
            .collect();
        redis(eval, this, words, timeout)
    }

    /// redis `SET key value`.
    fn set<'v>(
        this: Value<'v>,
        key: &str,
        value: Value<'v>,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<DbResultValue> {
        let value = value
            .unpack_str()
            .map_or_else(|| value.to_str(), str::to_owned);
        redis(eval, this, vec!["SET".into(), key.into(), value], timeout)
    }

    /// redis `INCR key`.
    fn incr<'v>(
        this: Value<'v>,
        key: &str,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<DbResultValue> {
        redis(eval, this, vec!["INCR".into(), key.into()], timeout)
    }

    /// redis `PING`.
    fn ping<'v>(
        this: Value<'v>,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<DbResultValue> {
        redis(eval, this, vec!["PING".into()], timeout)
    }

    /// postgres: runs `sql` (a simple query) and returns its rows.
    fn query<'v>(
        this: Value<'v>,
        sql: &str,
        #[starlark(require = named)] user: Option<&str>,
        #[starlark(require = named)] database: Option<&str>,
        #[starlark(require = named)] password: Option<&str>,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<DbResultValue> {
        postgres(eval, this, sql, [user, database, password], timeout)
    }

    /// postgres: runs `sql`; `.count` is the rows it affected.
    fn exec<'v>(
        this: Value<'v>,
        sql: &str,
        #[starlark(require = named)] user: Option<&str>,
        #[starlark(require = named)] database: Option<&str>,
        #[starlark(require = named)] password: Option<&str>,
        #[starlark(require = named)] timeout: Option<&str>,
        eval: &mut Evaluator<'v, '_, '_>,
    ) -> anyhow::Result<DbResultValue> {
        postgres(eval, this, sql, [user, database, password], timeout)
    }
}

/// redis `GET key` or `DEL key` (what `get` and `delete` do on a redis interface).
pub(super) fn redis_key<'v>(
    eval: &Evaluator<'v, '_, '_>,
    this: Value<'v>,
    command: &str,
    key: &str,
    timeout: Option<&str>,
) -> anyhow::Result<DbResultValue> {
    redis(eval, this, vec![command.into(), key.into()], timeout)
}

fn redis<'v>(
    eval: &Evaluator<'v, '_, '_>,
    this: Value<'v>,
    words: Vec<String>,
    timeout: Option<&str>,
) -> anyhow::Result<DbResultValue> {
    if words.is_empty() {
        anyhow::bail!("command() needs the command name, e.g. command(\"PING\")");
    }
    let (service, iface) = endpoint(this, Protocol::Redis)?;
    let request = pb::step_request::Request::Redis(pb::RedisRequest {
        args: words.into_iter().map(String::into_bytes).collect(),
    });
    let answer = step(eval, &service, &iface, request, timeout)?;
    let mut out = DbResultValue::transport(&answer);
    if let Some(v) = answer.redis {
        if let Some(pb::redis_value::Value::Error(e)) = &v.value {
            out.error = Some(DbError {
                sqlstate: None,
                message: e.clone(),
            });
        }
        out.value = Some(v);
    }
    Ok(out)
}

fn postgres<'v>(
    eval: &Evaluator<'v, '_, '_>,
    this: Value<'v>,
    sql: &str,
    [user, database, password]: [Option<&str>; 3],
    timeout: Option<&str>,
) -> anyhow::Result<DbResultValue> {
    let (service, iface) = endpoint(this, Protocol::Postgres)?;
    let request = pb::step_request::Request::Postgres(pb::PostgresRequest {
        sql: sql.to_owned(),
        user: user.unwrap_or_default().to_owned(),
        database: database.unwrap_or_default().to_owned(),
        password: password.unwrap_or_default().to_owned(),
    });
    let answer = step(eval, &service, &iface, request, timeout)?;
    let mut out = DbResultValue::transport(&answer);
    if let Some(r) = answer.postgres {
        out.count = r.count;
        out.rows = Some(
            r.rows
                .into_iter()
                .map(|row| row.cells.into_iter().map(|c| c.text).collect())
                .collect(),
        );
        if r.failed {
            out.error = Some(DbError {
                sqlstate: Some(r.sqlstate),
                message: r.message,
            });
        }
    }
    Ok(out)
}

/// What a redis or postgres step returned. Truthy when it succeeded (`ok`).
#[derive(Debug, Clone, Default, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct DbResultValue {
    #[allocative(skip)]
    value: Option<pb::RedisValue>,
    #[allocative(skip)]
    rows: Option<Vec<Vec<Option<String>>>>,
    count: u64,
    #[allocative(skip)]
    error: Option<DbError>,
    /// Transport failure (no answer), as text.
    transport_error: Option<String>,
    duration_ms: u64,
}
starlark_simple_value!(DbResultValue);

/// A server's error: redis error reply text, or postgres SQLSTATE and message.
#[derive(Debug, Clone)]
struct DbError {
    sqlstate: Option<String>,
    message: String,
}

impl DbResultValue {
    fn transport(answer: &pb::StepResponse) -> DbResultValue {
        DbResultValue {
            transport_error: (!answer.ok).then(|| answer.error.clone()),
            duration_ms: answer.duration_us / 1000,
            ..DbResultValue::default()
        }
    }

    fn ok(&self) -> bool {
        self.transport_error.is_none() && self.error.is_none()
    }
}

impl fmt::Display for DbResultValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.transport_error, &self.error) {
            (Some(e), _) => write!(f, "result(ok=False, error={e:?})"),
            (None, Some(e)) => match &e.sqlstate {
                Some(code) => write!(f, "result(ok=False, error=\"{code}: {}\")", e.message),
                None => write!(f, "result(ok=False, error={:?})", e.message),
            },
            (None, None) => match (&self.rows, &self.value) {
                (Some(rows), _) => write!(f, "result(rows={}, count={})", rows.len(), self.count),
                (None, Some(v)) => write!(f, "result(value={})", redis_repr(v)),
                (None, None) => write!(f, "result()"),
            },
        }
    }
}

fn redis_repr(v: &pb::RedisValue) -> String {
    use pb::redis_value::Value as V;
    match &v.value {
        Some(V::Bulk(b)) => format!("{:?}", String::from_utf8_lossy(b)),
        Some(V::Simple(s)) => format!("{s:?}"),
        Some(V::Error(e)) => format!("error({e:?})"),
        Some(V::Integer(n)) => n.to_string(),
        Some(V::Array(a)) => format!(
            "[{}]",
            a.items
                .iter()
                .map(redis_repr)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(V::Null(_)) | None => "None".into(),
    }
}

fn redis_value<'v>(v: &pb::RedisValue, heap: Heap<'v>) -> Value<'v> {
    use pb::redis_value::Value as V;
    match &v.value {
        Some(V::Bulk(b)) => heap.alloc(String::from_utf8_lossy(b).as_ref()),
        Some(V::Simple(s)) => heap.alloc(s.as_str()),
        Some(V::Error(e)) => heap.alloc(e.as_str()),
        Some(V::Integer(n)) => heap.alloc(*n),
        Some(V::Array(a)) => heap.alloc(
            a.items
                .iter()
                .map(|i| redis_value(i, heap))
                .collect::<Vec<_>>(),
        ),
        Some(V::Null(_)) | None => Value::new_none(),
    }
}

/// `.error` of a postgres step: `.sqlstate`, `.message`; str() is `SQLSTATE: message`.
#[derive(Debug, Clone, ProvidesStaticType, NoSerialize, Allocative)]
pub(crate) struct PgErrorValue {
    sqlstate: String,
    message: String,
}
starlark_simple_value!(PgErrorValue);

impl fmt::Display for PgErrorValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.sqlstate, self.message)
    }
}

#[starlark_value(type = "sql_error")]
impl<'v> StarlarkValue<'v> for PgErrorValue {
    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        match attribute {
            "sqlstate" => Some(heap.alloc(self.sqlstate.as_str())),
            "message" => Some(heap.alloc(self.message.as_str())),
            _ => None,
        }
    }

    fn dir_attr(&self) -> Vec<String> {
        vec!["message".into(), "sqlstate".into()]
    }
}

#[starlark_value(type = "db_result")]
impl<'v> StarlarkValue<'v> for DbResultValue {
    fn get_attr(&self, attribute: &str, heap: Heap<'v>) -> Option<Value<'v>> {
        match attribute {
            "ok" => Some(Value::new_bool(self.ok())),
            "duration_ms" => Some(heap.alloc(self.duration_ms)),
            "value" => Some(match &self.value {
                Some(v) if self.error.is_none() => redis_value(v, heap),
                _ => Value::new_none(),
            }),
            "rows" => Some(match &self.rows {
                Some(rows) => heap.alloc(
                    rows.iter()
                        .map(|row| {
                            row.iter()
                                .map(|c| match c {
                                    Some(s) => heap.alloc(s.as_str()),
                                    None => Value::new_none(),
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>(),
                ),
                None => Value::new_none(),
            }),
            "count" => Some(heap.alloc(self.count)),
            "error" => Some(match (&self.transport_error, &self.error) {
                (Some(e), _) => heap.alloc(e.as_str()),
                (
                    None,
                    Some(DbError {
                        sqlstate: Some(code),
                        message,
                    }),
                ) => heap.alloc(PgErrorValue {
                    sqlstate: code.clone(),
                    message: message.clone(),
                }),
                (None, Some(e)) => heap.alloc(e.message.as_str()),
                (None, None) => Value::new_none(),
            }),
            _ => None,
        }
    }

    fn has_attr(&self, attribute: &str, _heap: Heap<'v>) -> bool {
        DB_ATTRS.contains(&attribute)
    }

    fn dir_attr(&self) -> Vec<String> {
        DB_ATTRS.iter().map(|s| (*s).to_owned()).collect()
    }

    fn to_bool(&self) -> bool {
        self.ok()
    }
}

const DB_ATTRS: &[&str] = &["count", "duration_ms", "error", "ok", "rows", "value"];
