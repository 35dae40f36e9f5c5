//! Named-op faults decided in the kernel by the ebpf-override and ebpf-lsm backends.
//!
//! This host's kernel cannot run kprobes or LSM programs, so these tests are `#[ignore]`d here and run
//! inside a QEMU guest with a kernel that can: `cargo xtask vm-test` boots one and runs
//! `cargo test --test ebpf_inkernel -- --ignored` in it, with `CI=true` so that nothing skips.

#[path = "ebpf_inkernel/lsm_ops.rs"]
mod lsm_ops;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use faultd_proto::v1 as pb;
use faultd_proto::v1::faultd_client::FaultdClient;
use support::outside::{next_line, spawn_in_cgroup};
use support::*;
use tonic::transport::Channel;

const EXIT_WAIT: Duration = Duration::from_secs(60);

/// The tests look at the machine's BPF programs, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every event of the session so far (without following).
async fn trace_so_far(client: &mut FaultdClient<Channel>, session: &str) -> Vec<pb::Event> {
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

/// The denials of the trace as (syscall, path, errno, backend), once `want` of them arrived (the
/// reader polls the ring buffer every 50 ms).
async fn denials(
    client: &mut FaultdClient<Channel>,
    session: &str,
    want: usize,
) -> Vec<(String, String, String, String)> {
    let mut denied = Vec::new();
    for _ in 0..100 {
        let events = trace_so_far(client, session).await;
        denied = syscalls(&events)
            .into_iter()
            .filter(|(_, _, s)| s.decision == pb::Decision::Deny as i32)
            .map(|(_, _, s)| (s.syscall, s.path, s.errno_name, s.backend))
            .collect();
        if denied.len() >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    denied.sort();
    denied
}

fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("run bpftool (cargo xtask deps installs it)");
    assert!(out.status.success(), "bpftool {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loaded programs and maps of ours (`fd_fault_*`), and links of those programs.
fn leftovers() -> Vec<String> {
    let mut left: Vec<String> = Vec::new();
    for what in ["prog", "map", "link"] {
        left.extend(
            bpftool(&[what, "show"])
                .lines()
                .filter(|l| l.contains("fd_fault"))
                .map(|l| format!("{what}: {l}")),
        );
    }
    left
}

/// `create` with a lease of two minutes: under TCG, attaching LSM programs (BPF trampolines) can take
/// longer than the default 10 s lease between two calls.
async fn create_held(
    client: &mut FaultdClient<Channel>,
    services: Vec<pb::ServiceSpec>,
) -> pb::CreateSessionResponse {
    client
        .create_session(pb::CreateSessionRequest {
            name: "test".into(),
            services,
            lease_ms: 120_000,
            trace: 0,
        })
        .await
        .expect("create session")
        .into_inner()
}

fn with_backend(mut rule: pb::FaultRule, backend: &str) -> pb::FaultRule {
    rule.backend = backend.into();
    rule
}

async fn delete(client: &mut FaultdClient<Channel>, session: String) -> pb::DeleteSessionResponse {
    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .expect("delete session")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a kernel with kprobe override and BPF LSM: cargo xtask vm-test"]
async fn override_denies_write_and_fsync_on_matching_paths_only() {
    let test = "override_denies_write_and_fsync_on_matching_paths_only";
    if !root_or_skip(test) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    if available_backend(&mut client, "ebpf-override", test)
        .await
        .is_none()
    {
        return;
    }
    let dir = Path::new("/tmp").join(unique("faultd-inkernel"));
    std::fs::create_dir_all(dir.join("wal")).unwrap();
    let d = dir.display().to_string();
    let (wal, other) = (format!("{d}/wal/0001.wal"), format!("{d}/notes.txt"));
    let go = format!("{d}/go");
    let victim = victim();
    // No intercepted syscalls: the victim runs without a seccomp filter, so only the kernel decides.
    let argv = [
        victim.as_str(),
        "wait",
        &go,
        "write",
        &wal,
        "x",
        "write",
        &other,
        "y",
        "fsync",
        &wal,
        "fsync",
        &other,
        "chdir",
        &d,
        "write",
        "wal/0001.wal",
        "relative",
        "write-at",
        &format!("{d}/wal"),
        "0001.wal",
        "at-dirfd",
        "stdout",
        "still-printing",
    ];
    let created = create_held(&mut client, vec![service("db", &argv, &[])]).await;
    let session = created.session_id;
    let glob = "/tmp/**/*.wal";
    let applied = apply(
        &mut client,
        &session,
        vec![
            deny("db", &["write"], glob, "EIO"),
            deny("db", &["fsync"], glob, "EIO"),
        ],
    )
    .await;
    for rule in &applied.rules {
        assert_eq!(rule.backend, "ebpf-override", "{rule:?}");
    }
    // This process is outside the session's cgroup: the same path is untouched for it.
    std::fs::write(&wal, "outside\n").expect("a write outside the session's cgroup");
    std::fs::write(&go, "").unwrap();
    let events = events_until_exit(&mut client, &session, "db", EXIT_WAIT).await;
    let lines = stdout_lines(&events, "db");
    assert_eq!(
        lines[1..],
        [
            format!("write {wal} err EIO"),
            format!("write {other} ok"),
            format!("fsync {wal} err EIO"),
            format!("fsync {other} ok"),
            format!("chdir {d} ok"),
            "write wal/0001.wal err EIO".to_string(),
            format!("write-at {d}/wal 0001.wal err EIO"),
            "still-printing".to_string(),
        ],
        "{lines:#?}"
    );
    let denied = denials(&mut client, &session, 4).await;
    let row = |syscall: &str| {
        (
            syscall.to_string(),
            wal.clone(),
            "EIO".to_string(),
            "ebpf-override".to_string(),
        )
    };
    assert_eq!(
        denied,
        [row("fsync"), row("write"), row("write"), row("write")]
    );
    let summary = delete(&mut client, session).await;
    let hits: Vec<u64> = summary.rules.iter().map(|r| r.hits).collect();
    assert_eq!(hits, [3, 1], "{:#?}", summary.rules);
    assert_eq!(std::fs::read_to_string(&wal).unwrap(), "outside\n");
    assert_eq!(leftovers(), Vec::<String>::new(), "after DeleteSession");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a kernel with kprobe override and BPF LSM: cargo xtask vm-test"]
async fn lsm_denies_writes_and_opens_by_path_and_fsync_goes_to_another_backend() {
    let test = "lsm_denies_writes_and_opens_by_path_and_fsync_goes_to_another_backend";
    if !root_or_skip(test) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    if available_backend(&mut client, "ebpf-lsm", test)
        .await
        .is_none()
    {
        return;
    }
    let dir = Path::new("/tmp").join(unique("faultd-lsm"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    let (wal, locked, other) = (
        format!("{d}/0001.wal"),
        format!("{d}/locked"),
        format!("{d}/notes.txt"),
    );
    let go = format!("{d}/go");
    let victim = victim();
    let argv = [
        victim.as_str(),
        "wait",
        &go,
        "write",
        &wal,
        "x",
        "write",
        &other,
        "y",
        "open",
        &locked,
        "chdir",
        &d,
        "open",
        "locked",
        "open",
        "notes.txt",
        "fsync",
        &wal,
    ];
    // fsync stays intercepted by seccomp where no in-kernel backend takes it.
    let created = create_held(&mut client, vec![service("db", &argv, &["fsync"])]).await;
    let session = created.session_id;
    let applied = apply(
        &mut client,
        &session,
        vec![
            with_backend(deny("db", &["write"], "/tmp/**/*.wal", "EIO"), "ebpf-lsm"),
            with_backend(
                deny("db", &["open"], "/tmp/**/locked", "EACCES"),
                "ebpf-lsm",
            ),
            deny("db", &["fsync"], "/tmp/**/*.wal", "EIO"),
        ],
    )
    .await;
    let backends: Vec<&str> = applied.rules.iter().map(|r| r.backend.as_str()).collect();
    assert_eq!(backends[..2], ["ebpf-lsm", "ebpf-lsm"]);
    assert_ne!(backends[2], "ebpf-lsm", "no LSM hook sees fsync");
    // Forcing fsync onto ebpf-lsm is refused in one sentence.
    let err = client
        .apply_faults(pb::ApplyFaultsRequest {
            session_id: session.clone(),
            rules: vec![with_backend(deny("db", &["fsync"], "", "EIO"), "ebpf-lsm")],
            seed: 1,
            partitions: vec![],
            ..Default::default()
        })
        .await
        .expect_err("fsync on ebpf-lsm");
    assert!(
        err.message().contains("no hook of it sees fsync"),
        "{}",
        err.message()
    );
    std::fs::write(&go, "").unwrap();
    let events = events_until_exit(&mut client, &session, "db", EXIT_WAIT).await;
    let lines = stdout_lines(&events, "db");
    assert_eq!(
        lines[1..],
        [
            format!("write {wal} err EIO"),
            format!("write {other} ok"),
            format!("open {locked} err EACCES"),
            format!("chdir {d} ok"),
            "open locked err EACCES".to_string(),
            "open notes.txt ok".to_string(),
            format!("fsync {wal} err EIO"),
        ],
        "{lines:#?}"
    );
    let denied = denials(&mut client, &session, 4).await;
    let backends: Vec<(&str, &str)> = denied
        .iter()
        .map(|(s, _, _, b)| (s.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        backends,
        [
            ("fsync", backends[0].1),
            ("openat", "ebpf-lsm"),
            ("openat", "ebpf-lsm"),
            ("write", "ebpf-lsm"),
        ]
    );
    delete(&mut client, session).await;
    assert_eq!(leftovers(), Vec::<String>::new(), "after DeleteSession");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a kernel with kprobe override and BPF LSM: cargo xtask vm-test"]
async fn an_attached_service_gets_write_faults_in_kernel() {
    let test = "an_attached_service_gets_write_faults_in_kernel";
    if !root_or_skip(test) {
        return;
    }
    let Some(root) = cgroup_v2_root_or_skip(test) else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    if available_backend(&mut client, "ebpf-override", test)
        .await
        .is_none()
    {
        return;
    }
    let dir = Path::new("/tmp").join(unique("faultd-attached"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    let (wal, other, go) = (
        format!("{d}/0001.wal"),
        format!("{d}/notes.txt"),
        format!("{d}/go"),
    );
    let victim = victim();
    let (outside, lines) = spawn_in_cgroup(
        &root,
        &[
            &victim, "wait", &go, "write", &wal, "x", "write", &other, "y", "sleep", "60",
        ],
    );
    let attached = pb::ServiceSpec {
        name: "db".into(),
        attach_cgroup: outside.dir.display().to_string(),
        ..Default::default()
    };
    let session = create_held(&mut client, vec![attached]).await.session_id;
    let applied = apply(
        &mut client,
        &session,
        vec![deny("db", &["write"], "/tmp/**/*.wal", "EIO")],
    )
    .await;
    assert_eq!(applied.rules[0].backend, "ebpf-override");
    std::fs::write(&go, "").unwrap();
    assert_eq!(next_line(&lines), format!("wait {go} ok"));
    assert_eq!(next_line(&lines), format!("write {wal} err EIO"));
    assert_eq!(next_line(&lines), format!("write {other} ok"));
    let summary = delete(&mut client, session).await;
    assert_eq!(summary.rules[0].hits, 1, "{:#?}", summary.rules);
    assert_eq!(leftovers(), Vec::<String>::new(), "after DeleteSession");
    drop(outside);
    let _ = std::fs::remove_dir_all(&dir);
}

/// On Debian's stock kernel (BPF LSM, no kprobe override; `VMTEST_KERNEL=stock`), one rule over write
/// and fsync (a named op like `persist`) is split by the engine: its writes go to ebpf-lsm, its fsync,
/// which no LSM hook sees, to seccomp; the summary reports it as one rule.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Debian's stock kernel (BPF LSM without kprobe override): cargo xtask vm-test"]
async fn stock_kernel_splits_persist_between_lsm_and_seccomp() {
    let test = "stock_kernel_splits_persist_between_lsm_and_seccomp";
    if !root_or_skip(test) {
        return;
    }
    let _serial = SERIAL.lock().await;
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    if available_backend(&mut client, "ebpf-lsm", test)
        .await
        .is_none()
    {
        return;
    }
    let probe = client
        .probe(pb::ProbeRequest {})
        .await
        .expect("probe")
        .into_inner();
    let over = probe
        .backends
        .iter()
        .find(|b| b.name == "ebpf-override")
        .expect("an ebpf-override row");
    assert!(
        !over.available,
        "this test is for a kernel without kprobe override"
    );
    assert!(
        over.reason.contains("CONFIG_BPF_KPROBE_OVERRIDE") && over.reason.ends_with('.'),
        "{}",
        over.reason
    );
    let dir = Path::new("/tmp").join(unique("faultd-stock"));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    let (wal, other, go) = (
        format!("{d}/0001.wal"),
        format!("{d}/notes.txt"),
        format!("{d}/go"),
    );
    let victim = victim();
    let argv = [
        victim.as_str(),
        "wait",
        &go,
        "write",
        &wal,
        "x",
        "write",
        &other,
        "y",
        "fsync",
        &wal,
        "fsync",
        &other,
    ];
    let created = create_held(&mut client, vec![service("db", &argv, &["write", "fsync"])]).await;
    let session = created.session_id;
    let glob = "/tmp/**/*.wal";
    let applied = apply(
        &mut client,
        &session,
        vec![deny("db", &["write", "fsync"], glob, "EIO")],
    )
    .await;
    let parts: Vec<(&str, Vec<&str>)> = applied
        .rules
        .iter()
        .map(|r| {
            (
                r.backend.as_str(),
                r.syscalls.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            ("ebpf-lsm", vec!["write", "writev", "pwrite64"]),
            ("seccomp", vec!["fsync", "fdatasync"])
        ]
    );
    std::fs::write(&go, "").unwrap();
    let events = events_until_exit(&mut client, &session, "db", EXIT_WAIT).await;
    let lines = stdout_lines(&events, "db");
    assert_eq!(
        lines[1..],
        [
            format!("write {wal} err EIO"),
            format!("write {other} ok"),
            format!("fsync {wal} err EIO"),
            format!("fsync {other} ok"),
        ],
        "{lines:#?}"
    );
    let denied = denials(&mut client, &session, 2).await;
    assert_eq!(
        denied,
        [
            (
                "fsync".to_string(),
                wal.clone(),
                "EIO".to_string(),
                "seccomp".to_string()
            ),
            (
                "write".to_string(),
                wal.clone(),
                "EIO".to_string(),
                "ebpf-lsm".to_string()
            ),
        ]
    );
    let summary = delete(&mut client, session).await;
    let rule = match &summary.rules[..] {
        [rule] => rule,
        rules => panic!("one rule in the summary, got {rules:#?}"),
    };
    assert_eq!(
        (rule.backend.as_str(), rule.hits, rule.syscalls.len()),
        ("ebpf-lsm+seccomp", 2, 5),
        "{rule:#?}"
    );
    assert!(summary.never_fired.is_empty(), "{summary:#?}");
    assert_eq!(leftovers(), Vec::<String>::new(), "after DeleteSession");
    let _ = std::fs::remove_dir_all(&dir);
}
