//! `cargo xtask` — developer tasks for the faultd workspace.
//!
//! ```text
//! cargo xtask deps           install missing system packages (apt-get, as root)
//! cargo xtask test           deps, build (and faultctl --no-default-features), test, clippy -D warnings,
//!                            fmt --check; prints "N passed, N failed"
//! cargo xtask demo           deps, release build of the demo services + faultctl, run specs/named-ops.star
//! cargo xtask bench [ARGS]   cargo bench -p faultd --bench seccomp --bench ebpf --bench connect --bench storage [ARGS],
//!                            then cargo bench -p faultctl --bench events [ARGS]
//!                            (the seccomp bench ends with each decision's cost as a ratio against
//!                            the kernel's notification round trip of the same run, and a watched
//!                            decision's against an unwatched one, beside their goals; the events
//!                            bench prints faultctl's peak RSS for a test of 1,000,000 events)
//! cargo xtask dist           faultd and faultctl built with `--profile dist` (stripped, thin LTO) into
//!                            target/dist/, with shell completions (target/dist/completions/) and man
//!                            pages (target/dist/man/man1/) generated from their clap definitions
//! ```
//!
//! Exit codes of the commands run are propagated (a command killed by signal N gives 128+N).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  deps           install the system packages the suite needs (apt-get, as root) when missing
  test           deps, build all targets (and the thin faultctl, --no-default-features), run all
                 tests, clippy -D warnings, fmt --check
  demo           deps, release build of the demo services and faultctl, then
                 `faultctl run specs/named-ops.star` (exit 2 = the expected failing matrix cell)
  bench [ARGS]   cargo bench -p faultd --bench seccomp --bench ebpf --bench connect --bench storage [ARGS], then
                 cargo bench -p faultctl --bench events [ARGS] (faultctl's memory for 1,000,000 events)
  dist           faultd and faultctl with `--profile dist` (stripped, thin LTO) in target/dist/, shell
                 completions in target/dist/completions/{bash,zsh,fish}/, man pages in
                 target/dist/man/man1/
  help           this text";

/// The spec `cargo xtask demo` runs, relative to the workspace root.
const DEMO_SPEC: &str = "specs/named-ops.star";

/// How to tell whether a dependency is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    dead_code,
    reason = "constructed by the DEPS entries later issues add (clang, libbpf-dev, bpftool)"
)]
enum Probe {
    /// An executable of this name on `PATH`.
    Bin(&'static str),
    /// A file at this absolute path (headers, libraries).
    File(&'static str),
}

/// A system dependency of the suite beyond the Rust toolchain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dep {
    probe: Probe,
    /// The Debian package that provides it.
    package: &'static str,
}

/// What the suite needs beyond the Rust toolchain. Empty for now; later issues add e.g.
/// `Dep { probe: Probe::Bin("clang"), package: "clang" }`,
/// `Dep { probe: Probe::File("/usr/include/bpf/libbpf.h"), package: "libbpf-dev" }`,
/// `Dep { probe: Probe::Bin("bpftool"), package: "bpftool" }`.
const DEPS: &[Dep] = &[
    Dep {
        probe: Probe::Bin("clang"),
        package: "clang",
    },
    Dep {
        probe: Probe::File("/usr/include/bpf/bpf_helpers.h"),
        package: "libbpf-dev",
    },
    Dep {
        probe: Probe::Bin("bpftool"),
        package: "bpftool",
    },
    // The TLS listener's test makes its certificates with it.
    Dep {
        probe: Probe::Bin("openssl"),
        package: "openssl",
    },
    // The remote Python client's test (specs/clients/faultd_client.py); its modules come from pip.
    Dep {
        probe: Probe::Bin("python3"),
        package: "python3",
    },
    // specs/power-loss.star's SQLite store (sql-svc) runs the sqlite3 CLI, and its Redis tests run
    // /usr/bin/redis-server.
    Dep {
        probe: Probe::Bin("sqlite3"),
        package: "sqlite3",
    },
    // The protocol proxies' tests run real servers: redis-server (with redis-benchmark) and
    // PostgreSQL (Debian's server, its binaries under /usr/lib/postgresql/<version>/bin).
    Dep {
        probe: Probe::Bin("redis-server"),
        package: "redis-server",
    },
    Dep {
        probe: Probe::Bin("redis-benchmark"),
        package: "redis-tools",
    },
    Dep {
        probe: Probe::File("/usr/lib/postgresql"),
        package: "postgresql",
    },
];

/// Python modules the suite needs (import name, pip package), installed with `python3 -m pip`.
const PY_DEPS: &[(&str, &str)] = &[
    ("grpc", "grpcio"),
    ("grpc_tools", "grpcio-tools"),
    // The shop of specs/shop.star (specs/shop/app.py): pure-Python Redis and PostgreSQL clients.
    ("redis", "redis"),
    ("pg8000", "pg8000"),
];

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

// ---------------------------------------------------------------------------------------------------
// deps

/// Whether `name` is an executable file in one of the `PATH` directories.
fn on_path(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

impl Probe {
    fn present(self) -> bool {
        match self {
            Probe::Bin(name) => on_path(name),
            Probe::File(path) => Path::new(path).exists(),
        }
    }
}

/// The entries of `deps` that `present` says are missing.
fn missing(deps: &[Dep], present: impl Fn(Probe) -> bool) -> Vec<Dep> {
    deps.iter().copied().filter(|d| !present(d.probe)).collect()
}

/// Package names of `deps`, deduplicated, in table order.
fn packages(deps: &[Dep]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for d in deps {
        if !out.contains(&d.package) {
            out.push(d.package);
        }
    }
    out
}

fn is_root() -> bool {
    // /proc/self belongs to the effective uid of the process.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Installs the missing entries of [`DEPS`] with apt-get (as root); fails clearly otherwise.
fn ensure_deps() -> Result<()> {
    ensure_system_deps()?;
    ensure_python_deps()
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the missing [`PY_DEPS`] with pip (python3-pip from apt first when pip itself is missing).
fn ensure_python_deps() -> Result<()> {
    let todo: Vec<&str> = PY_DEPS
        .iter()
        .filter(|(module, _)| !python_has(module))
        .map(|(_, package)| *package)
        .collect();
    if todo.is_empty() {
        println!("xtask deps: all python modules present");
        return Ok(());
    }
    if !python_has("pip") {
        if !is_root() {
            bail!("python3 has no pip: install it as root: apt-get install -y python3-pip");
        }
        let mut apt = Command::new("apt-get");
        apt.args(["install", "-y", "--no-install-recommends", "python3-pip"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_status(&mut apt)?;
    }
    println!("xtask deps: pip installing {}", todo.join(" "));
    let pip = |extra: &[&str]| -> Result<i32> {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "install", "--quiet"])
            .args(extra)
            .args(&todo);
        run_status(&mut cmd)
    };
    // A Debian python refuses system-wide installs (PEP 668) unless told.
    if pip(&[])? != 0 && pip(&["--break-system-packages"])? != 0 {
        bail!("`python3 -m pip install {}` failed", todo.join(" "));
    }
    Ok(())
}

fn ensure_system_deps() -> Result<()> {
    let todo = missing(DEPS, Probe::present);
    if todo.is_empty() {
        println!("xtask deps: all system dependencies present");
        return Ok(());
    }
    let pkgs = packages(&todo);
    if !is_root() {
        bail!(
            "missing system packages: {list}. Install them as root: apt-get install -y {list}",
            list = pkgs.join(" ")
        );
    }
    println!("xtask deps: installing {}", pkgs.join(" "));
    let apt = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        let code = run_status(&mut cmd)?;
        if code != 0 {
            bail!("`apt-get {}` failed with exit code {code}", args.join(" "));
        }
        Ok(())
    };
    apt(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&pkgs);
    apt(&install)?;
    let still = packages(&missing(DEPS, Probe::present));
    if !still.is_empty() {
        bail!(
            "installed, but still not found: {} (check the probes in xtask's DEPS table)",
            still.join(" ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// running commands

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// A `cargo` command (the cargo that runs us, if known) in the workspace root.
fn cargo(args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(root());
    cmd
}

/// The target directory cargo builds into.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// The exit code of `status` (128+N for a death by signal N).
fn code_of(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; returns its exit code.
fn run_status(cmd: &mut Command) -> Result<i32> {
    println!("xtask: running `{}`", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    Ok(code_of(status))
}

// ---------------------------------------------------------------------------------------------------
// test

/// Counts from libtest `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
}

/// Removes ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `test result: ok. 5 passed; 1 failed; 0 ignored; …` into (passed, failed).
fn parse_test_result(line: &str) -> Option<Tally> {
    let line = strip_ansi(line);
    let rest = line.trim_start().strip_prefix("test result:")?;
    let mut tally = Tally::default();
    let mut seen = false;
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        // The first part is "ok. 5 passed" / "FAILED. 3 passed": take the last two words.
        let [.., n, what] = words[..] else { continue };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => {
                tally.passed = n;
                seen = true;
            }
            "failed" => {
                tally.failed = n;
                seen = true;
            }
            _ => {}
        }
    }
    seen.then_some(tally)
}

/// Runs `cmd`, streaming its stdout to `sink` (our stdout) while summing its `test result:` lines.
fn run_tests_streaming(cmd: &mut Command, sink: &mut dyn Write) -> Result<(i32, Tally)> {
    println!("xtask: running `{}`", describe(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))?;
    let mut total = Tally::default();
    if let Some(out) = child.stdout.take() {
        let mut reader = BufReader::new(out);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .context("reading test output")?;
            if n == 0 {
                break;
            }
            // A closed terminal must not stop the tests: ignore our own write errors.
            let _ = sink.write_all(&line);
            let _ = sink.flush();
            if let Some(t) = parse_test_result(&String::from_utf8_lossy(&line)) {
                total.passed += t.passed;
                total.failed += t.failed;
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    Ok((code_of(status), total))
}

fn cmd_test() -> Result<i32> {
    ensure_deps()?;

    let code = run_status(&mut cargo(&["build", "--workspace", "--all-targets"]))?;
    if code != 0 {
        eprintln!("xtask test: build failed (exit code {code})");
        return Ok(code);
    }
    // The thin client (`cargo install --path faultctl --no-default-features`): no embedded engine, so
    // no aya and no eBPF objects; it must keep building on its own.
    let code = run_status(&mut cargo(&[
        "build",
        "-p",
        "faultctl",
        "--no-default-features",
    ]))?;
    if code != 0 {
        eprintln!(
            "xtask test: building faultctl without the embedded engine failed (exit code {code})"
        );
        return Ok(code);
    }
    // specs/named-ops.star (and faultctl's end-to-end tests) run the release demo services.
    let code = run_status(&mut cargo(&["build", "--release", "-p", "faultd-demo"]))?;
    if code != 0 {
        eprintln!("xtask test: building the demo services failed (exit code {code})");
        return Ok(code);
    }

    let mut failures: Vec<(&str, i32)> = Vec::new();
    let mut test_cmd = cargo(&["test", "--workspace", "--no-fail-fast"]);
    if std::io::stdout().is_terminal() {
        // libtest sees a pipe (we capture its output), so ask for colour explicitly.
        test_cmd.args(["--", "--color", "always"]);
    }
    let (code, tally) = run_tests_streaming(&mut test_cmd, &mut std::io::stdout())?;
    if code != 0 {
        failures.push(("tests", code));
    }

    let code = run_status(&mut cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    if code != 0 {
        failures.push(("clippy", code));
    }
    let code = run_status(&mut cargo(&["fmt", "--all", "--", "--check"]))?;
    if code != 0 {
        failures.push(("fmt", code));
    }

    println!("{} passed, {} failed", tally.passed, tally.failed);
    match failures.first() {
        None => Ok(0),
        Some(&(_, code)) => {
            let names: Vec<String> = failures
                .iter()
                .map(|(step, code)| format!("{step} (exit code {code})"))
                .collect();
            eprintln!("xtask test: failed: {}", names.join(", "));
            Ok(code)
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// demo, bench

fn cmd_demo() -> Result<i32> {
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

/// faultd's benches, then faultctl's memory bench; the first failure's exit code, else 0.
fn cmd_bench(extra: &[String]) -> Result<i32> {
    let mut faultd = cargo(&[
        "bench", "-p", "faultd", "--bench", "seccomp", "--bench", "ebpf", "--bench", "connect",
        "--bench", "storage", "--bench", "proxy",
    ]);
    faultd.args(extra);
    let mut faultctl = cargo(&["bench", "-p", "faultctl", "--bench", "events"]);
    faultctl.args(extra);
    let first = run_status(&mut faultd)?;
    let second = run_status(&mut faultctl)?;
    Ok(if first != 0 { first } else { second })
}

// ---------------------------------------------------------------------------------------------------
// dist

/// The binaries `cargo xtask dist` builds.
const DIST_BINS: &[&str] = &["faultd", "faultctl"];

/// Where a completion script for `bin` goes under target/dist/completions/, per shell (the name each
/// shell looks for: bash `<bin>`, zsh `_<bin>`, fish `<bin>.fish`).
fn completion_files(bin: &str) -> [(&'static str, PathBuf); 3] {
    [
        ("bash", Path::new("bash").join(bin)),
        ("zsh", Path::new("zsh").join(format!("_{bin}"))),
        ("fish", Path::new("fish").join(format!("{bin}.fish"))),
    ]
}

fn cmd_dist() -> Result<i32> {
    ensure_deps()?;
    let code = run_status(&mut cargo(&[
        "build",
        "--profile",
        "dist",
        "-p",
        "faultd",
        "--bin",
        "faultd",
        "-p",
        "faultctl",
        "--bin",
        "faultctl",
    ]))?;
    if code != 0 {
        eprintln!("xtask dist: build failed (exit code {code})");
        return Ok(code);
    }
    // Cargo puts a custom profile's binaries in target/<profile>/.
    let dist = target_dir().join("dist");
    let completions = dist.join("completions");
    let man = dist.join("man/man1");
    for bin in DIST_BINS {
        let exe = dist.join(bin);
        for (shell, file) in completion_files(bin) {
            let path = completions.join(file);
            std::fs::create_dir_all(path.parent().unwrap_or(&completions))?;
            let out = Command::new(&exe)
                .args(["completions", shell])
                .output()
                .with_context(|| format!("cannot run {}", exe.display()))?;
            if !out.status.success() {
                bail!(
                    "`{} completions {shell}` failed: {}",
                    exe.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::fs::write(&path, &out.stdout)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let status = Command::new(&exe)
            .arg("man")
            .arg(&man)
            .status()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        if !status.success() {
            bail!("`{} man {}` failed", exe.display(), man.display());
        }
    }
    println!("xtask dist: in {}", dist.display());
    for bin in DIST_BINS {
        let size = std::fs::metadata(dist.join(bin))?.len();
        println!("  {bin:<10} {}", human_size(size));
    }
    println!("  completions/{{bash,zsh,fish}}/  man/man1/ (see the README's Install section)");
    Ok(0)
}

/// `12.3 MB` (10^6 bytes), or bytes below a megabyte.
fn human_size(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{bytes} B")
    } else {
        format!("{}.{} MB", bytes / 1_000_000, bytes % 1_000_000 / 100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_test_result_lines() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 7 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.41s\n"
            ),
            Some(Tally {
                passed: 7,
                failed: 0
            })
        );
        assert_eq!(
            parse_test_result("test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured"),
            Some(Tally {
                passed: 3,
                failed: 2
            })
        );
        assert_eq!(
            parse_test_result(
                "test result: \u{1b}[31mFAILED\u{1b}[0m. 1 passed; 4 failed; 0 ignored"
            ),
            Some(Tally {
                passed: 1,
                failed: 4
            })
        );
        assert_eq!(parse_test_result("test foo ... ok"), None);
        assert_eq!(parse_test_result("running 3 tests"), None);
    }

    #[test]
    fn streams_and_sums_test_results() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo 'running 4 tests'; echo 'test result: FAILED. 3 passed; 1 failed; 0 ignored'; \
             printf 'test result: ok. 2 passed; 0 failed; 0 ignored'; exit 3",
        ]);
        let mut seen = Vec::new();
        let (code, tally) = run_tests_streaming(&mut cmd, &mut seen).unwrap();
        assert_eq!(code, 3);
        let seen = String::from_utf8(seen).unwrap();
        assert!(seen.starts_with("running 4 tests\n"), "{seen}");
        assert!(seen.ends_with("0 ignored"), "{seen}");
        assert_eq!(
            tally,
            Tally {
                passed: 5,
                failed: 1
            }
        );
    }

    #[test]
    fn computes_missing_packages() {
        let table = [
            Dep {
                probe: Probe::Bin("clang"),
                package: "clang",
            },
            Dep {
                probe: Probe::File("/usr/include/bpf/libbpf.h"),
                package: "libbpf-dev",
            },
            Dep {
                probe: Probe::Bin("llvm-strip"),
                package: "clang",
            },
        ];
        let todo = missing(&table, |p| p == Probe::Bin("clang"));
        assert_eq!(packages(&todo), vec!["libbpf-dev", "clang"]);
        assert!(missing(&table, |_| true).is_empty());
        assert_eq!(
            packages(&missing(&table, |_| false)),
            vec!["clang", "libbpf-dev"]
        );
    }

    #[test]
    fn probes_path() {
        assert!(on_path("sh"));
        assert!(!on_path("definitely-not-a-binary-xtask"));
    }

    #[test]
    fn demo_exit_codes() {
        assert_eq!(demo_outcome(0), 0);
        assert_eq!(demo_outcome(2), 0);
        assert_eq!(demo_outcome(1), 1);
        assert_eq!(demo_outcome(137), 137);
    }

    #[test]
    fn dist_layout() {
        let files: Vec<PathBuf> = completion_files("faultctl")
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        assert_eq!(
            files,
            [
                PathBuf::from("bash/faultctl"),
                PathBuf::from("zsh/_faultctl"),
                PathBuf::from("fish/faultctl.fish")
            ]
        );
        assert_eq!(human_size(133_412_000), "133.4 MB");
        assert_eq!(human_size(999), "999 B");
        assert!(run(&["dist".into(), "x".into()]).is_err());
    }

    #[test]
    fn rejects_unknown_commands() {
        assert!(run(&["frobnicate".to_owned()]).is_err());
        assert!(run(&["test".to_owned(), "extra".to_owned()]).is_err());
        assert_eq!(run(&["help".to_owned()]).unwrap(), 0);
    }
}
