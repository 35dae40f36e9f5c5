//! `cargo xtask dist`: stripped binaries, shell completions and man pages in target/dist/.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::deps::ensure_deps;
use crate::process::{cargo, run_status, target_dir};

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

pub(crate) fn cmd_dist() -> Result<i32> {
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
    }
}
