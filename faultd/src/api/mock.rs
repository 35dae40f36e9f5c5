//! A service's mock configuration to the argv that serves it: faultd's own binary, re-executed.

use faultd_proto::v1 as pb;
use tonic::Status;

use crate::mock::{MOCK_COMMAND, MockConfig};

/// `[this binary, __faultd-mock, config]` for the mock `service` with `json` on its one interface.
pub(super) fn argv(
    service: &str,
    json: &str,
    argv: &[String],
    interfaces: &[pb::Interface],
    attached: bool,
) -> Result<Vec<String>, Status> {
    let bad = |m: String| Status::invalid_argument(format!("service {service}: {m}"));
    if !argv.is_empty() || attached {
        return Err(bad(
            "a mock is served by faultd: leave argv and attach_cgroup empty".into(),
        ));
    }
    let mut config = MockConfig::parse(json).map_err(|e| bad(e.to_string()))?;
    let [iface] = interfaces else {
        return Err(bad(format!(
            "a mock serves exactly one interface, this one has {}",
            interfaces.len()
        )));
    };
    let protocol = match pb::Protocol::try_from(iface.protocol) {
        Ok(pb::Protocol::Http) => "http",
        Ok(pb::Protocol::Tcp) => "tcp",
        _ => return Err(bad("a mock's interface speaks http or tcp".into())),
    };
    if protocol != config.protocol {
        return Err(bad(format!(
            "the mock's routes are {} but its interface speaks {protocol}",
            config.protocol
        )));
    }
    let port = u16::try_from(iface.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad(format!("port {} is out of range", iface.port)))?;
    let host = if iface.host.is_empty() {
        "127.0.0.1"
    } else {
        &iface.host
    };
    config.listen = format!("{host}:{port}");
    let exe = std::env::current_exe()
        .map_err(|e| Status::internal(format!("cannot find faultd's own binary: {e}")))?;
    Ok(vec![
        exe.to_string_lossy().into_owned(),
        MOCK_COMMAND.to_owned(),
        config.to_json(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(protocol: pb::Protocol, port: u32) -> pb::Interface {
        pb::Interface {
            name: "main".into(),
            protocol: protocol as i32,
            port,
            ..Default::default()
        }
    }

    const HTTP: &str =
        r#"{"protocol":"http","routes":[{"pattern":"GET /","response":{"status":204}}]}"#;

    #[test]
    fn a_mock_runs_this_binary_on_its_interface() {
        let argv = argv("m", HTTP, &[], &[iface(pb::Protocol::Http, 8090)], false).unwrap();
        assert_eq!(argv[0], std::env::current_exe().unwrap().to_string_lossy());
        assert_eq!(argv[1], MOCK_COMMAND);
        let config = MockConfig::parse(&argv[2]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8090");
        assert_eq!(config.routes[0].response.status, 204);
    }

    #[test]
    fn mocks_that_cannot_be_served_are_refused() {
        let e = |r: Result<Vec<String>, Status>| r.unwrap_err().message().to_owned();
        let http = [iface(pb::Protocol::Http, 8090)];
        assert!(e(argv("m", HTTP, &["/bin/true".into()], &http, false)).contains("leave argv"));
        assert!(e(argv("m", HTTP, &[], &http, true)).contains("attach_cgroup"));
        assert!(e(argv("m", HTTP, &[], &[], false)).contains("exactly one interface"));
        let tcp = [iface(pb::Protocol::Tcp, 5433)];
        assert!(e(argv("m", HTTP, &[], &tcp, false)).contains("interface speaks tcp"));
        let redis = [iface(pb::Protocol::Redis, 6390)];
        assert!(e(argv("m", HTTP, &[], &redis, false)).contains("http or tcp"));
        assert!(e(argv("m", "{", &[], &http, false)).contains("not valid"));
        let port = [iface(pb::Protocol::Http, 70000)];
        assert!(e(argv("m", HTTP, &[], &port, false)).contains("out of range"));
    }
}
