//! The session's network: its own namespace where the host allows it, else the host's, where faultd
//! refuses declared ports other processes hold and healthchecks answered by someone else's listener.

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::config::{ServiceConfig, SessionConfig};
use super::lifecycle::Service;
use crate::engine::EngineError;
use crate::health::{self, HealthCheck, HealthTimeout};
use crate::netns::{Net, NetNs, ports};

/// The network of a new session: the host's when a service asks for it (`network="host"`) or is
/// attached (its processes already run in the host's network); otherwise a namespace of its own,
/// when faultd can create one.
pub(super) async fn for_session(config: &SessionConfig) -> Net {
    if let Some(svc) = config
        .services
        .iter()
        .find(|s| s.host_network || s.attach_cgroup.is_some())
    {
        tracing::debug!(service = %svc.name, "the session shares the host network");
        return Net::host();
    }
    let created = crate::engine::blocking(NetNs::create)
        .await
        .and_then(|r| r.map_err(EngineError::Io));
    match created {
        Ok(ns) => {
            tracing::debug!(netns = ns.inode(), "the session has a network namespace");
            Net::isolated(ns)
        }
        Err(e) => {
            tracing::debug!("no network namespace ({e}); the session shares the host network");
            Net::host()
        }
    }
}

/// On the host network: fails when another process holds one of the service's declared ports.
/// Reads `/proc`: call on a blocking thread.
pub(super) fn check_ports(svc: &ServiceConfig) -> Result<(), EngineError> {
    for iface in &svc.interfaces {
        let host = if iface.host.is_empty() {
            "127.0.0.1"
        } else {
            &iface.host
        };
        let port = iface.port;
        let Ok(ip) = host.parse::<IpAddr>() else {
            continue;
        };
        if port == 0 {
            continue;
        }
        if let Some(taken) = ports::in_use(ip, port) {
            return Err(EngineError::Start(format!(
                "cannot start {}: {taken} (interface {}); stop it, or let the session have a \
                 network namespace of its own (faultd probe says whether it can)",
                svc.name, iface.name
            )));
        }
    }
    Ok(())
}

/// Waits until `check` passes, like [`health::wait_ready`], from the service's network. On the host
/// network an answer counts only when the listener answering it belongs to one of the service's
/// processes.
pub(super) async fn wait_ready(
    service: &Service,
    check: &HealthCheck,
    timeout: Duration,
    interval: Duration,
) -> Result<(), HealthTimeout> {
    let net = service.net.clone();
    if net.namespace().is_some() {
        return net
            .scope(health::wait_ready(check, timeout, interval))
            .await
            .map(drop);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        health::wait_ready(check, remaining, interval).await?;
        let foreign = match listener_of(check) {
            Some((ip, port)) => {
                let members = service.members();
                crate::engine::blocking(move || foreign_listener(ip, port, &members.pids()))
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        let Some(foreign) = foreign else {
            return Ok(());
        };
        if Instant::now() + interval >= deadline {
            return Err(HealthTimeout {
                check: check.clone(),
                timeout,
                last_error: format!(
                    "it was answered by {foreign}, which is not a process of {}",
                    service.name
                ),
            });
        }
        tracing::debug!(service = %service.name, %foreign, "healthcheck answered by another process");
        tokio::time::sleep(interval).await;
    }
}

/// The address and port a check connects to, when it is an IP address or `localhost`.
fn listener_of(check: &HealthCheck) -> Option<(IpAddr, u16)> {
    let addr = match check {
        HealthCheck::Tcp { address }
        | HealthCheck::Redis { address }
        | HealthCheck::Postgres { address, .. } => address.clone(),
        HealthCheck::Http { url } => crate::http::parse_url(url).ok()?.0,
    };
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if host == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse().ok()?
    };
    Some((ip, port.parse().ok()?))
}

/// Who holds the listener answering `ip:port`, when it is none of `pids` and not faultd itself (a
/// check aimed at the service's proxy is answered by faultd).
fn foreign_listener(ip: IpAddr, port: u16, pids: &[i32]) -> Option<String> {
    let listener = ports::answering(ip, port)?;
    let faultd = std::process::id() as i32;
    if pids
        .iter()
        .chain([&faultd])
        .any(|pid| ports::holds(*pid, listener.inode))
    {
        return None;
    }
    Some(match ports::holder(listener.inode) {
        Some(h) => format!("the listener of {h}"),
        None => "a listener faultd cannot see".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_names_its_listener() {
        let tcp = |a: &str| HealthCheck::Tcp { address: a.into() };
        assert_eq!(
            listener_of(&tcp("localhost:5432")),
            Some((IpAddr::from([127, 0, 0, 1]), 5432))
        );
        assert_eq!(
            listener_of(&tcp("[::1]:80")),
            Some(("::1".parse().unwrap(), 80))
        );
        assert_eq!(listener_of(&tcp("db.example:80")), None);
        let http = HealthCheck::Http {
            url: "http://127.0.0.1:8080/health".into(),
        };
        assert_eq!(
            listener_of(&http),
            Some((IpAddr::from([127, 0, 0, 1]), 8080))
        );
    }

    /// Listens on a loopback port, prints it, and holds it until stdin closes.
    const LISTEN_UNTIL_EOF: &str = "import socket, sys
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
";

    #[test]
    fn a_listener_of_someone_else_is_foreign() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lo = IpAddr::from([127, 0, 0, 1]);
        // This process stands for faultd: its own listeners (proxies) count as the service's.
        assert_eq!(foreign_listener(lo, port, &[]), None);
        // Another process's listener does not.
        let mut other = std::process::Command::new("python3")
            .args(["-c", LISTEN_UNTIL_EOF])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (cargo xtask deps installs it)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(other.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let their_port: u16 = line.trim().parse().unwrap();
        let foreign = foreign_listener(lo, their_port, &[]).unwrap();
        assert!(
            foreign.starts_with(&format!("the listener of pid {} (", other.id())),
            "{foreign}"
        );
        assert_eq!(foreign_listener(lo, their_port, &[other.id() as i32]), None);
        let _ = other.kill();
        let _ = other.wait();
    }
}
