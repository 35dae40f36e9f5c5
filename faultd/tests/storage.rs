//! Storage faults on real processes and real files (root only): `short()`, `lie()`, `volatile()`,
//! `power_loss()` as a rule and as a step. The program under test is `faultd-wal`.

mod support;

use std::time::Duration;

use faultd_proto::v1 as pb;
use support::*;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(30);

fn wal() -> String {
    env!("CARGO_BIN_EXE_faultd-wal").to_string()
}

fn rule(syscalls: &[&str], glob: &str, action: pb::fault_rule::Action) -> pb::FaultRule {
    pb::FaultRule {
        service: "wal".into(),
        syscalls: syscalls.iter().map(|s| s.to_string()).collect(),
        path_glob: glob.into(),
        action: Some(action),
        ..Default::default()
    }
}

fn short(fraction: f64) -> pb::fault_rule::Action {
    pb::fault_rule::Action::Short(pb::Short { fraction })
}

fn lie() -> pb::fault_rule::Action {
    pb::fault_rule::Action::Lie(pb::Lie {})
}

fn volatile() -> pb::fault_rule::Action {
    pb::fault_rule::Action::Volatile(pb::Volatile {})
}

/// A scratch directory, a daemon and one session running `faultd-wal wait GO ops...`.
struct Run {
    dir: String,
    _daemon: Daemon,
    client: pb::faultd_client::FaultdClient<tonic::transport::Channel>,
    session: String,
    stream: Streaming<pb::Event>,
    events: Vec<pb::Event>,
}

impl Run {
    /// Creates `files` in the scratch directory, starts the session, applies `rules` (`$D` is the
    /// directory) and lets the program run `ops`.
    async fn start(rules: Vec<pb::FaultRule>, files: &[(&str, &str)], ops: &[&str]) -> Run {
        let dir = format!("/tmp/{}", unique("faultd-storage"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in files {
            std::fs::write(format!("{dir}/{name}"), data).unwrap();
        }
        let daemon = Daemon::start();
        let mut client = daemon.client().await;
        let go = format!("{dir}/go");
        let ops: Vec<String> = ops.iter().map(|o| o.replace("$D", &dir)).collect();
        let wal = wal();
        let mut argv = vec![wal.as_str(), "wait", go.as_str()];
        argv.extend(ops.iter().map(String::as_str));
        let intercept = [
            "write",
            "read",
            "fsync",
            "ftruncate",
            "fallocate",
            "syncfs",
            "sync",
        ];
        let session = create(&mut client, vec![service("wal", &argv, &intercept)])
            .await
            .session_id;
        let rules = rules
            .into_iter()
            .map(|mut r| {
                r.path_glob = r.path_glob.replace("$D", &dir);
                r
            })
            .collect();
        apply(&mut client, &session, rules).await;
        let stream = client
            .watch_events(pb::WatchEventsRequest {
                session_id: session.clone(),
                from_seq: 1,
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
        std::fs::write(&go, "").unwrap();
        Run {
            dir,
            _daemon: daemon,
            client,
            session,
            stream,
            events: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_default()
    }

    /// Reads events until `stop` says so (or the wait runs out); returns whether it did.
    async fn until(&mut self, stop: impl Fn(&pb::Event) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Ok(Ok(Some(e))) = tokio::time::timeout_at(deadline, self.stream.message()).await {
            let done = stop(&e);
            self.events.push(e);
            if done {
                return true;
            }
        }
        false
    }

    async fn until_line(&mut self, prefix: &str) {
        let found = self
            .until(|e| matches!(&e.kind, Some(pb::event::Kind::Output(o)) if o.line.starts_with(prefix)))
            .await;
        assert!(found, "no line {prefix:?} in {:#?}", self.lines());
    }

    async fn until_exit(&mut self) {
        let exited = self
            .until(|e| matches!(e.kind, Some(pb::event::Kind::Exited(_))))
            .await;
        assert!(exited, "the service did not exit: {:#?}", self.lines());
    }

    fn lines(&self) -> Vec<String> {
        stdout_lines(&self.events, "wal")
    }

    fn line(&self, prefix: &str) -> String {
        self.lines()
            .into_iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {:#?}", self.lines()))
    }

    async fn power_loss(&mut self, mode: &str, seed: u64) -> Result<String, tonic::Status> {
        self.client
            .step(pb::StepRequest {
                session_id: self.session.clone(),
                service: "wal".into(),
                request: Some(pb::step_request::Request::PowerLoss(pb::PowerLoss {
                    mode: mode.into(),
                    seed: Some(seed),
                })),
                ..Default::default()
            })
            .await
            .map(|r| String::from_utf8_lossy(&r.into_inner().body).into_owned())
    }

    async fn finish(mut self) {
        let _ = self
            .client
            .delete_session(pb::DeleteSessionRequest {
                session_id: self.session.clone(),
            })
            .await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn short_writes_transfer_a_prefix_and_move_the_offset_as_the_kernel_would() {
    if !root_or_skip("short_writes_transfer_a_prefix_and_move_the_offset_as_the_kernel_would") {
        return;
    }
    let ops = [
        "open", "$D/f.wal", "write", "abcdefgh", "writev", "ABCD", "EFGH", "big", "1048576",
        "pwrite", "0", "WXYZ",
    ];
    let mut run = Run::start(vec![rule(&["write"], "$D/*.wal", short(0.5))], &[], &ops).await;
    run.until_exit().await;
    assert_eq!(run.line("write "), "write 4 pos 4");
    assert_eq!(run.line("writev "), "writev 4 pos 8");
    // A megabyte moves through faultd's 64 KiB buffer.
    assert_eq!(run.line("big "), "big 524288 pos 524296");
    assert_eq!(run.line("pwrite "), "pwrite 2 pos 524296");
    let data = run.read("f.wal");
    assert_eq!(data.len(), 524296);
    assert_eq!(&data[..8], b"WXcdABCD");
    assert!(data[8..].iter().all(|&b| b == b'x'));
    let shorts: Vec<_> = syscalls(&run.events)
        .into_iter()
        .filter(|(_, _, s)| s.decision == pb::Decision::Short as i32)
        .map(|(_, _, s)| (s.syscall, s.io_requested, s.io_done))
        .collect();
    assert_eq!(
        shorts,
        [
            ("write".to_owned(), 8, 4),
            ("writev".to_owned(), 8, 4),
            ("write".to_owned(), 1048576, 524288),
            ("pwrite64".to_owned(), 4, 2),
        ]
    );
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn short_reads_fill_a_prefix_of_the_buffers() {
    if !root_or_skip("short_reads_fill_a_prefix_of_the_buffers") {
        return;
    }
    let ops = [
        "open", "$D/f.dat", "read", "8", "readv", "4", "4", "pread", "10", "4", "read", "100",
    ];
    let files = [("f.dat", "0123456789abcdef")];
    let rules = vec![rule(&["read"], "$D/*.dat", short(0.25))];
    let mut run = Run::start(rules, &files, &ops).await;
    run.until_exit().await;
    assert_eq!(run.line("read 2"), "read 2 01 pos 2");
    assert_eq!(run.line("readv "), "readv 2 23 pos 4");
    assert_eq!(run.line("pread "), "pread 1 a pos 4");
    // 25 of 100 asked, 12 left in the file: the kernel's count.
    assert_eq!(run.line("read 12"), "read 12 456789abcdef pos 16");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lied_write_returns_the_full_count_writes_nothing_and_moves_the_offset() {
    if !root_or_skip("a_lied_write_returns_the_full_count_writes_nothing_and_moves_the_offset") {
        return;
    }
    // `writev` only: the write after it is the kernel's, and lands after the hole.
    let ops = ["open", "$D/f.wal", "writev", "hel", "lo", "write", "ab"];
    let mut run = Run::start(vec![rule(&["writev"], "$D/*.wal", lie())], &[], &ops).await;
    run.until_exit().await;
    assert_eq!(run.line("writev "), "writev 5 pos 5");
    assert_eq!(run.line("write "), "write 2 pos 7");
    assert_eq!(run.read("f.wal"), b"\0\0\0\0\0ab");
    let lie = syscalls(&run.events)
        .into_iter()
        .find(|(_, _, s)| s.decision == pb::Decision::Lie as i32)
        .expect("a lie event");
    assert_eq!((lie.2.io_requested, lie.2.io_done), (5, 0));
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_power_loss_the_file_holds_exactly_the_synced_prefix() {
    if !root_or_skip("after_a_power_loss_the_file_holds_exactly_the_synced_prefix") {
        return;
    }
    let ops = [
        "open", "$D/f.wal", "write", "one;", "fsync", "write", "two;", "pwrite", "0", "ONE",
        "write", "three;", "hang",
    ];
    let mut run = Run::start(vec![rule(&["write"], "$D/*.wal", volatile())], &[], &ops).await;
    run.until_line("write 6").await;
    assert_eq!(run.read("f.wal"), b"ONE;two;three;");
    let done = run.power_loss("drop", 1).await.expect("power loss");
    assert!(done.contains("3 unsynced change(s) undone"), "{done}");
    assert_eq!(run.read("f.wal"), b"one;");
    run.until_exit().await;
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lied_fsync_makes_nothing_durable_and_a_real_one_does() {
    if !root_or_skip("a_lied_fsync_makes_nothing_durable_and_a_real_one_does") {
        return;
    }
    let ops = ["open", "$D/f.wal", "write", "acked;", "fsync", "hang"];
    let rules = |fsync_lies: bool| {
        let mut rules = vec![rule(&["write"], "$D/*.wal", volatile())];
        if fsync_lies {
            rules.push(rule(&["fsync"], "$D/*.wal", lie()));
        }
        rules
    };
    for (lies, expect) in [(true, &b""[..]), (false, b"acked;")] {
        let mut run = Run::start(rules(lies), &[], &ops).await;
        run.until_line("fsync ok").await;
        run.power_loss("drop", 1).await.expect("power loss");
        assert_eq!(run.read("f.wal"), expect, "fsync lies: {lies}");
        run.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn torn_power_loss_keeps_a_prefix_that_replays_with_the_same_seed() {
    if !root_or_skip("torn_power_loss_keeps_a_prefix_that_replays_with_the_same_seed") {
        return;
    }
    let mut ops = vec!["open", "$D/f.wal"];
    let records: Vec<String> = (0..10).map(|i| format!("record-{i};")).collect();
    for r in &records {
        ops.extend(["write", r.as_str()]);
    }
    ops.push("hang");
    let full = records.concat();
    let mut kept = Vec::new();
    for seed in [7, 7, 8, 9, 10, 11] {
        let mut run = Run::start(vec![rule(&["write"], "$D/*.wal", volatile())], &[], &ops).await;
        run.until_line("write 9 pos 90").await;
        run.power_loss("torn", seed).await.expect("power loss");
        let data = run.read("f.wal");
        assert!(
            full.as_bytes().starts_with(&data),
            "a prefix of the writes: {:?}",
            String::from_utf8_lossy(&data)
        );
        kept.push(data);
        run.finish().await;
    }
    assert_eq!(kept[0], kept[1], "the same seed keeps the same prefix");
    assert!(
        kept[1..].windows(2).any(|w| w[0] != w[1]),
        "other seeds cut elsewhere: {kept:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_by_two_processes_loses_both_unsynced_writes() {
    if !root_or_skip("a_file_written_by_two_processes_loses_both_unsynced_writes") {
        return;
    }
    let ops = [
        "append", "$D/f.wal", "write", "parent;", "fsync", "child", "child;", "write", "again;",
        "hang",
    ];
    let mut run = Run::start(vec![rule(&["write"], "$D/*.wal", volatile())], &[], &ops).await;
    run.until_line("write 6").await;
    assert_eq!(run.read("f.wal"), b"parent;child;again;");
    run.power_loss("drop", 1).await.expect("power loss");
    assert_eq!(run.read("f.wal"), b"parent;");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_power_loss_rule_restores_its_glob_and_leaves_other_files_alone() {
    if !root_or_skip("a_power_loss_rule_restores_its_glob_and_leaves_other_files_alone") {
        return;
    }
    let power_loss = pb::fault_rule::Action::PowerLoss(pb::PowerLoss::default());
    let ops = [
        "open", "$D/b.log", "write", "kept", "open", "$D/a.wal", "write", "lost", "fsync", "write",
        "never",
    ];
    let mut run = Run::start(vec![rule(&["fsync"], "$D/*.wal", power_loss)], &[], &ops).await;
    run.until_exit().await;
    let cut = syscalls(&run.events)
        .into_iter()
        .find(|(_, _, s)| s.decision == pb::Decision::PowerLoss as i32)
        .expect("a power loss event");
    assert_eq!(cut.2.syscall, "fsync");
    assert!(
        !run.lines().iter().any(|l| l.starts_with("fsync")),
        "killed at fsync: {:#?}",
        run.lines()
    );
    assert_eq!(run.read("a.wal"), b"");
    assert_eq!(run.read("b.log"), b"kept");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_restored_when_the_faults_end_without_a_crash() {
    if !root_or_skip("nothing_is_restored_when_the_faults_end_without_a_crash") {
        return;
    }
    let ops = [
        "open",
        "$D/f.wal",
        "write",
        "unsynced;",
        "wait",
        "$D/go2",
        "write",
        "more;",
    ];
    let mut run = Run::start(vec![rule(&["write"], "$D/*.wal", volatile())], &[], &ops).await;
    run.until_line("write 9").await;
    let set = run.events.iter().find_map(|e| match &e.kind {
        Some(pb::event::Kind::FaultsApplied(a)) => Some(a.fault_set_id.clone()),
        _ => None,
    });
    run.client
        .clear_faults(pb::ClearFaultsRequest {
            session_id: run.session.clone(),
            fault_set_id: set.expect("faults applied"),
        })
        .await
        .unwrap();
    std::fs::write(run.path("go2"), "").unwrap();
    run.until_exit().await;
    let session = run.session.clone();
    run.client
        .delete_session(pb::DeleteSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
    assert_eq!(run.read("f.wal"), b"unsynced;more;");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn power_loss_at_the_third_write_keeps_what_was_synced_before() {
    if !root_or_skip("power_loss_at_the_third_write_keeps_what_was_synced_before") {
        return;
    }
    let mut cut = rule(
        &["write"],
        "$D/*.wal",
        pb::fault_rule::Action::PowerLoss(pb::PowerLoss {
            mode: "drop".into(),
            seed: None,
        }),
    );
    cut.after = 2;
    cut.max_fires = Some(1);
    let ops = [
        "open", "$D/a.wal", "write", "1;", "fsync", "write", "2;", "write", "3;", "write", "4;",
    ];
    let mut run = Run::start(vec![cut], &[], &ops).await;
    run.until_exit().await;
    assert!(
        run.lines().iter().any(|l| l == "write 2 pos 4"),
        "{:#?}",
        run.lines()
    );
    assert!(
        !run.lines().iter().any(|l| l.starts_with("write 2 pos 6")),
        "killed at the third write: {:#?}",
        run.lines()
    );
    assert_eq!(run.read("a.wal"), b"1;");
    run.finish().await;
}

/// A step on the service's processes: restart, stop or kill.
async fn process_step(run: &mut Run, request: pb::step_request::Request) {
    run.client
        .step(pb::StepRequest {
            session_id: run.session.clone(),
            service: "wal".into(),
            request: Some(request),
            ..Default::default()
        })
        .await
        .expect("step");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_stop_and_restart_run_the_same_program_again_under_the_same_faults() {
    if !root_or_skip("kill_stop_and_restart_run_the_same_program_again_under_the_same_faults") {
        return;
    }
    let ops = ["append", "$D/f.wal", "write", "x;", "hang"];
    let mut run = Run::start(vec![rule(&["write"], "$D/*.wal", short(0.5))], &[], &ops).await;
    run.until_line("write 1").await;
    process_step(
        &mut run,
        pb::step_request::Request::Kill(pb::Kill::default()),
    )
    .await;
    run.until_exit().await;
    // The same argv (it waits for the go file, which exists) and the same short() rule.
    process_step(&mut run, pb::step_request::Request::Restart(pb::Restart {})).await;
    run.until(
        |e| matches!(&e.kind, Some(pb::event::Kind::Output(o)) if o.line.starts_with("write")),
    )
    .await;
    process_step(&mut run, pb::step_request::Request::Stop(pb::Stop {})).await;
    run.until_exit().await;
    let exits: Vec<(i32, bool)> = run
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::event::Kind::Exited(x)) => Some((x.signal, x.stopped_by_faultd)),
            _ => None,
        })
        .collect();
    assert_eq!(
        exits,
        [(libc::SIGKILL, false), (libc::SIGTERM, true)],
        "killed by the kill step, then stopped by faultd"
    );
    let writes: Vec<String> = run
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("write"))
        .collect();
    assert_eq!(
        writes,
        ["write 1 pos 1", "write 1 pos 2"],
        "short() applies after the restart"
    );
    assert_eq!(run.read("f.wal"), b"xx");
    run.finish().await;
}
