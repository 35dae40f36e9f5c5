//! `specs/named-ops.star` inside each guest, after its tests and in the same boot: the seed spec with
//! the same results as on the host (7 passed, 1 failed), its `persist` and `wal_write` denials decided
//! in the kernel where it can — ebpf-override on the custom kernel, ebpf-lsm for the writes and
//! seccomp for fsync on the stock one. The report names each rule's backend.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process::{cargo, root, run_status};

/// Where the guest writes the spec's JSON report and its exit status (the workspace is shared).
const REPORT: &str = "target/vm-named-ops.json";
const STATUS: &str = "target/vm-named-ops.rc";

/// Builds what the spec runs: faultctl and the release demo services.
pub(super) fn build() -> Result<()> {
    for args in [
        &["build", "-p", "faultctl"][..],
        &["build", "--release", "-p", "faultd-demo"],
    ] {
        let code = run_status(&mut cargo(args))?;
        if code != 0 {
            bail!("cargo {} failed (exit code {code})", args.join(" "));
        }
    }
    Ok(())
}

/// The guest's command line around `tests` (the test binary and its arguments): the tests, then the
/// spec (guest-init.sh brought loopback up); it exits with the tests' status.
pub(super) fn guest_command(tests: Vec<String>) -> Vec<String> {
    let script = format!(
        "\"$@\"; rc=$?; rm -f {REPORT} {STATUS}; \
         target/debug/faultctl run specs/named-ops.star --format json --seed 7 >{REPORT}; \
         echo $? >{STATUS}; exit $rc"
    );
    let mut argv = vec![
        "bash".to_owned(),
        "-c".to_owned(),
        script,
        "guest".to_owned(),
    ];
    argv.extend(tests);
    argv
}

/// The backend each kernel must show for the named ops' rules.
fn expected_backend(kernel: &str) -> &'static str {
    match kernel {
        "stock" => "ebpf-lsm+seccomp",
        _ => "ebpf-override",
    }
}

/// Prints the spec's results in `kernel`'s guest and checks them.
pub(super) fn check(kernel: &str) -> Result<()> {
    let dir = root();
    let report = read(&dir, REPORT)?;
    let status = read(&dir, STATUS)?;
    let report: Value = serde_json::from_str(&report)
        .with_context(|| format!("{REPORT} is not the JSON report"))?;
    let want = expected_backend(kernel);
    let mut wrong = Vec::new();
    for test in report["tests"].as_array().into_iter().flatten() {
        let name = test["name"].as_str().unwrap_or("?");
        let mut line = format!("  {name}: {}", test["result"].as_str().unwrap_or("?"));
        for rule in test["rules"].as_array().into_iter().flatten() {
            let op = rule["op"].as_str().unwrap_or("-");
            let backend = rule["backend"].as_str().unwrap_or("seccomp");
            line.push_str(&format!(
                "; {op} via {backend} ({} hits)",
                rule["hits"].as_u64().unwrap_or(0)
            ));
            if matches!(op, "persist" | "wal_write") && backend != want {
                wrong.push(format!("{name}: {op} via {backend}, expected {want}"));
            }
        }
        println!("{line}");
    }
    let counts = (report["passed"].as_u64(), report["failed"].as_u64());
    println!(
        "xtask vm-test: specs/named-ops.star on the {kernel} kernel: {} passed, {} failed \
         (exit status {})",
        counts.0.unwrap_or(0),
        counts.1.unwrap_or(0),
        status.trim()
    );
    if counts != (Some(7), Some(1)) {
        bail!("specs/named-ops.star should give 7 passed, 1 failed as on the host");
    }
    if !wrong.is_empty() {
        bail!("named ops on the wrong backend: {}", wrong.join("; "));
    }
    Ok(())
}

fn read(dir: &Path, file: &str) -> Result<String> {
    std::fs::read_to_string(dir.join(file))
        .with_context(|| format!("the guest left no {file} (did the spec run?)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_runs_the_tests_then_the_spec_and_keeps_the_tests_status() {
        let argv = guest_command(vec!["/t/ebpf_inkernel".into(), "--ignored".into()]);
        assert_eq!(argv[..2], ["bash", "-c"]);
        assert!(argv[2].starts_with("\"$@\"; rc=$?;"));
        assert!(argv[2].ends_with("exit $rc"));
        assert_eq!(argv[3..], ["guest", "/t/ebpf_inkernel", "--ignored"]);
        assert_eq!(expected_backend("stock"), "ebpf-lsm+seccomp");
        assert_eq!(expected_backend("custom"), "ebpf-override");
    }
}
