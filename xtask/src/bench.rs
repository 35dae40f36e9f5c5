//! `cargo xtask demo` and `cargo xtask bench`.

use std::process::Command;

use anyhow::{Result, bail};

use crate::deps::ensure_deps;
use crate::process::{cargo, root, run_status, target_dir};

/// The spec `cargo xtask demo` runs, relative to the workspace root.
const DEMO_SPEC: &str = "specs/named-ops.star";

pub(crate) fn cmd_demo() -> Result<i32> {
    if !root().join(DEMO_SPEC).is_file() {
        bail!("{DEMO_SPEC} not found in {}", root().display());
    }
    ensure_deps()?;
    let code = run_status(&mut cargo(&[
        "build",
        "--release",
        "-p",
        "faultd-demo",
        "-p",
        "faultctl",
    ]))?;
    if code != 0 {
        eprintln!("xtask demo: build failed (exit code {code})");
        return Ok(code);
    }
    let faultctl = target_dir().join("release/faultctl");
    let mut cmd = Command::new(&faultctl);
    cmd.args(["run", DEMO_SPEC]).current_dir(root());
    let code = run_status(&mut cmd)?;
    Ok(demo_outcome(code))
}

/// Maps faultctl's exit code to the demo's: 2 (a test failed) is the expected outcome, because the
/// spec has one deliberately failing matrix cell.
fn demo_outcome(code: i32) -> i32 {
    match code {
        0 => {
            println!("xtask demo: all tests passed");
            0
        }
        2 => {
            println!(
                "xtask demo: OK — faultctl exited 2 as expected: the spec's matrix has one deliberately \
                 failing cell (check_inventory × wal_broken answers 200, its default_expect wants != 200)"
            );
            0
        }
        other => {
            eprintln!("xtask demo: faultctl failed with exit code {other}");
            other
        }
    }
}

/// faultd's benches, then faultctl's memory and overhead benches (the latter on the demo services,
/// built first); the first failure's exit code, else 0.
pub(crate) fn cmd_bench(extra: &[String]) -> Result<i32> {
    let demo = run_status(&mut cargo(&["build", "--release", "-p", "faultd-demo"]))?;
    if demo != 0 {
        eprintln!("xtask bench: building the demo services failed (exit code {demo})");
        return Ok(demo);
    }
    let mut faultd = cargo(&[
        "bench", "-p", "faultd", "--bench", "seccomp", "--bench", "ebpf", "--bench", "connect",
        "--bench", "storage", "--bench", "proxy",
    ]);
    faultd.args(extra);
    let mut faultctl = cargo(&[
        "bench", "-p", "faultctl", "--bench", "events", "--bench", "overhead",
    ]);
    faultctl.args(extra);
    let first = run_status(&mut faultd)?;
    let second = run_status(&mut faultctl)?;
    Ok(if first != 0 { first } else { second })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_exit_codes() {
        assert_eq!(demo_outcome(0), 0);
        assert_eq!(demo_outcome(2), 0);
        assert_eq!(demo_outcome(1), 1);
        assert_eq!(demo_outcome(137), 137);
    }
}
