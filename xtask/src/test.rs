//! `cargo xtask test`: build, the whole suite (the in-kernel tests in VMs), clippy and fmt.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::deps::ensure_deps;
use crate::process::{cargo, code_of, describe, run_status};

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

pub(crate) fn cmd_test() -> Result<i32> {
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

    // The in-kernel backends' tests, in a guest whose kernel can run them.
    let code = crate::vm::cmd_vm_test()?;
    if code != 0 {
        failures.push(("vm-test", code));
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
}
