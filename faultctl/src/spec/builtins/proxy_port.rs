//! The port a proxy of a spec's interface listens on: free on 127.0.0.1 when first asked, then the
//! same for that interface for the life of the process, so that every evaluation of one spec (one
//! per `--jobs` evaluator) gives the same spec.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::spec::model::Interface;

/// Gives `service`'s `iface` its proxy port when it wants a proxy (`proxy=True`) or a protocol fault
/// of the spec names it (`proxied`, from the source); the error is the spec error's sentence.
pub(super) fn assign(
    service: &str,
    iface: &mut Interface,
    proxied: &[(String, String)],
) -> Result<(), String> {
    let wanted = iface.proxy_port.is_some()
        || proxied
            .iter()
            .any(|(s, i)| s == service && *i == iface.name);
    if wanted {
        let port = proxy_port(service, &iface.name).map_err(|e| {
            format!(
                "cannot find a free port for the proxy of {service}.{}: {e}",
                iface.name
            )
        })?;
        iface.proxy_port = Some(port);
    }
    Ok(())
}

/// The proxy port of `service`.`iface`.
fn proxy_port(service: &str, iface: &str) -> std::io::Result<u16> {
    static PORTS: OnceLock<Mutex<HashMap<(String, String), u16>>> = OnceLock::new();
    let mut ports = PORTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let key = (service.to_owned(), iface.to_owned());
    if let Some(port) = ports.get(&key) {
        return Ok(*port);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    ports.insert(key, port);
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_interface_keeps_its_port_and_another_gets_its_own() {
        let first = proxy_port("proxy-port-test", "main").unwrap();
        assert_ne!(first, 0);
        assert_eq!(proxy_port("proxy-port-test", "main").unwrap(), first);
        assert_ne!(proxy_port("proxy-port-test", "admin").unwrap(), first);
    }
}
