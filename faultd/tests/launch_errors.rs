//! A service that cannot be started is a clear error, and the daemon keeps starting others.

mod support;

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use support::{create, root_or_skip, service};

fn request(services: Vec<pb::ServiceSpec>) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        name: "launch-errors".into(),
        services,
        lease_ms: 0,
        trace: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_unexecutable_program_is_refused_and_the_launcher_survives() {
    if !root_or_skip("a_missing_or_unexecutable_program_is_refused_and_the_launcher_survives") {
        return;
    }
    let mut client = FaultdClient::new(faultd::embedded::channel().await.expect("engine"));

    let err = client
        .create_session(request(vec![service(
            "inventory",
            &["/nonexistent/inventory-svc"],
            &["write"],
        )]))
        .await
        .expect_err("a missing program");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert_eq!(
        err.message(),
        "service inventory: program /nonexistent/inventory-svc does not exist on faultd's host: \
         build or install it, or fix the path"
    );
    let err = client
        .create_session(request(vec![service("a", &["target/release/a"], &[])]))
        .await
        .expect_err("a relative path");
    assert!(err.message().contains("is a relative path"), "{err}");

    // A program still open for writing: exec itself fails (ETXTBSY), with and without a seccomp
    // filter, after every check passed. The reaper must leave the failed child to the spawn that waits
    // for it (std's Command panicked when the reaper took it first, and the launcher thread died).
    let busy = std::env::temp_dir().join(format!("faultd-busy-{}", std::process::id()));
    let writer = std::fs::File::create(&busy).unwrap();
    std::fs::write(&busy, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&busy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for round in 0..20 {
        let intercept: &[&str] = if round % 2 == 0 { &[] } else { &["write"] };
        let err = client
            .create_session(request(vec![service(
                "busy",
                &[busy.to_str().unwrap()],
                intercept,
            )]))
            .await
            .expect_err("exec fails");
        assert!(
            err.message().contains("Text file busy"),
            "round {round}: {err}"
        );
    }
    drop(writer);
    std::fs::remove_file(&busy).unwrap();

    let session = create(
        &mut client,
        vec![service("ok", &["sleep", "30"], &["write"])],
    )
    .await;
    assert_eq!(session.services.len(), 1);
    assert!(session.services[0].pid > 0);
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session.session_id,
        })
        .await
        .expect("delete");
}
