//! `assert_true`, `assert_eq`, `assert_ne`. Their messages become failure reasons:
//! `assert_true` fails with its message (or `assertion failed`), `assert_eq` with
//! `assert_eq failed: <a> != <b> (<message>)`, values in Starlark repr.

use starlark::environment::GlobalsBuilder;
use starlark::starlark_module;
use starlark::values::Value;
use starlark::values::none::NoneType;

#[starlark_module]
pub(crate) fn assertions(builder: &mut GlobalsBuilder) {
    /// Fails with `message` unless `condition` is truthy.
    fn assert_true<'v>(
        #[starlark(require = pos)] condition: Value<'v>,
        message: Option<&str>,
    ) -> anyhow::Result<NoneType> {
        if condition.to_bool() {
            return Ok(NoneType);
        }
        Err(anyhow::anyhow!("{}", message.unwrap_or("assertion failed")))
    }

    /// Fails unless `a == b`.
    fn assert_eq<'v>(
        #[starlark(require = pos)] a: Value<'v>,
        #[starlark(require = pos)] b: Value<'v>,
        message: Option<&str>,
    ) -> anyhow::Result<NoneType> {
        if a.equals(b).map_err(starlark::Error::into_anyhow)? {
            return Ok(NoneType);
        }
        Err(anyhow::anyhow!(
            "{}",
            failure("assert_eq", a, "!=", b, message)
        ))
    }

    /// Fails if `a == b`.
    fn assert_ne<'v>(
        #[starlark(require = pos)] a: Value<'v>,
        #[starlark(require = pos)] b: Value<'v>,
        message: Option<&str>,
    ) -> anyhow::Result<NoneType> {
        if !a.equals(b).map_err(starlark::Error::into_anyhow)? {
            return Ok(NoneType);
        }
        Err(anyhow::anyhow!(
            "{}",
            failure("assert_ne", a, "==", b, message)
        ))
    }
}

fn failure(name: &str, a: Value<'_>, op: &str, b: Value<'_>, message: Option<&str>) -> String {
    let mut out = format!("{name} failed: {} {op} {}", a.to_repr(), b.to_repr());
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        out.push_str(&format!(" ({m})"));
    }
    out
}
