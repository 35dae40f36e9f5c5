//! Local callers on the Unix socket: admitted by their peer credentials (root, or members of
//! `--group`); a member's services run as that member; a caller sees only its own sessions.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use hyper_util::rt::TokioIo;
use support::{assert_status, follow_all, root_or_skip, unique, wait_for_output};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

const GROUP: &str = "faultd-t-grp";
const MEMBER: &str = "faultd-t-user";

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

/// The test group and a system user in it (created once per machine), as (uid, gid of the group).
fn member() -> (u32, u32) {
    assert!(sh(&["groupadd", "-f", GROUP]).status.success());
    if !sh(&["id", "-u", MEMBER]).status.success() {
        let out = sh(&[
            "useradd",
            "--system",
            "--no-create-home",
            "-s",
            "/usr/sbin/nologin",
            "-G",
            GROUP,
            MEMBER,
        ]);
        assert!(out.status.success(), "useradd: {out:?}");
    }
    assert!(sh(&["usermod", "-aG", GROUP, MEMBER]).status.success());
    let num = |args: &[&str]| -> u32 {
        let out = sh(args);
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stdout).into_owned())
            .trim()
            .parse()
            .unwrap()
    };
    (num(&["id", "-u", MEMBER]), num(&["getent", "group", GROUP]))
}

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn start(args: &[&str]) -> Daemon {
    let socket = PathBuf::from(format!("/tmp/{}.sock", unique("faultd-local")));
    let child = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("--socket")
        .arg(&socket)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("start faultd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "faultd did not create its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon { child, socket }
}

/// Connects to `socket` from a thread whose effective uid/gid are `uid`/`gid` (supplementary groups:
/// `gid` and, for the member, the test group): the kernel records the connecting thread's
/// credentials (SO_PEERCRED). The raw syscalls change only that thread.
fn connect_as(
    socket: &Path,
    uid: u32,
    gid: u32,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    let socket = socket.to_owned();
    let mut groups = vec![gid];
    if let Ok(group) = std::fs::metadata(&socket).map(|m| m.gid())
        && uid != 65534
    {
        groups.push(group);
    }
    std::thread::spawn(move || {
        // SAFETY: raw setgroups/setresgid/setresuid change this thread's credentials only; -1 keeps
        // a value; groups outlives the call.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setresgid, -1, gid, -1) != 0
                || libc::syscall(libc::SYS_setresuid, -1, uid, -1) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        std::os::unix::net::UnixStream::connect(&socket)
    })
    .join()
    .unwrap()
}

async fn client_as(socket: &Path, uid: u32, gid: u32) -> FaultdClient<Channel> {
    FaultdClient::new(channel_as(socket, uid, gid).await)
}

async fn channel_as(socket: &Path, uid: u32, gid: u32) -> Channel {
    let socket = socket.to_owned();
    Endpoint::from_static("http://faultd")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = connect_as(&socket, uid, gid)?;
                stream.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::from_std(stream)?))
            }
        }))
        .await
        .expect("connect")
}

/// Opens the socket file to everyone, as a careless socket unit would: faultd must still refuse.
fn chmod_666(socket: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).unwrap();
}

fn shell(name: &str, script: &str, intercept: &[&str]) -> pb::ServiceSpec {
    pb::ServiceSpec {
        name: name.into(),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        intercept_syscalls: intercept.iter().map(|s| s.to_string()).collect(),
        stop_grace_ms: 500,
        ..Default::default()
    }
}

async fn create(client: &mut FaultdClient<Channel>, service: pb::ServiceSpec) -> String {
    client
        .create_session(pb::CreateSessionRequest {
            name: "local".into(),
            services: vec![service],
            ..Default::default()
        })
        .await
        .expect("CreateSession")
        .into_inner()
        .session_id
}

#[tokio::test(flavor = "multi_thread")]
async fn group_members_are_admitted_run_as_themselves_and_see_only_their_sessions() {
    if !root_or_skip("group_members_are_admitted_run_as_themselves_and_see_only_their_sessions") {
        return;
    }
    let (uid, gid) = member();
    let daemon = start(&["--group", GROUP]);
    assert_eq!(std::fs::metadata(&daemon.socket).unwrap().gid(), gid);

    // Not in the group: refused, whatever the call, even when the socket's mode lets it connect.
    chmod_666(&daemon.socket);
    let mut nobody = client_as(&daemon.socket, 65534, 65534).await;
    assert_status(
        nobody.probe(pb::ProbeRequest {}).await,
        Code::PermissionDenied,
        &format!("not in the group {GROUP}"),
    );
    let health = tonic_health::pb::health_client::HealthClient::new(
        channel_as(&daemon.socket, 65534, 65534).await,
    )
    .check(tonic_health::pb::HealthCheckRequest::default())
    .await;
    assert_status(health, Code::PermissionDenied, "not in the group");

    // A member (its process's primary group is its own, not GROUP): admitted; its service runs as
    // itself, under a seccomp filter.
    let mut alice = client_as(&daemon.socket, uid, 65534).await;
    alice
        .probe(pb::ProbeRequest {})
        .await
        .expect("a member's Probe");
    let mine = create(
        &mut alice,
        shell("who", "id -u; exec sleep 30", &["openat"]),
    )
    .await;
    wait_for_output(alice.watch_events(follow_all(&mine)), &uid.to_string()).await;

    // Root's session is not there for the member; the member's is for root.
    let mut root = client_as(&daemon.socket, 0, 0).await;
    let roots = create(&mut root, shell("who", "exec sleep 30", &[])).await;
    for result in [
        alice
            .keep_alive(pb::KeepAliveRequest {
                session_id: roots.clone(),
            })
            .await
            .map(|_| ()),
        alice
            .delete_session(pb::DeleteSessionRequest {
                session_id: roots.clone(),
            })
            .await
            .map(|_| ()),
    ] {
        assert_status(result, Code::NotFound, "not found");
    }
    root.keep_alive(pb::KeepAliveRequest {
        session_id: mine.clone(),
    })
    .await
    .expect("root sees every session");

    // A member may not point faultd at a cgroup it does not own.
    let attach = alice
        .create_session(pb::CreateSessionRequest {
            name: "attach".into(),
            services: vec![pb::ServiceSpec {
                name: "db".into(),
                attach_cgroup: "/sys/fs/cgroup".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await;
    assert_status(attach, Code::PermissionDenied, "only root");

    alice
        .delete_session(pb::DeleteSessionRequest { session_id: mine })
        .await
        .expect("the owner deletes its session");
    root.delete_session(pb::DeleteSessionRequest { session_id: roots })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_group_only_root_is_admitted() {
    if !root_or_skip("without_a_group_only_root_is_admitted") {
        return;
    }
    let daemon = start(&[]);
    chmod_666(&daemon.socket);
    let mut nobody = client_as(&daemon.socket, 65534, 65534).await;
    assert_status(
        nobody.probe(pb::ProbeRequest {}).await,
        Code::PermissionDenied,
        "only root is admitted",
    );
    client_as(&daemon.socket, 0, 0)
        .await
        .probe(pb::ProbeRequest {})
        .await
        .expect("root's Probe");
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() {
    let path = PathBuf::from(format!("/tmp/{}", unique("faultd-not-a-socket")));
    std::fs::write(&path, "precious").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("--socket")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn faultd_tells_systemd_when_it_is_ready() {
    let dir = PathBuf::from(format!("/tmp/{}", unique("faultd-notify")));
    std::fs::create_dir_all(&dir).unwrap();
    let notify = std::os::unix::net::UnixDatagram::bind(dir.join("notify")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultd"))
        .arg("--socket")
        .arg(dir.join("faultd.sock"))
        .env("NOTIFY_SOCKET", dir.join("notify"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(
        dir.join("faultd.sock").exists(),
        "ready before the socket exists"
    );
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let _ = std::fs::remove_dir_all(&dir);
}
