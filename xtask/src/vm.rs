//! `cargo xtask vm-test`: the in-kernel backends' tests, inside a QEMU guest.
//!
//! This machine's kernel cannot run kprobes or BPF LSM programs, so `faultd/tests/ebpf_inkernel.rs` is
//! `#[ignore]`d on the host and run here in a guest whose kernel can. `xtask/vm/vm-test.sh` does the
//! guest side: it installs QEMU and the kernel build dependencies when missing (as root), builds a
//! 6.12 kernel from Debian's `linux-source-6.12` with `xtask/vm/bpf-test.config` once (cached in
//! `$VMTEST_CACHE`, default `~/.cache/vmtest/kernel-<key>`, keyed by the config, the source version,
//! gcc and pahole; built in a temporary directory that is removed afterwards), and boots it under
//! QEMU (TCG) with the host's `/` shared read-only and the workspace read-write, running one command
//! and returning its exit status. A second boot uses Debian's stock `linux-image` of the same version
//! (BPF LSM, no kprobe override), unpacked from its package, with an initramfs that loads its 9p
//! modules. One boot per kernel runs the test binary.
//!
//! Without root or QEMU it cannot run: locally it says why and counts as skipped; under `CI=true` it
//! fails instead, like every other test that cannot run.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::deps::{is_root, on_path};
use crate::process::{cargo, code_of, root, run_status};

/// The in-kernel test binary (faultd/tests/<name>.rs).
mod spec;

const TEST: &str = "ebpf_inkernel";

/// Why the VM suite cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    match (is_root(), on_path("qemu-system-x86_64")) {
        // The script installs what is missing.
        (true, _) => None,
        (false, true) => {
            Some("the guest's tests need root (faultd launches services in cgroups)".into())
        }
        (false, false) => Some(
            "qemu-system-x86_64 is missing, and installing it (with the kernel build \
             dependencies) needs root: run `cargo xtask vm-test` as root"
                .into(),
        ),
    }
}

/// Whether this run is CI (`CI=true` or `1`), where a suite that cannot run fails.
fn on_ci() -> bool {
    std::env::var("CI")
        .map(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1")
        .unwrap_or(false)
}

/// Builds the in-kernel test binary (and the faultd binaries it starts); returns its path.
fn build_test_binary() -> Result<PathBuf> {
    let mut cmd = cargo(&[
        "test",
        "-p",
        "faultd",
        "--test",
        TEST,
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    cmd.stdout(Stdio::piped());
    println!("xtask vm-test: building the {TEST} tests");
    let out = cmd.output().context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the {TEST} tests failed (its errors are above)");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    executable(&stdout, TEST)
        .map(PathBuf::from)
        .with_context(|| format!("cargo reported no executable for the {TEST} tests"))
}

/// The `"executable"` of the test target `name` in cargo's JSON messages.
fn executable(messages: &str, name: &str) -> Option<String> {
    let target = format!("\"name\":\"{name}\"");
    messages
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains(&target))
        .find_map(|l| {
            let start = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = l[start..].find('"')?;
            Some(l[start..start + end].to_owned())
        })
}

/// Runs the in-kernel tests in a guest; returns their exit status (0 when skipped off CI).
pub(crate) fn cmd_vm_test() -> Result<i32> {
    if let Some(why) = unavailable() {
        if on_ci() {
            eprintln!("xtask vm-test: {why}, but CI=true: failing instead of skipping");
            return Ok(1);
        }
        println!("xtask vm-test: SKIPPED: {why}");
        return Ok(0);
    }
    let script = root().join("xtask/vm/vm-test.sh");
    let mut first_failure = 0;
    for kernel in KERNELS {
        // Ensures QEMU, the packages and the kernel first, so their output comes before the tests'.
        let mut prepare = Command::new(&script);
        prepare
            .arg("build")
            .env("VMTEST_KERNEL", kernel.name)
            .current_dir(root());
        let code = run_status(&mut prepare)?;
        if code != 0 {
            eprintln!(
                "xtask vm-test: preparing the {} kernel failed (exit code {code})",
                kernel.name
            );
            return Ok(code);
        }
    }
    let binary = build_test_binary()?;
    spec::build()?;
    for kernel in KERNELS {
        let mut guest = Command::new(&script);
        // CI=true in the guest: a test that finds a backend missing there fails rather than skips.
        let tests = ["env", "CI=true", "RUST_LOG=warn"]
            .into_iter()
            .map(str::to_owned)
            .chain([binary.display().to_string()])
            .chain(["--ignored", "--test-threads=1"].map(str::to_owned))
            .chain(kernel.filter.iter().map(|f| f.to_string()))
            .collect();
        guest
            .arg("run")
            .args(spec::guest_command(tests))
            .env("VMTEST_KERNEL", kernel.name)
            .current_dir(root());
        println!(
            "xtask vm-test: booting the {} kernel (TCG): {}",
            kernel.name, kernel.what
        );
        let status = guest
            .status()
            .with_context(|| format!("cannot run {}", script.display()))?;
        let mut code = code_of(status);
        if let Err(e) = spec::check(kernel.name) {
            eprintln!("xtask vm-test: {e:#}");
            code = code.max(1);
        }
        if code == 0 {
            println!("xtask vm-test: the {} kernel's tests passed", kernel.name);
        } else {
            eprintln!(
                "xtask vm-test: the {} kernel's tests failed (exit code {code}; 125: no exit \
                 status from the guest)",
                kernel.name
            );
            if first_failure == 0 {
                first_failure = code;
            }
        }
    }
    Ok(first_failure)
}

/// A guest kernel and the tests it runs.
struct Kernel {
    /// `VMTEST_KERNEL` for vm-test.sh.
    name: &'static str,
    /// libtest filters.
    filter: &'static [&'static str],
    /// What it shows.
    what: &'static str,
}

/// The kernels of the suite: the custom one (kprobe override and BPF LSM), and Debian's stock one of
/// the same version (BPF LSM, no kprobe override), unpacked from its package with an initramfs.
const KERNELS: [Kernel; 2] = [
    Kernel {
        name: "custom",
        filter: &["--skip", "stock_"],
        what: "ebpf-override and ebpf-lsm",
    },
    Kernel {
        name: "stock",
        filter: &["lsm_", "stock_"],
        what: "Debian's linux-image: ebpf-lsm, fsync on seccomp",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_test_executable_in_cargos_messages() {
        let messages = concat!(
            "{\"reason\":\"compiler-artifact\",\"target\":{\"name\":\"faultd\"},\"executable\":\"/t/faultd\"}\n",
            "{\"reason\":\"compiler-artifact\",\"target\":{\"name\":\"ebpf_inkernel\",\"kind\":[\"test\"]},",
            "\"executable\":\"/t/deps/ebpf_inkernel-ab12\",\"fresh\":true}\n",
            "{\"reason\":\"build-finished\",\"success\":true}\n"
        );
        assert_eq!(
            executable(messages, "ebpf_inkernel").as_deref(),
            Some("/t/deps/ebpf_inkernel-ab12")
        );
        assert_eq!(executable(messages, "other"), None);
    }
}
