//! Test support: a real faultd daemon on a private socket, a gRPC client to it, and helpers to look at
//! the processes of the host.

#![allow(dead_code, missing_docs, unreachable_pub)]

pub mod ebpf_cgroup;
pub mod outside;
pub mod procs;
pub use procs::processes_with;
pub mod skip;

pub use skip::cannot_run;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Whether the tests that need root can run; otherwise skips `test` ([`cannot_run`]: fails under
/// `CI=true`, which runs the suite as root).
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    skip::runs_if(root, test, || {
        "needs root (seccomp listener handoff, cgroups)".into()
    })
}

/// The writable cgroup v2 mount the test's own cgroups go under; otherwise skips `test`
/// ([`cannot_run`]).
pub fn cgroup_v2_root_or_skip(test: &str) -> Option<PathBuf> {
    let root = faultd::cgroup::cgroup_v2_root();
    if root.is_none() {
        cannot_run(test, "no writable cgroup v2 mount here");
    }
    root
}

/// Whether `bpftool` runs here; otherwise skips `test` ([`cannot_run`]).
pub fn bpftool_or_skip(test: &str) -> bool {
    let installed = Command::new("bpftool").arg("version").output().is_ok();
    skip::runs_if(installed, test, || "bpftool is not installed".into())
}

/// A loopback TCP port connects to are refused: a socket bound to it that never listens, so no
/// other process can take the port while the test holds the socket (a dropped listener's port can
/// be). Keep the socket alive as long as the port must refuse.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind a loopback port");
    let port = socket.local_addr().expect("its address").port();
    (socket, port)
}

/// The daemon's probe row for `backend` when it is available; otherwise skips `test`
/// ([`cannot_run`]).
pub async fn available_backend(
    client: &mut FaultdClient<Channel>,
    backend: &str,
    test: &str,
) -> Option<pb::BackendCapability> {
    let probe = client
        .probe(pb::ProbeRequest {})
        .await
        .expect("probe")
        .into_inner();
    let row = probe
        .backends
        .into_iter()
        .find(|b| b.name == backend)
        .unwrap_or_else(|| panic!("the probe lists no {backend}"));
    if !row.available {
        cannot_run(
            test,
            &format!("{backend} is not available here: {}", row.reason),
        );
        return None;
    }
    Some(row)
}

/// A faultd daemon started from this workspace's binary.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A path unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Daemon {
    pub fn start() -> Daemon {
        let socket = PathBuf::from(format!("/tmp/{}.sock", unique("faultd-test")));
        let child = Command::new(env!("CARGO_BIN_EXE_faultd"))
            .arg("--socket")
            .arg(&socket)
            .env("RUST_LOG", "faultd=debug")
            .stdin(Stdio::null())
            .spawn()
            .expect("start faultd");
        // Generous: in the TCG guests of `cargo xtask vm-test`, the start-up probe (which loads and
        // attaches BPF LSM programs) can take many seconds.
        let deadline = Instant::now() + Duration::from_secs(90);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "faultd did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, socket }
    }

    pub async fn client(&self) -> FaultdClient<Channel> {
        FaultdClient::new(connect(&self.socket).await)
    }

    /// SIGTERM, then wait for the daemon to exit.
    pub fn terminate(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// SIGKILL, as if it crashed.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A channel to the daemon on `socket`, retrying briefly while it starts up on a busy machine.
pub async fn connect(socket: &Path) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let path = socket.to_path_buf();
        let attempt = Endpoint::from_static("http://faultd")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await;
        match attempt {
            Ok(channel) => return channel,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect to faultd: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect to faultd: {e}"),
        }
    }
}

pub fn victim() -> String {
    env!("CARGO_BIN_EXE_faultd-victim").to_string()
}

/// A service running `argv` that intercepts `intercept`.
pub fn service(name: &str, argv: &[&str], intercept: &[&str]) -> pb::ServiceSpec {
    pb::ServiceSpec {
        name: name.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        intercept_syscalls: intercept.iter().map(|s| s.to_string()).collect(),
        stop_grace_ms: 500,
        ..Default::default()
    }
}

pub fn deny(service: &str, syscalls: &[&str], glob: &str, errno: &str) -> pb::FaultRule {
    pb::FaultRule {
        service: service.into(),
        syscalls: syscalls.iter().map(|s| s.to_string()).collect(),
        path_glob: glob.into(),
        action: Some(pb::fault_rule::Action::Deny(pb::Deny {
            errno: errno.into(),
        })),
        ..Default::default()
    }
}

pub async fn create(
    client: &mut FaultdClient<Channel>,
    services: Vec<pb::ServiceSpec>,
) -> pb::CreateSessionResponse {
    client
        .create_session(pb::CreateSessionRequest {
            name: "test".into(),
            services,
            lease_ms: 0,
            trace: 0,
        })
        .await
        .expect("create session")
        .into_inner()
}

pub async fn apply(
    client: &mut FaultdClient<Channel>,
    session: &str,
    rules: Vec<pb::FaultRule>,
) -> pb::ApplyFaultsResponse {
    client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.into(),
            rules,
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .expect("apply faults")
        .into_inner()
}

/// Every event of the session until `service`'s main process exits (or `timeout`).
pub async fn events_until_exit(
    client: &mut FaultdClient<Channel>,
    session: &str,
    service: &str,
    timeout: Duration,
) -> Vec<pb::Event> {
    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            session_id: session.into(),
            from_seq: 1,
            follow: true,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while let Ok(Ok(Some(event))) = tokio::time::timeout_at(deadline, stream.message()).await {
        let exited =
            event.service == service && matches!(event.kind, Some(pb::event::Kind::Exited(_)));
        events.push(event);
        if exited {
            break;
        }
    }
    events
}

/// The stdout lines of `service` in `events`.
pub fn stdout_lines(events: &[pb::Event], service: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.service == service)
        .filter_map(|e| match &e.kind {
            Some(pb::event::Kind::Output(o)) if o.stream == pb::OutputStream::Stdout as i32 => {
                Some(o.line.clone())
            }
            _ => None,
        })
        .collect()
}

/// The syscall events in `events`.
pub fn syscalls(events: &[pb::Event]) -> Vec<(u64, String, pb::SyscallEvent)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::event::Kind::Syscall(s)) => Some((e.seq, e.service.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

/// Waits until no process carries `token`; returns the survivors if some remain after `timeout`.
pub async fn wait_gone(token: &str, timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_with(token);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Follows a session's events (the future of a `watch_events` call from the first event on, see
/// [`follow_all`]) until a service prints `want`; panics after 20 s, quoting what it saw.
pub async fn wait_for_output(
    watch: impl std::future::Future<
        Output = Result<tonic::Response<tonic::Streaming<pb::Event>>, tonic::Status>,
    >,
    want: &str,
) {
    let mut events = watch.await.expect("watch events").into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout_at(deadline, events.message())
            .await
            .unwrap_or_else(|_| panic!("no output {want:?} within 20 s; saw {seen:?}"))
            .expect("event stream")
            .expect("the stream ended");
        if let Some(pb::event::Kind::Output(o)) = event.kind {
            if o.line == want {
                return;
            }
            seen.push(o.line);
        }
    }
}

/// A request following `session`'s events from the first.
pub fn follow_all(session: &str) -> pb::WatchEventsRequest {
    pb::WatchEventsRequest {
        session_id: session.into(),
        from_seq: 0,
        follow: true,
    }
}

/// `r` is refused with `code` and a message containing `words`.
pub fn assert_status<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: tonic::Code,
    words: &str,
) {
    let status = r.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(words), "{status:?}");
}
