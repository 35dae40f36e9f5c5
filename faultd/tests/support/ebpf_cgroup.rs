//! Helpers of the ebpf-cgroup tests (`ebpf_cgroup.rs`, `ebpf_partition.rs`): the backend's
//! availability, rules, the trace so far and what bpftool shows.

use std::net::TcpListener;
use std::process::Command;

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use tonic::transport::Channel;

use super::{Daemon, available_backend, deny, root_or_skip};

/// Whether these tests can run: root, and the daemon's probe lists ebpf-cgroup as available.
pub async fn ready(test: &str, client: &mut FaultdClient<Channel>) -> bool {
    available_backend(client, "ebpf-cgroup", test)
        .await
        .is_some()
}

pub fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

pub fn connect_rule(service: &str, destination: &str, errno: &str) -> pb::FaultRule {
    let mut rule = deny(service, &["connect"], "", errno);
    rule.destination = destination.into();
    rule
}

/// Every event of the session so far (without following).
pub async fn trace_so_far(client: &mut FaultdClient<Channel>, session: &str) -> Vec<pb::Event> {
    let mut stream = client
        .watch_events(pb::WatchEventsRequest {
            session_id: session.into(),
            from_seq: 1,
            follow: false,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    while let Ok(Some(event)) = stream.message().await {
        events.push(event);
    }
    events
}

pub fn line_for<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {lines:#?}"))
}

pub fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("run bpftool (cargo xtask deps installs it)");
    assert!(out.status.success(), "bpftool {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ids and names of the programs attached to the cgroup `dir` (`bpftool cgroup show`).
pub fn attached_programs(dir: &str) -> Vec<(u32, String)> {
    bpftool(&["cgroup", "show", dir])
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next()?.parse().ok()?;
            Some((id, fields.last()?.to_string()))
        })
        .collect()
}

/// Ids of the loaded programs named fd_connect* or fd_skb* (`bpftool prog show`).
pub fn connect_programs() -> Vec<u32> {
    bpftool(&["prog", "show"])
        .lines()
        .filter(|l| l.contains(" name fd_connect") || l.contains(" name fd_skb"))
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect()
}

/// The tests that look at the host's BPF programs run one at a time (within a test binary).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// For `test`: the serial lock, a daemon and its client, once root and an available ebpf-cgroup
/// backend are confirmed; `None` (the reason said) when the test cannot run.
pub async fn start(
    test: &str,
) -> Option<(
    tokio::sync::MutexGuard<'static, ()>,
    Daemon,
    FaultdClient<Channel>,
)> {
    if !root_or_skip(test) {
        return None;
    }
    let serial = SERIAL.lock().await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    ready(test, &mut client)
        .await
        .then_some((serial, daemon, client))
}
