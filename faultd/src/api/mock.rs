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
