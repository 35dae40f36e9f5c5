//! Unit tests of `mock_service` and its responses: what a mock becomes (the configuration faultd
//! serves, a default tcp healthcheck, a proxy when a protocol fault targets it), and every argument
//! error at its file:line:col with a suggestion.

use super::tests::{err_at, ok};

fn mock_config(src: &str, service: &str) -> serde_json::Value {
    let rt = ok(src);
    let s = rt
        .spec()
        .services
        .iter()
        .find(|s| s.name == service)
        .expect("the mock is a service");
    assert!(s.argv.is_empty(), "{s:?}");
    serde_json::from_str(s.mock.as_deref().expect("a mock configuration")).unwrap()
}

#[test]
fn a_mock_is_a_service_with_its_route_table() {
    let src = r#"
api = mock_service("api", interface("main", "http", 8090),
    routes = {
        "GET /users/*": json_response(status = 200, body = {"id": 1}, delay = "200ms"),
        "POST /users": status_only(201),
        "DELETE /users/1": status_response(204),
        "GET /text": text_response(body = "plain", headers = {"X-A": "b"}),
    },
    default = json_response(status = 404, body = {"error": "nope"}),
)
def test_a():
    fault(api.main, error(status = 503), run = lambda: None)
"#;
    let c = mock_config(src, "api");
    assert_eq!(c["protocol"], "http");
    let routes = c["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 4);
    assert_eq!(routes[0]["pattern"], "GET /users/*");
    assert_eq!(routes[0]["response"]["body"], "{\"id\":1}");
    assert_eq!(routes[0]["response"]["delay_ms"], 200);
    assert_eq!(
        routes[0]["response"]["headers"],
        serde_json::json!([["Content-Type", "application/json"]])
    );
    assert_eq!(routes[1]["response"]["status"], 201);
    assert_eq!(routes[2]["response"]["status"], 204);
    assert_eq!(
        routes[3]["response"]["headers"],
        serde_json::json!([["X-A", "b"]])
    );
    assert_eq!(c["default"]["status"], 404);
    let rt = ok(src);
    let api = &rt.spec().services[0];
    // A protocol fault targets it: it gets a proxy like any service's interface.
    assert!(api.interfaces[0].proxy_port.is_some(), "{api:?}");
    assert_eq!(
        api.healthcheck.as_ref().map(|h| h.check.clone()),
        Some(super::model::Check::Tcp("127.0.0.1:8090".into()))
    );
}

#[test]
fn a_tcp_mock_answers_lines() {
    let c = mock_config(
        "db = mock_service(\"db\", interface(\"main\", \"tcp\", 5433),\n    routes = {\"PING\": \"PONG\", \"GET *\": text_response(body = \"v\", delay = \"1s\")},\n    default = \"ERR\")\n",
        "db",
    );
    assert_eq!(c["protocol"], "tcp");
    assert_eq!(c["routes"][0]["response"]["body"], "PONG");
    assert_eq!(c["routes"][1]["response"]["delay_ms"], 1000);
    assert_eq!(c["default"]["body"], "ERR");
}

#[test]
fn mock_service_argument_errors_point_at_the_source() {
    // A route without a method.
    let e = err_at(
        "m = mock_service(\"m\", interface(\"main\", \"http\", 8090),\n    routes = {\"/users\": status_only(200)})\n",
        2,
        15,
    );
    assert_eq!(e.message, "route \"/users\" has no method");
    assert!(
        e.suggestion.as_deref().unwrap().contains("\"* /users\""),
        "{e}"
    );
    // A path that does not start with /.
    let e = err_at(
        "m = mock_service(\"m\", interface(\"main\", \"http\", 8090),\n    routes = {\"GET users\": status_only(200)})\n",
        2,
        15,
    );
    assert!(e.message.contains("does not start with '/'"), "{e}");
    assert!(e.suggestion.is_some());
    // A value that is no response.
    let e = err_at(
        "m = mock_service(\"m\", interface(\"main\", \"http\", 8090),\n    routes = {\"GET /\": 200})\n",
        2,
        15,
    );
    assert!(
        e.message.starts_with("a route answers with json_response"),
        "{e}"
    );
    // Two interfaces.
    let e = err_at(
        "m = mock_service(\"m\", interface(\"a\", \"http\", 8090), interface(\"b\", \"http\", 8091))\n",
        1,
        5,
    );
    assert!(e.message.contains("takes exactly one interface"), "{e}");
    assert!(e.suggestion.is_some());
    // A protocol a mock does not speak.
    let e = err_at(
        "m = mock_service(\"m\", interface(\"main\", \"redis\", 6390))\n",
        1,
        23,
    );
    assert!(e.message.contains("a mock speaks http or tcp"), "{e}");
    assert!(e.suggestion.is_some());
    // An unknown keyword.
    let e = err_at(
        "m = mock_service(\"m\", interface(\"main\", \"http\", 8090), route = {})\n",
        1,
        56,
    );
    assert_eq!(
        e.message,
        "unknown keyword argument `route` for mock_service()"
    );
    assert_eq!(e.suggestion.as_deref(), Some("did you mean `routes`?"));
    // A multi-line tcp reply.
    let e = err_at(
        "m = mock_service(\"m\", interface(\"main\", \"tcp\", 5433),\n    default = \"a\\nb\")\n",
        2,
        5,
    );
    assert!(e.message.contains("replies one line"), "{e}");
    // A name that is no name.
    let e = err_at(
        "m = mock_service(\"../m\", interface(\"main\", \"http\", 8090))\n",
        1,
        18,
    );
    assert!(e.suggestion.is_some(), "{e}");
}

#[test]
fn response_argument_errors_point_at_the_source() {
    let e = err_at("r = json_response(status = 42)\n", 1, 19);
    assert_eq!(
        e.message,
        "json_response(): status 42 is not an HTTP status"
    );
    assert!(e.suggestion.is_some());
    let e = err_at("r = status_only(code = 700)\n", 1, 17);
    assert_eq!(e.message, "status_only(): status 700 is not an HTTP status");
    let e = err_at("r = text_response(body = \"x\", delay = \"soon\")\n", 1, 31);
    assert!(
        e.message.starts_with("text_response(): invalid duration"),
        "{e}"
    );
    assert!(e.suggestion.as_deref().unwrap().contains("200ms"), "{e}");
    let e = err_at("r = status_response(200, delay = \"2m\")\n", 1, 26);
    assert!(e.message.contains("longer than the 60s"), "{e}");
    let e = err_at("r = json_response(headers = {\"X\": []})\n", 1, 19);
    assert!(e.message.starts_with("headers= value of `X`"), "{e}");
    let e = err_at("r = json_response(body = {\"f\": lambda: 1})\n", 1, 19);
    assert!(
        e.message.starts_with("body= cannot be encoded as JSON"),
        "{e}"
    );
}

#[test]
fn a_route_table_is_bounded() {
    let routes: Vec<String> = (0..20)
        .map(|i| format!("\"GET /{i}\": text_response(body = \"x\" * 30000)"))
        .collect();
    let src = format!(
        "m = mock_service(\"m\", interface(\"main\", \"http\", 8090),\n    routes = {{{}}})\n",
        routes.join(", ")
    );
    let e = err_at(&src, 2, 5);
    assert!(e.message.contains("at most 524288 are accepted"), "{e}");
    assert!(e.suggestion.is_some());
}
