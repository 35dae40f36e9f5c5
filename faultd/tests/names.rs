//! Names that would become paths are refused at the API boundary with INVALID_ARGUMENT, before any
//! service starts: service names (cgroup directories), interface and op names, depends_on entries
//! and the session name. Needs no root: the request is refused before anything is launched.

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use tonic::Code;

fn service(name: &str) -> pb::ServiceSpec {
    pb::ServiceSpec {
        name: name.into(),
        argv: vec!["/bin/sleep".into(), "30".into()],
        ..Default::default()
    }
}

async fn refused(
    client: &mut FaultdClient<tonic::transport::Channel>,
    req: pb::CreateSessionRequest,
) -> String {
    let status = client
        .create_session(req)
        .await
        .expect_err("the request should be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status.message().to_owned()
}

#[tokio::test]
async fn path_like_names_are_invalid_arguments() {
    let channel = faultd::embedded::channel().await.expect("embedded engine");
    let mut client = FaultdClient::new(channel);
    let request = |services: Vec<pb::ServiceSpec>| pb::CreateSessionRequest {
        name: "names".into(),
        services,
        ..Default::default()
    };

    let m = refused(&mut client, request(vec![service("../../../x")])).await;
    assert!(
        m.starts_with("service name \"../../../x\" is not allowed: use 1 to 64 letters"),
        "{m}"
    );
    let m = refused(&mut client, request(vec![service("a/b")])).await;
    assert!(m.starts_with("service name \"a/b\""), "{m}");
    let m = refused(&mut client, request(vec![service("..")])).await;
    assert!(m.starts_with("service name \"..\""), "{m}");

    let mut db = service("db");
    db.ops.push(pb::Op {
        name: "../wal".into(),
        syscalls: vec!["write".into()],
        ..Default::default()
    });
    let m = refused(&mut client, request(vec![db])).await;
    assert!(m.starts_with("service \"db\": op name \"../wal\""), "{m}");

    let mut db = service("db");
    db.interfaces.push(pb::Interface {
        name: "main/..".into(),
        protocol: pb::Protocol::Tcp as i32,
        port: 5432,
        ..Default::default()
    });
    let m = refused(&mut client, request(vec![db])).await;
    assert!(
        m.starts_with("service \"db\": interface name \"main/..\""),
        "{m}"
    );

    let mut web = service("web");
    web.depends_on.push("../other-session/db".into());
    let m = refused(&mut client, request(vec![web])).await;
    assert!(
        m.starts_with("service \"web\": depends_on: service name"),
        "{m}"
    );

    let mut req = request(vec![service("db")]);
    req.name = "../session".into();
    let m = refused(&mut client, req).await;
    assert!(m.starts_with("session name \"../session\""), "{m}");
}
