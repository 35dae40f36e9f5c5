//! `faultd --config /etc/faultd/faultd.toml`: the daemon's settings in a file. Every key is optional;
//! a command-line flag overrides the file's value. Unknown keys are refused, so typos do not pass
//! silently.
//!
//! ```toml
//! socket = "/run/faultd/faultd.sock"
//!
//! [tcp]                       # remote clients; TLS always, client authentication always
//! listen = "0.0.0.0:7070"
//! tls_cert = "/etc/faultd/server.pem"
//! tls_key = "/etc/faultd/server.key"
//! # insecure_loopback_no_auth = true   # only for a 127.0.0.1/::1 address
//!
//! [auth]
//! group = "faultd"                      # admitted on the Unix socket besides root
//! token_file = "/etc/faultd/tokens"     # NAME:TOKEN per line; NAME:TOKEN:root grants root
//! tls_client_ca = "/etc/faultd/clients-ca.pem"
//! run_as_user = "nobody"                # remote callers' services run as this user
//!
//! [limits]                            # each shown with its default
//! handshake_timeout_ms = 10000
//! max_pending_handshakes = 256
//! max_sessions = 64
//! max_sessions_per_owner = 32
//! max_services_per_session = 64
//! max_rules_per_session = 10000
//! max_lease_ms = 3600000
//! max_events_per_second = 1000000     # per event stream; 0 is unlimited
//!
//! [log]
//! format = "text"                       # or "json"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file's contents.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Unix socket.
    pub socket: Option<PathBuf>,
    /// The TCP listener.
    #[serde(default)]
    pub tcp: TcpConfig,
    /// Who may call.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Bounds.
    #[serde(default)]
    pub limits: Limits,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[tcp]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Serve a loopback address without client authentication.
    pub insecure_loopback_no_auth: Option<bool>,
}

/// `[auth]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Group admitted on the Unix socket besides root.
    pub group: Option<String>,
    /// Bearer tokens for the TCP listener.
    pub token_file: Option<PathBuf>,
    /// CA whose client certificates the TCP listener accepts.
    pub tls_client_ca: Option<PathBuf>,
    /// The user remote callers' services run as (default `nobody`).
    pub run_as_user: Option<String>,
}

/// `[limits]`; unset values keep faultd's defaults.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// A TLS handshake not finished after this long closes the connection (default 10 000).
    pub handshake_timeout_ms: Option<u64>,
    /// TLS handshakes in progress at once; more connections are closed (default 256).
    pub max_pending_handshakes: Option<usize>,
    /// Sessions running at once (default 64).
    pub max_sessions: Option<usize>,
    /// Sessions one client may run at once (default 32).
    pub max_sessions_per_owner: Option<usize>,
    /// Services in one session (default 64).
    pub max_services_per_session: Option<usize>,
    /// Rules active in one session (default 10 000).
    pub max_rules_per_session: Option<usize>,
    /// Longest lease a client may ask for (default 3 600 000).
    pub max_lease_ms: Option<u64>,
    /// Events a second one event stream receives; `0` is unlimited (default 1 000 000).
    pub max_events_per_second: Option<u32>,
}

impl Limits {
    /// The engine's limits: these values where set, faultd's defaults elsewhere.
    pub fn engine(&self) -> crate::Limits {
        let d = crate::Limits::default();
        crate::Limits {
            max_sessions: self.max_sessions.unwrap_or(d.max_sessions),
            max_sessions_per_owner: self
                .max_sessions_per_owner
                .unwrap_or(d.max_sessions_per_owner),
            max_lease: self
                .max_lease_ms
                .map_or(d.max_lease, std::time::Duration::from_millis),
            max_services: self.max_services_per_session.unwrap_or(d.max_services),
            max_rules: self.max_rules_per_session.unwrap_or(d.max_rules),
            max_events_per_second: self
                .max_events_per_second
                .unwrap_or(d.max_events_per_second),
        }
    }
}

/// `[log]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: Option<LogFormat>,
}

/// How log lines are written to stderr (the journal, under systemd).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML or not faultd's keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What toml says, with the line.
        message: String,
    },
}

impl Config {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! "))
            .skip_while(|l| !l.starts_with("```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("```"))
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse(&doc).unwrap();
        assert_eq!(c.auth.group.as_deref(), Some("faultd"));
        assert_eq!(c.tcp.listen.unwrap().port(), 7070);
        assert_eq!(c.limits.handshake_timeout_ms, Some(10_000));
        assert_eq!(c.log.format, Some(LogFormat::Text));
    }

    #[test]
    fn the_installed_file_shows_the_defaults() {
        let c = Config::parse(include_str!("../dist/faultd.toml")).unwrap();
        let shown = c.limits.engine();
        let d = crate::Limits::default();
        assert_eq!(
            (
                shown.max_sessions,
                shown.max_sessions_per_owner,
                shown.max_services
            ),
            (d.max_sessions, d.max_sessions_per_owner, d.max_services)
        );
        assert_eq!(
            (
                shown.max_rules,
                shown.max_lease,
                shown.max_events_per_second
            ),
            (d.max_rules, d.max_lease, d.max_events_per_second)
        );
        // Not their defaults: the file must set each one for the comparison above to mean anything.
        let l = &c.limits;
        assert!(l.max_sessions.is_some() && l.max_rules_per_session.is_some());
        assert!(l.max_events_per_second.is_some() && l.max_lease_ms.is_some());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = Config::parse("[auth]\ntoken = \"x\"\n").unwrap_err();
        assert!(e.contains("token"), "{e}");
    }
}
