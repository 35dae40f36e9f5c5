//! `cargo xtask deps`: the system packages and Python modules the suite needs, installed when missing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::process::run_status;

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
    // specs/power-loss.star's SQLite store (sql-svc) runs the sqlite3 CLI.
    Dep {
        probe: Probe::Bin("sqlite3"),
        package: "sqlite3",
    },
    // The protocol proxies' tests and specs/power-loss.star run real servers: redis-server (with
    // redis-benchmark) and PostgreSQL (Debian's server, its binaries under
    // /usr/lib/postgresql/<version>/bin).
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

/// Whether `name` is an executable file in one of the `PATH` directories.
pub(crate) fn on_path(name: &str) -> bool {
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

pub(crate) fn is_root() -> bool {
    // /proc/self belongs to the effective uid of the process.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Installs the missing entries of [`DEPS`] with apt-get (as root); fails clearly otherwise.
pub(crate) fn ensure_deps() -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
