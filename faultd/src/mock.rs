//! Built-in mock services: a dependency stood in by a route table instead of a program.
//!
//! A session's service with a mock configuration ([`MockConfig`], JSON in `ServiceSpec.mock`) is
//! launched like any other service (cgroup, seccomp filter, healthcheck, proxies, trace), but its
//! program is the binary faultd runs from, re-executed with [`MOCK_COMMAND`] and the validated
//! configuration: [`main`] then serves it. An `http` mock answers `"METHOD /path"` routes (`*` one
//! path segment, `**` any number, method `*` any), a `tcp` mock answers each received line by a
//! line glob (literal patterns are tried before globs, each in the order given); unmatched requests get the default (HTTP 404 `not found` when there is none; a tcp
//! mock without default closes the connection).

mod serve;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

/// The hidden first argument that makes faultd's binary (or faultctl's, with its embedded engine)
/// serve a mock instead of doing its own work.
pub const MOCK_COMMAND: &str = "__faultd-mock";

/// Most routes of one mock.
pub const MAX_ROUTES: usize = 256;
/// Longest route pattern.
pub const MAX_PATTERN: usize = 1024;
/// Longest response body.
pub const MAX_BODY: usize = 64 << 10;
/// Most headers of one response.
pub const MAX_HEADERS: usize = 32;
/// Longest delay before a response, in milliseconds.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Longest configuration (JSON): it travels in the mock's argv.
pub const MAX_CONFIG: usize = 512 << 10;

/// What a mock serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    /// `http` or `tcp`.
    pub protocol: String,
    /// `host:port` to listen on; filled in by faultd from the service's interface.
    #[serde(default)]
    pub listen: String,
    /// Routes in the order they are tried.
    #[serde(default)]
    pub routes: Vec<MockRoute>,
    /// The answer when no route matches.
    #[serde(default)]
    pub default: Option<MockResponse>,
}

/// One route: a pattern and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockRoute {
    /// http: `"GET /users/*"`; tcp: a glob over the received line (`"GET *"`).
    pub pattern: String,
    /// The answer.
    pub response: MockResponse,
}

/// A canned answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockResponse {
    /// HTTP status (0: 200); ignored by tcp mocks.
    #[serde(default)]
    pub status: u16,
    /// The body (http) or the reply line without its newline (tcp).
    #[serde(default)]
    pub body: String,
    /// Response headers (http).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Wait this long before answering.
    #[serde(default)]
    pub delay_ms: u64,
}

/// Why a mock configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// Not JSON of the expected shape.
    #[error("mock configuration is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// Neither http nor tcp.
    #[error("a mock speaks http or tcp, not {0:?}")]
    Protocol(String),
    /// A size or count beyond its bound.
    #[error("mock {what} is {got}; at most {max} is accepted")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size.
        got: u64,
        /// The bound.
        max: u64,
    },
    /// A route pattern that does not parse.
    #[error("mock route {pattern:?}: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A status outside 100..=599.
    #[error("mock status {0} is not an HTTP status (100..599)")]
    Status(u16),
    /// A header name or value HTTP cannot carry.
    #[error("mock header {0:?} is not a valid HTTP header")]
    Header(String),
    /// A tcp reply holding a newline (it would be two replies).
    #[error("a tcp mock reply is one line; {0:?} holds a line break")]
    Multiline(String),
}

impl MockConfig {
    /// Parses and validates a configuration.
    pub fn parse(json: &str) -> Result<MockConfig, MockError> {
        bound("configuration length", json.len(), MAX_CONFIG)?;
        let config: MockConfig = serde_json::from_str(json)?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as the JSON [`MockConfig::parse`] reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks bounds, patterns, statuses and headers.
    pub fn validate(&self) -> Result<(), MockError> {
        let tcp = match self.protocol.as_str() {
            "http" => false,
            "tcp" => true,
            other => return Err(MockError::Protocol(other.to_owned())),
        };
        bound("route count", self.routes.len(), MAX_ROUTES)?;
        for route in &self.routes {
            bound("route pattern length", route.pattern.len(), MAX_PATTERN)?;
            Matcher::new(&route.pattern, tcp)?;
            route.response.validate(tcp)?;
        }
        if let Some(d) = &self.default {
            d.validate(tcp)?;
        }
        Ok(())
    }
}

impl MockResponse {
    fn validate(&self, tcp: bool) -> Result<(), MockError> {
        bound("body length", self.body.len(), MAX_BODY)?;
        bound("header count", self.headers.len(), MAX_HEADERS)?;
        if self.delay_ms > MAX_DELAY_MS {
            return Err(MockError::TooLarge {
                what: "delay (ms)",
                got: self.delay_ms,
                max: MAX_DELAY_MS,
            });
        }
        if self.status != 0 && !(100..=599).contains(&self.status) {
            return Err(MockError::Status(self.status));
        }
        for (name, value) in &self.headers {
            let ok = hyper::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && hyper::header::HeaderValue::from_str(value).is_ok();
            if !ok {
                return Err(MockError::Header(format!("{name}: {value}")));
            }
        }
        if tcp && self.body.contains(['\n', '\r']) {
            return Err(MockError::Multiline(self.body.clone()));
        }
        Ok(())
    }
}

fn bound(what: &'static str, got: usize, max: usize) -> Result<(), MockError> {
    if got > max {
        return Err(MockError::TooLarge {
            what,
            got: got as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// A compiled route pattern.
#[derive(Debug, Clone)]
struct Matcher {
    /// `None`: any method (`*`), or a tcp line pattern.
    method: Option<String>,
    glob: GlobMatcher,
}

impl Matcher {
    fn new(pattern: &str, tcp: bool) -> Result<Matcher, MockError> {
        let err = |reason: String| MockError::Pattern {
            pattern: pattern.to_owned(),
            reason,
        };
        let (method, glob) = if tcp {
            (None, pattern)
        } else {
            let (method, path) = pattern.split_once(' ').ok_or_else(|| {
                err("an http route is \"METHOD /path\", e.g. \"GET /users/*\"".into())
            })?;
            let path = path.trim();
            if !path.starts_with('/') && path != "*" && path != "**" {
                return Err(err(format!("the path {path:?} does not start with '/'")));
            }
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic() || b == b'*') {
                return Err(err(format!("{method:?} is not an HTTP method (or *)")));
            }
            let method = (method != "*").then(|| method.to_ascii_uppercase());
            (method, path)
        };
        let glob = GlobBuilder::new(glob)
            .literal_separator(!tcp)
            .backslash_escape(true)
            .build()
            .map_err(|e| err(e.kind().to_string()))?
            .compile_matcher();
        Ok(Matcher { method, glob })
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.glob.is_match(target)
    }
}

/// A configuration ready to answer requests.
#[derive(Debug)]
struct Table {
    routes: Vec<(Matcher, MockResponse)>,
    default: Option<MockResponse>,
}

impl Table {
    fn new(config: &MockConfig) -> Result<Table, MockError> {
        let tcp = config.protocol == "tcp";
        // As the peer: literal patterns before globs, each group in the order given.
        let mut ordered: Vec<&MockRoute> = config.routes.iter().collect();
        ordered.sort_by_key(|r| r.pattern.contains(['*', '?', '[', '{']));
        let routes = ordered
            .into_iter()
            .map(|r| Ok((Matcher::new(&r.pattern, tcp)?, r.response.clone())))
            .collect::<Result<_, MockError>>()?;
        Ok(Table {
            routes,
            default: config.default.clone(),
        })
    }

    /// The answer to `method` (empty for tcp) and `target` (path or line), if any.
    fn answer(&self, method: &str, target: &str) -> Option<&MockResponse> {
        self.routes
            .iter()
            .find(|(m, _)| m.matches(method, target))
            .map(|(_, r)| r)
            .or(self.default.as_ref())
    }
}

/// `<binary> __faultd-mock <json>`: serves the mock until killed. Returns the process's exit code.
pub fn main(args: &[String]) -> i32 {
    let Some(json) = args.first() else {
        eprintln!("faultd mock: usage: {MOCK_COMMAND} <configuration JSON>");
        return 2;
    };
    let config = match MockConfig::parse(json) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("faultd mock: {e}");
            return 2;
        }
    };
    match serve::run(config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("faultd mock: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(protocol: &str, routes: &[(&str, &str)]) -> MockConfig {
        MockConfig {
            protocol: protocol.into(),
            listen: String::new(),
            routes: routes
                .iter()
                .map(|(p, b)| MockRoute {
                    pattern: (*p).into(),
                    response: MockResponse {
                        body: (*b).into(),
                        ..MockResponse::default()
                    },
                })
                .collect(),
            default: None,
        }
    }

    #[test]
    fn http_routes_match_method_and_path_segments() {
        let c = config(
            "http",
            &[
                ("GET /users/*", "some"),
                ("GET /users/1", "one"),
                ("* /files/**", "file"),
            ],
        );
        let t = Table::new(&c).unwrap();
        let body = |m: &str, p: &str| t.answer(m, p).map(|r| r.body.clone());
        assert_eq!(body("GET", "/users/1").as_deref(), Some("one"));
        assert_eq!(body("get", "/users/2").as_deref(), Some("some"));
        assert_eq!(body("GET", "/users/2/x"), None);
        assert_eq!(body("POST", "/users/1"), None);
        assert_eq!(body("DELETE", "/files/a/b/c").as_deref(), Some("file"));
    }

    #[test]
    fn tcp_lines_match_globs_and_fall_back_to_the_default() {
        let mut c = config("tcp", &[("PING", "PONG"), ("GET *", "value")]);
        c.default = Some(MockResponse {
            body: "ERR unknown".into(),
            ..MockResponse::default()
        });
        let t = Table::new(&c).unwrap();
        assert_eq!(t.answer("", "PING").unwrap().body, "PONG");
        assert_eq!(t.answer("", "GET a/b").unwrap().body, "value");
        assert_eq!(t.answer("", "SET x").unwrap().body, "ERR unknown");
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let e = |c: MockConfig| c.validate().unwrap_err().to_string();
        assert!(e(config("udp", &[])).contains("http or tcp"));
        assert!(e(config("http", &[("/users", "x")])).contains("METHOD /path"));
        assert!(e(config("http", &[("GET users", "x")])).contains("does not start with '/'"));
        assert!(e(config("tcp", &[("PING", "a\nb")])).contains("one line"));
        let many: Vec<(String, String)> = (0..=MAX_ROUTES)
            .map(|i| (format!("GET /{i}"), String::new()))
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert!(e(config("http", &refs)).contains("route count is 257"));
        let mut c = config("http", &[("GET /", "x")]);
        c.routes[0].response.status = 42;
        assert!(e(c).contains("not an HTTP status"));
        let mut c = config("http", &[("GET /", "x")]);
        c.routes[0].response.delay_ms = MAX_DELAY_MS + 1;
        assert!(e(c).contains("delay"));
        assert!(MockConfig::parse("{\"protocol\":\"http\",\"bogus\":1}").is_err());
        let ok = config("http", &[("GET /a", "x")]);
        assert_eq!(MockConfig::parse(&ok.to_json()).unwrap(), ok);
    }
}
