//! faultctl's memory for one test of 1,000,000 syscall events: the trace goes through the code a run
//! uses (`WatchEventBatches` messages of up to 1,024 events, decoded as tonic decodes them, each event
//! given to [`Collected::add`] with the default cap, then the JSON report rendered), and the peak
//! resident set (`VmHWM`) is printed against the goal, with the events kept and the events dropped.
//!
//! The events are what faultd sends for a traced service: decisions on `write`, `fsync`, `read` and
//! `openat` with paths, ops, labels, errno names, return values and latencies; faultd also reports
//! events its bus lost to a slow reader (one `Dropped` marker here). The batches are generated one at
//! a time, as they would arrive, so the peak is faultctl's, not the generator's.
//!
//! Nothing here asserts a memory size or a time; the counts are checked (kept + dropped = sent).
//!
//! Run: `cargo bench -p faultctl --bench events` (env `FAULTCTL_BENCH_EVENTS`, default 1,000,000;
//! `FAULTCTL_BENCH_MAX_EVENTS`, default faultctl's `--max-events` default).

use std::time::Instant;

use faultctl::collect::{Collected, DEFAULT_MAX_EVENTS};
use faultctl::report::model::{Outcome, RunReport, TestKind, TestReport};
use faultd_proto::v1 as pb;
use prost::Message;

/// Most events per `pb::EventBatch`, as faultd sends them.
const BATCH: u64 = 1024;
/// Events faultd's bus lost to this watcher, reported as one marker mid-stream.
const LOST_BY_FAULTD: u64 = 4_096;
/// The goal (issue 8, item 6).
const GOAL_MB: f64 = 200.0;

/// `VmRSS` and `VmHWM` of this process, in MB.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Event `seq` as faultd's `event_message` makes it.
fn event(seq: u64) -> pb::Event {
    const SERVICES: [&str; 3] = ["inventory", "orders", "gateway"];
    const SYSCALLS: [(&str, i32); 4] = [("write", 1), ("fsync", 74), ("read", 0), ("openat", 257)];
    let (syscall, nr) = SYSCALLS[(seq % 4) as usize];
    let denied = seq.is_multiple_of(16);
    let if_denied = |s: &str| if denied { s.to_string() } else { String::new() };
    pb::Event {
        seq,
        time_unix_ns: 1_750_000_000_000_000_000 + seq * 4_000,
        service: SERVICES[(seq % 3) as usize].to_string(),
        time_ns: seq * 4_000,
        kind: Some(pb::event::Kind::Syscall(pb::SyscallEvent {
            pid: 4242 + (seq % 3) as u32,
            tid: 4242 + (seq % 7) as u32,
            syscall: syscall.to_string(),
            nr,
            op: if_denied("persist"),
            path: format!("/srv/inventory/wal/{:08}.wal", seq / 512),
            decision: if denied {
                pb::Decision::Deny
            } else {
                pb::Decision::Allow
            } as i32,
            errno: if denied { 5 } else { 0 },
            errno_name: if_denied("EIO"),
            delay_us: 0,
            label: if_denied("WAL broken"),
            rule_id: if denied { 3 } else { 1 },
            backend: "seccomp".into(),
            signal: 0,
            retval: if denied { -5 } else { 1 },
            has_retval: true,
            latency_ns: 3_500 + seq % 1000,
            ..Default::default()
        })),
    }
}

/// The bytes of batch `[from, to)`, as they come off the wire.
fn encoded_batch(from: u64, to: u64) -> Vec<u8> {
    pb::EventBatch {
        events: (from..to).map(event).collect(),
    }
    .encode_to_vec()
}

fn main() {
    let total = env_or("FAULTCTL_BENCH_EVENTS", 1_000_000);
    let max_events = env_or("FAULTCTL_BENCH_MAX_EVENTS", DEFAULT_MAX_EVENTS as u64) as usize;
    let (rss_start, _) = rss_mb();
    println!(
        "faultctl events bench: one test of {total} syscall events in batches of {BATCH}, --max-events {max_events}"
    );
    let start = Instant::now();
    let mut collected = Collected::default();
    let (mut sent, mut seq) = (0u64, 1u64);
    let mut marker_sent = false;
    while sent < total {
        let n = BATCH.min(total - sent);
        let bytes = encoded_batch(seq, seq + n);
        let batch = pb::EventBatch::decode(bytes.as_slice()).expect("decode");
        for e in &batch.events {
            collected.add(e, max_events);
        }
        sent += n;
        seq += n;
        if !marker_sent && sent >= total / 2 {
            // faultd's bus lost events to this watcher: one marker with their count.
            marker_sent = true;
            let marker = pb::Event {
                kind: Some(pb::event::Kind::Dropped(pb::EventsDropped {
                    count: LOST_BY_FAULTD,
                })),
                ..Default::default()
            };
            collected.add(&marker, max_events);
        }
    }
    let collect_time = start.elapsed();
    let (rss_collected, hwm_collected) = rss_mb();
    let kept = collected.events.len() as u64;
    let dropped = collected.dropped;
    assert_eq!(
        kept + dropped,
        total + LOST_BY_FAULTD,
        "every event is kept or counted"
    );

    // The report faultctl writes at the end of the run.
    let report = RunReport {
        spec: "bench.star".into(),
        seed: 1,
        passed: 1,
        failed: 0,
        tests: vec![TestReport {
            name: "test_million_events".into(),
            kind: TestKind::Test,
            scenario: None,
            fault: None,
            result: Outcome::Pass,
            reason: None,
            duration_ms: collect_time.as_millis() as u64,
            seed: 1,
            rules: Vec::new(),
            events: collected.events,
            dropped_events: dropped,
            exits: collected.exits,
            printed: Vec::new(),
        }],
        matrices: Vec::new(),
    };
    let json = faultctl::report::json::render(&report);
    assert!(json.contains(&format!("\"dropped_events\": {dropped}")));
    let (_, hwm) = rss_mb();
    let verdict = if hwm < GOAL_MB { "met" } else { "NOT met" };

    println!();
    println!(
        "  collected in {:.2} s ({:.0} ns per event, encoding and decoding included)",
        collect_time.as_secs_f64(),
        collect_time.as_nanos() as f64 / total as f64
    );
    println!(
        "  events kept {kept}, dropped {dropped} (beyond the cap {}, lost by faultd {LOST_BY_FAULTD}); the report says dropped_events {dropped}",
        dropped - LOST_BY_FAULTD
    );
    println!(
        "  RSS at start {rss_start:.1} MB, after collecting {rss_collected:.1} MB (peak {hwm_collected:.1} MB), JSON report {:.1} MB",
        json.len() as f64 / 1e6
    );
    println!(
        "  peak RSS (VmHWM) for a test of {total} events = {hwm:.1} MB   goal < {GOAL_MB:.0} MB: {verdict}"
    );
}
