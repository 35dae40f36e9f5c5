//! Orders and their JSON, read and written with `serde_json`.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A stored order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Order {
    pub id: u64,
    pub sku: String,
    pub qty: i64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// How an order ended; serialized as `"status"` and its field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub(crate) enum Outcome {
    Confirmed { remaining_stock: i64 },
    Failed { error: String },
}

impl Order {
    /// `{"id":N,"sku":…,"qty":N,"status":…,…}`.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an order is plain data")
    }
}

/// `s` as a JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string is plain data")
}

/// The fields of an order body, in document order.
struct OrderBody(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = OrderBody;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_unit<E: de::Error>(self) -> Result<OrderBody, E> {
                Ok(OrderBody(Vec::new()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderBody, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key.eq_ignore_ascii_case("sku") || key.eq_ignore_ascii_case("qty") {
                        fields.push((key, map.next_value()?));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(OrderBody(fields))
            }
        }
        deserializer.deserialize_any(Fields)
    }
}

/// Extracts `sku` and `qty` from an order body. Keys match case-insensitively and the last one wins
/// (like Go's `encoding/json`); other keys are ignored; absent or `null` fields stay empty / 0.
pub(crate) fn parse_order_request(body: &[u8]) -> Result<(String, i64), String> {
    let OrderBody(fields) = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut sku = String::new();
    let mut qty = 0;
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("sku") {
            match value {
                Value::String(s) => sku = s,
                Value::Null => {}
                _ => return Err("field \"sku\" must be a string".to_owned()),
            }
        } else {
            match value {
                Value::Number(n) => {
                    qty = n
                        .as_i64()
                        .ok_or_else(|| format!("field \"qty\" must be an integer, got {n}"))?;
                }
                Value::Null => {}
                _ => return Err("field \"qty\" must be a number".to_owned()),
            }
        }
    }
    Ok((sku, qty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_order_fields() {
        let ok = |body: &str| parse_order_request(body.as_bytes()).unwrap();
        assert_eq!(ok(r#"{"sku":"widget","qty":1}"#), ("widget".to_owned(), 1));
        assert_eq!(
            ok(r#" { "SKU" : "g\u0061dget" , "extra": [1, {"a": null}], "qty": -3 } "#),
            ("gadget".to_owned(), -3)
        );
        assert_eq!(ok(r#"{"sku":"widget"}"#), ("widget".to_owned(), 0));
        assert_eq!(
            ok(r#"{"sku":"a","SKU":"b","qty":null}"#),
            ("b".to_owned(), 0)
        );
        assert_eq!(ok("null"), (String::new(), 0));
        for bad in [
            r#"{"sku":"widget","qty":1.5}"#,
            r#"{"sku":"widget","qty":"1"}"#,
            r#"{"sku":5}"#,
            r#"{"sku":"widget""#,
            r#"{"sku":"widget"} x"#,
            "[1]",
            "",
            "01",
        ] {
            assert!(parse_order_request(bad.as_bytes()).is_err(), "{bad}");
        }
        let deep = "[".repeat(1000);
        assert!(parse_order_request(deep.as_bytes()).is_err());
        let e = parse_order_request(br#"{"qty":1.5}"#).unwrap_err();
        assert_eq!(e, "field \"qty\" must be an integer, got 1.5");
    }

    #[test]
    fn writes_json() {
        assert_eq!(json_string("a\"b\\\n\u{1}"), r#""a\"b\\\n\u0001""#);
        let confirmed = Order {
            id: 1,
            sku: "widget".into(),
            qty: 1,
            outcome: Outcome::Confirmed {
                remaining_stock: 99,
            },
        };
        assert_eq!(
            confirmed.to_json(),
            r#"{"id":1,"sku":"widget","qty":1,"status":"confirmed","remaining_stock":99}"#
        );
        let failed = Order {
            id: 2,
            sku: "nope".into(),
            qty: 1,
            outcome: Outcome::Failed {
                error: "sku not found".into(),
            },
        };
        assert_eq!(
            failed.to_json(),
            r#"{"id":2,"sku":"nope","qty":1,"status":"failed","error":"sku not found"}"#
        );
    }
}
