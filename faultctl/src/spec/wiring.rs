//! The peer's service wiring: every launched service gets, for every interface of the topology,
//! `FAULTBOX_<SVC>_<IFACE>_HOST`, `_PORT` and `_ADDR` (`localhost`, `5432`, `localhost:5432`), and
//! the same under `FAULTD_`. Names are upper-cased, other characters than letters and digits become
//! `_`. A variable the service's own `env=` sets wins. A proxied interface's variables name its
//! proxy, as `svc.iface.addr` does, so consumers reach the service through it.

use std::collections::BTreeMap;

use super::model::Service;

/// The prefixes the variables come under.
const PREFIXES: &[&str] = &["FAULTBOX", "FAULTD"];

/// Adds the wiring variables to every launched service's environment.
pub(crate) fn wire(services: &mut [Service]) {
    let vars = variables(services);
    for s in services.iter_mut().filter(|s| s.attach_cgroup.is_none()) {
        for (k, v) in &vars {
            s.env.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

fn variables(services: &[Service]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in services {
        for i in &s.interfaces {
            for prefix in PREFIXES {
                let base = format!("{prefix}_{}_{}", env_part(&s.name), env_part(&i.name));
                out.insert(format!("{base}_HOST"), "localhost".to_owned());
                let port = i.proxy_port.unwrap_or(i.port);
                out.insert(format!("{base}_PORT"), port.to_string());
                out.insert(format!("{base}_ADDR"), format!("localhost:{port}"));
            }
        }
    }
    out
}

fn env_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::{Interface, Protocol};

    fn service(name: &str, iface: &str, port: u16) -> Service {
        Service {
            name: name.into(),
            argv: vec!["/bin/true".into()],
            mock: None,
            attach_cgroup: None,
            env: BTreeMap::new(),
            interfaces: vec![Interface {
                name: iface.into(),
                protocol: Protocol::Tcp,
                port,
                proxy_port: None,
            }],
            healthcheck: None,
            depends_on: Vec::new(),
            ops: Vec::new(),
            intercept: Default::default(),
            resolve_paths: false,
            host_network: false,
            user: None,
            cwd: None,
        }
    }

    #[test]
    fn every_service_sees_every_interface_and_its_own_env_wins() {
        let mut services = vec![
            service("inventory", "main", 5432),
            service("order-svc", "public", 8080),
        ];
        services[1]
            .env
            .insert("FAULTBOX_INVENTORY_MAIN_PORT".into(), "1".into());
        wire(&mut services);
        let inv = &services[0].env;
        assert_eq!(inv["FAULTBOX_INVENTORY_MAIN_HOST"], "localhost");
        assert_eq!(inv["FAULTBOX_ORDER_SVC_PUBLIC_ADDR"], "localhost:8080");
        assert_eq!(inv["FAULTD_INVENTORY_MAIN_ADDR"], "localhost:5432");
        assert_eq!(services[1].env["FAULTBOX_INVENTORY_MAIN_PORT"], "1");
        assert_eq!(services[1].env["FAULTD_INVENTORY_MAIN_PORT"], "5432");
        assert_eq!(inv.len(), 12);
    }
}
