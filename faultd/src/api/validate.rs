//! Request validation at the API boundary: names that become cgroup directories, state files or
//! keys (`faultd_model::names`), refused with `INVALID_ARGUMENT` and the sentence that says why.

use faultd_model::names;
use faultd_proto::v1 as pb;
use tonic::Status;

/// Checks the names of a `CreateSession` request: the session's (empty means unnamed), and each
/// service's, with its interfaces, ops and `depends_on` entries.
pub(super) fn create_session(req: &pb::CreateSessionRequest) -> Result<(), Status> {
    let invalid = |e: names::NameError| Status::invalid_argument(e.to_string());
    if !req.name.is_empty() {
        names::check("session", &req.name).map_err(invalid)?;
    }
    for service in &req.services {
        names::check("service", &service.name).map_err(invalid)?;
        for interface in &service.interfaces {
            names::check("interface", &interface.name).map_err(|e| {
                Status::invalid_argument(format!("service {:?}: {e}", service.name))
            })?;
        }
        for op in &service.ops {
            names::check("op", &op.name).map_err(|e| {
                Status::invalid_argument(format!("service {:?}: {e}", service.name))
            })?;
        }
        for dependency in &service.depends_on {
            names::check("service", dependency).map_err(|e| {
                Status::invalid_argument(format!("service {:?}: depends_on: {e}", service.name))
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(service: pb::ServiceSpec) -> pb::CreateSessionRequest {
        pb::CreateSessionRequest {
            name: "t".into(),
            services: vec![service],
            ..Default::default()
        }
    }

    fn named(name: &str) -> pb::ServiceSpec {
        pb::ServiceSpec {
            name: name.into(),
            argv: vec!["true".into()],
            ..Default::default()
        }
    }

    #[test]
    fn path_like_names_are_invalid_arguments() {
        create_session(&request(named("db"))).unwrap();
        let s = create_session(&request(named("../../x"))).unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message()
                .starts_with("service name \"../../x\" is not allowed")
        );
        let mut svc = named("db");
        svc.ops.push(pb::Op {
            name: "a/b".into(),
            ..Default::default()
        });
        let s = create_session(&request(svc)).unwrap_err();
        assert!(
            s.message().starts_with("service \"db\": op name \"a/b\""),
            "{}",
            s.message()
        );
        let mut svc = named("db");
        svc.interfaces.push(pb::Interface {
            name: "..".into(),
            ..Default::default()
        });
        assert!(create_session(&request(svc)).is_err());
        let mut svc = named("web");
        svc.depends_on.push("../other/db".into());
        assert!(create_session(&request(svc)).is_err());
        let mut req = request(named("db"));
        req.name = "a/../b".into();
        let s = create_session(&req).unwrap_err();
        assert!(s.message().starts_with("session name"), "{}", s.message());
        req.name = String::new();
        create_session(&req).unwrap();
    }
}
