//! `cargo xtask` — developer tasks for the faultd workspace.
//!
//! ```text
//! cargo xtask deps           install missing system packages (apt-get, as root)
//! cargo xtask test           deps, build (and faultctl --no-default-features), test, clippy -D warnings,
//!                            fmt --check; prints "N passed, N failed"
//! cargo xtask demo           deps, release build of the demo services + faultctl, run specs/named-ops.star
//! cargo xtask bench [ARGS]   cargo bench -p faultd --bench seccomp --bench ebpf --bench connect
//!                            --bench storage --bench proxy [ARGS],
//!                            then cargo bench -p faultctl --bench events --bench overhead [ARGS]
//!                            (the seccomp bench ends with each decision's cost as a ratio against
//!                            the kernel's notification round trip of the same run, and a watched
//!                            decision's against an unwatched one, beside their goals; the events
//!                            bench prints faultctl's peak RSS for a test of 1,000,000 events; the overhead bench the
//!                            example specs' wall time with --jobs 1 and 4 against a tight loop)
//! cargo xtask vm-test        faultd/tests/ebpf_inkernel.rs inside a QEMU guest whose kernel has kprobe
//!                            override and BPF LSM (xtask/vm/; the kernel is built once and cached)
//! cargo xtask dist           faultd and faultctl built with `--profile dist` (stripped, thin LTO) into
//!                            target/dist/, with shell completions (target/dist/completions/) and man
//!                            pages (target/dist/man/man1/) generated from their clap definitions
//! ```
//!
//! Exit codes of the commands run are propagated (a command killed by signal N gives 128+N).

use std::process::ExitCode;

use anyhow::{Result, bail};

mod bench;
mod deps;
mod dist;
mod process;
mod test;
mod vm;

use bench::{cmd_bench, cmd_demo};
use deps::ensure_deps;
use dist::cmd_dist;
use test::cmd_test;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  deps           install the system packages the suite needs (apt-get, as root) when missing
  test           deps, build all targets (and the thin faultctl, --no-default-features), run all
                 tests, clippy -D warnings, fmt --check
  demo           deps, release build of the demo services and faultctl, then
                 `faultctl run specs/named-ops.star` (exit 2 = the expected failing matrix cell)
  bench [ARGS]   cargo bench -p faultd --bench seccomp --bench ebpf --bench connect --bench storage
                 --bench proxy [ARGS], then
                 cargo bench -p faultctl --bench events --bench overhead [ARGS] (faultctl's memory
                 for 1,000,000 events; the example specs' wall time against a tight loop)
  dist           faultd and faultctl with `--profile dist` (stripped, thin LTO) in target/dist/, shell
                 completions in target/dist/completions/{bash,zsh,fish}/, man pages in
                 target/dist/man/man1/
  vm-test        the in-kernel backends' tests (faultd/tests/ebpf_inkernel.rs) inside a QEMU guest
                 with a 6.12 kernel that has kprobe override and BPF LSM (built once from Debian's
                 linux-source-6.12, cached in ~/.cache/vmtest; installs QEMU as root); skipped with
                 its reason without root, a failure under CI=true
  help           this text";

/// The spec `cargo xtask demo` runs, relative to the workspace root.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Dispatches a subcommand; returns the process exit code.
fn run(args: &[String]) -> Result<i32> {
    let (cmd, rest) = match args.split_first() {
        Some((cmd, rest)) => (cmd.as_str(), rest),
        None => ("help", &[][..]),
    };
    let no_args = |name: &str| -> Result<()> {
        if let Some(extra) = rest.first() {
            bail!("`cargo xtask {name}` takes no arguments (got {extra:?})\n\n{USAGE}");
        }
        Ok(())
    };
    match cmd {
        "deps" => {
            no_args("deps")?;
            ensure_deps()?;
            Ok(0)
        }
        "test" => {
            no_args("test")?;
            cmd_test()
        }
        "demo" => {
            no_args("demo")?;
            cmd_demo()
        }
        "bench" => cmd_bench(rest),
        "vm-test" => {
            no_args("vm-test")?;
            vm::cmd_vm_test()
        }
        "dist" => {
            no_args("dist")?;
            cmd_dist()
        }
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(0)
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_commands() {
        assert!(run(&["frobnicate".to_owned()]).is_err());
        assert!(run(&["test".to_owned(), "extra".to_owned()]).is_err());
        assert_eq!(run(&["help".to_owned()]).unwrap(), 0);
    }

    #[test]
    fn dist_takes_no_arguments() {
        assert!(run(&["dist".into(), "x".into()]).is_err());
    }
}
