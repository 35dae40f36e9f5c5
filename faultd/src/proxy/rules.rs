//! Protocol fault rules: which requests a rule concerns ([`ProxyMatch`]), what the proxy does instead
//! of forwarding ([`ProxyAction`]), and the first-firing-rule decision over a proxy's active rules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use globset::{GlobBuilder, GlobMatcher};

use crate::rules::SeededRng;

/// Longest body or message a rule may fabricate.
pub const MAX_FABRICATED: usize = 1 << 20;

/// Why a proxy rule cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum ProxyRuleError {
    /// A matcher glob does not parse.
    #[error("{field} pattern {glob:?} is not a valid glob: {reason}")]
    Glob {
        /// `path`, `key` or `query`.
        field: &'static str,
        /// The pattern.
        glob: String,
        /// Why.
        reason: String,
    },
    /// Probability outside [0, 1].
    #[error("probability {0} is not in [0, 1]")]
    Probability(f64),
    /// A fabricated body or message is too long.
    #[error("a fabricated reply is limited to {MAX_FABRICATED} bytes, this one has {0}")]
    TooLong(usize),
    /// A SQLSTATE that is not five characters of [0-9A-Z].
    #[error("sqlstate {0:?} is not five characters of 0-9 and A-Z (e.g. 23505)")]
    SqlState(String),
    /// An HTTP status outside 100..=599.
    #[error("HTTP status {0} is not in 100..599")]
    Status(u32),
}

/// A rule as a client sends it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProxyRuleSpec {
    /// Target service.
    pub service: String,
    /// Its proxied interface.
    pub interface: String,
    /// Which requests.
    pub matcher: MatchSpec,
    /// What happens.
    pub action: ProxyAction,
    /// Chance of firing in [0, 1].
    pub probability: f64,
    /// Label shown in the trace.
    pub label: Option<String>,
}

/// Matchers as given; empty means any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MatchSpec {
    /// HTTP method.
    pub method: String,
    /// HTTP path glob.
    pub path: String,
    /// Redis command.
    pub command: String,
    /// Redis key glob.
    pub key: String,
    /// Postgres SQL glob.
    pub query: String,
}

/// What a firing rule does.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ProxyAction {
    /// Answer with an error: HTTP status and body, a redis error reply, a postgres ErrorResponse.
    Error {
        /// HTTP status (0: 500).
        status: u16,
        /// Message.
        message: String,
        /// Postgres SQLSTATE.
        sqlstate: String,
    },
    /// Answer with a fabricated reply.
    Response {
        /// HTTP status (0: 200).
        status: u16,
        /// Body (redis: the bulk string value).
        body: Vec<u8>,
        /// HTTP headers.
        headers: BTreeMap<String, String>,
    },
    /// Forward after a delay.
    Delay(Duration),
    /// Close the client's connection.
    #[default]
    Drop,
}

impl ProxyAction {
    /// `error`, `response`, `delay` or `drop`.
    pub fn name(&self) -> &'static str {
        match self {
            ProxyAction::Error { .. } => "error",
            ProxyAction::Response { .. } => "response",
            ProxyAction::Delay(_) => "delay",
            ProxyAction::Drop => "drop",
        }
    }
}

/// What a proxy knows about one request, for matching and the trace.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// HTTP method, or redis command (upper case).
    pub verb: String,
    /// HTTP path, redis first key, or postgres SQL text.
    pub target: String,
}

/// A compiled rule of a fault set, with its counters.
#[derive(Debug)]
pub struct ProxyRule {
    /// Rule id (shared numbering with syscall rules of the session).
    pub id: u32,
    /// Its fault set.
    pub fault_set: Arc<str>,
    /// The rule as given.
    pub spec: ProxyRuleSpec,
    path: Option<GlobMatcher>,
    key: Option<GlobMatcher>,
    query: Option<GlobMatcher>,
    rng: Arc<SeededRng>,
    matches: AtomicU64,
    hits: AtomicU64,
}

impl ProxyRule {
    /// Compiles `spec` as rule `id`.
    pub fn compile(
        id: u32,
        fault_set: Arc<str>,
        spec: ProxyRuleSpec,
        rng: Arc<SeededRng>,
    ) -> Result<ProxyRule, ProxyRuleError> {
        if !(0.0..=1.0).contains(&spec.probability) {
            return Err(ProxyRuleError::Probability(spec.probability));
        }
        match &spec.action {
            ProxyAction::Error {
                status,
                message,
                sqlstate,
            } => {
                check_status(*status)?;
                check_len(message.len())?;
                if !sqlstate.is_empty()
                    && (sqlstate.len() != 5
                        || !sqlstate
                            .bytes()
                            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
                {
                    return Err(ProxyRuleError::SqlState(sqlstate.clone()));
                }
            }
            ProxyAction::Response {
                status,
                body,
                headers,
            } => {
                check_status(*status)?;
                check_len(
                    body.len()
                        + headers
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>(),
                )?;
            }
            ProxyAction::Delay(_) | ProxyAction::Drop => {}
        }
        let m = &spec.matcher;
        Ok(ProxyRule {
            id,
            fault_set,
            path: glob("path", &m.path, false)?,
            key: glob("key", &m.key, false)?,
            query: glob("query", &normalize_sql(&m.query), true)?,
            spec,
            rng,
            matches: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    /// Whether the rule concerns `req` (before the probability draw).
    pub fn matches(&self, req: &RequestInfo) -> bool {
        let m = &self.spec.matcher;
        let verb = if m.method.is_empty() {
            &m.command
        } else {
            &m.method
        };
        if !verb.is_empty() && !verb.eq_ignore_ascii_case(&req.verb) {
            return false;
        }
        let target_glob = self.path.as_ref().or(self.key.as_ref());
        if let Some(g) = target_glob
            && !g.is_match(&req.target)
        {
            return false;
        }
        if let Some(q) = &self.query
            && !q.is_match(normalize_sql(&req.target))
        {
            return false;
        }
        true
    }

    /// Times it matched a request, fired or not.
    pub fn matches_count(&self) -> u64 {
        self.matches.load(Ordering::Relaxed)
    }

    /// Times it decided a request.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn draw(&self) -> bool {
        self.matches.fetch_add(1, Ordering::Relaxed);
        let p = self.spec.probability;
        let fires = p >= 1.0 || self.rng.next_unit() < p;
        if fires {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        fires
    }
}

/// The first rule of `rules` (in precedence order) that matches `req` and fires.
pub fn decide<'a>(rules: &'a [Arc<ProxyRule>], req: &RequestInfo) -> Option<&'a Arc<ProxyRule>> {
    rules.iter().find(|r| r.matches(req) && r.draw())
}

/// SQL as matched: whitespace runs folded to one space, trimmed, upper case.
pub fn normalize_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for word in sql.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word.to_ascii_uppercase());
    }
    out
}

fn glob(
    field: &'static str,
    pattern: &str,
    case_insensitive: bool,
) -> Result<Option<GlobMatcher>, ProxyRuleError> {
    if pattern.is_empty() {
        return Ok(None);
    }
    GlobBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .backslash_escape(true)
        .build()
        .map(|g| Some(g.compile_matcher()))
        .map_err(|e| ProxyRuleError::Glob {
            field,
            glob: pattern.to_owned(),
            reason: e.kind().to_string(),
        })
}

fn check_status(status: u16) -> Result<(), ProxyRuleError> {
    if status == 0 || (100..=599).contains(&status) {
        Ok(())
    } else {
        Err(ProxyRuleError::Status(status.into()))
    }
}

fn check_len(len: usize) -> Result<(), ProxyRuleError> {
    if len > MAX_FABRICATED {
        Err(ProxyRuleError::TooLong(len))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(matcher: MatchSpec) -> ProxyRule {
        let spec = ProxyRuleSpec {
            matcher,
            probability: 1.0,
            ..Default::default()
        };
        ProxyRule::compile(1, "fs1".into(), spec, Arc::new(SeededRng::new(1))).unwrap()
    }

    fn req(verb: &str, target: &str) -> RequestInfo {
        RequestInfo {
            verb: verb.into(),
            target: target.into(),
        }
    }

    #[test]
    fn query_globs_ignore_case_and_whitespace() {
        let r = rule(MatchSpec {
            query: "insert   into orders*".into(),
            ..Default::default()
        });
        assert!(r.matches(&req("", "INSERT INTO\n  orders (id) VALUES (1)")));
        assert!(!r.matches(&req("", "SELECT * FROM orders")));
    }

    #[test]
    fn command_is_case_insensitive_and_key_is_a_glob() {
        let r = rule(MatchSpec {
            command: "get".into(),
            key: "order:*".into(),
            ..Default::default()
        });
        assert!(r.matches(&req("GET", "order:7")));
        assert!(!r.matches(&req("GET", "user:7")));
        assert!(!r.matches(&req("SET", "order:7")));
    }

    #[test]
    fn bad_sqlstate_and_status_are_refused() {
        let mut spec = ProxyRuleSpec {
            probability: 1.0,
            action: ProxyAction::Error {
                status: 0,
                message: String::new(),
                sqlstate: "2350".into(),
            },
            ..Default::default()
        };
        let rng = Arc::new(SeededRng::new(1));
        assert!(ProxyRule::compile(1, "f".into(), spec.clone(), rng.clone()).is_err());
        spec.action = ProxyAction::Error {
            status: 700,
            message: String::new(),
            sqlstate: String::new(),
        };
        assert!(ProxyRule::compile(1, "f".into(), spec, rng).is_err());
    }
}
