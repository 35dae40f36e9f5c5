//! What a request may ask the launcher to start, checked before anything is spawned: a program that
//! exists and is executable, argv and env of bounded size without NUL bytes, a working directory
//! that is one.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Most argv entries (and, separately, env entries) of one service.
pub(crate) const MAX_ENTRIES: usize = 4096;
/// Most bytes of argv plus env of one service (Linux's own limit for one entry is 128 KiB).
pub(crate) const MAX_BYTES: usize = 1 << 20;

/// Why a service cannot be launched as asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProgramError {
    /// argv is empty.
    #[error("argv is empty: give the program to run")]
    Empty,
    /// argv\[0\] is a relative path with a `/`: relative to what is unclear on the daemon's side.
    #[error(
        "program {0:?} is a relative path: give an absolute path (faultctl resolves one against the \
         spec's directory) or a bare name, looked up on faultd's PATH"
    )]
    Relative(String),
    /// No such file.
    #[error("program {0} does not exist on faultd's host: build or install it, or fix the path")]
    Missing(PathBuf),
    /// A bare name not found on PATH.
    #[error("no program named {name:?} on faultd's PATH ({path}): give its absolute path")]
    NotOnPath {
        /// The name.
        name: String,
        /// faultd's PATH.
        path: String,
    },
    /// Not a regular file.
    #[error("program {0} is not a regular file")]
    NotAFile(PathBuf),
    /// No execute bit.
    #[error("program {0} is not executable: chmod +x it")]
    NotExecutable(PathBuf),
    /// A NUL byte, which exec cannot pass.
    #[error("{0} contains a NUL byte, which a process cannot receive")]
    Nul(&'static str),
    /// Too many entries or bytes.
    #[error(
        "argv and env hold {entries} entries and {bytes} bytes; at most {MAX_ENTRIES} entries each \
         and {MAX_BYTES} bytes in all are accepted"
    )]
    TooLarge {
        /// argv plus env entries.
        entries: usize,
        /// Their bytes.
        bytes: usize,
    },
    /// An env name that is empty or holds `=`.
    #[error("env name {0:?} is not a variable name (empty, or contains '=')")]
    EnvName(String),
    /// cwd is not an absolute path to a directory.
    #[error("cwd {0:?} is not an absolute path to an existing directory")]
    Cwd(String),
}

/// Checks argv, env and cwd of a service and returns the program as the absolute path to exec.
pub(crate) fn check<'a>(
    argv: &[String],
    env: impl Iterator<Item = (&'a String, &'a String)> + Clone,
    cwd: &str,
) -> Result<PathBuf, ProgramError> {
    let entries = argv.len().max(env.clone().count());
    let bytes = argv.iter().map(String::len).sum::<usize>()
        + env
            .clone()
            .map(|(k, v)| k.len() + v.len() + 1)
            .sum::<usize>();
    if entries > MAX_ENTRIES || bytes > MAX_BYTES {
        return Err(ProgramError::TooLarge { entries, bytes });
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ProgramError::Nul("argv"));
    }
    for (name, value) in env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(ProgramError::EnvName(name.clone()));
        }
        if value.contains('\0') {
            return Err(ProgramError::Nul("an env value"));
        }
    }
    let cwd_ok = |dir: &Path| dir.is_absolute() && dir.is_dir();
    if !cwd.is_empty() && !cwd_ok(Path::new(cwd)) {
        return Err(ProgramError::Cwd(cwd.to_owned()));
    }
    let program = argv.first().ok_or(ProgramError::Empty)?;
    resolve(program, std::env::var_os("PATH").as_deref())
}

/// The absolute path of `program`: itself when it has a `/` (and is absolute), else the first
/// executable of that name in `path`.
pub(crate) fn resolve(program: &str, path: Option<&OsStr>) -> Result<PathBuf, ProgramError> {
    if program.is_empty() {
        return Err(ProgramError::Empty);
    }
    if program.contains('/') {
        let p = Path::new(program);
        if !p.is_absolute() {
            return Err(ProgramError::Relative(program.to_owned()));
        }
        return executable(p).map(|()| p.to_path_buf());
    }
    let path = path.unwrap_or_default();
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate).is_ok())
        .ok_or_else(|| ProgramError::NotOnPath {
            name: program.to_owned(),
            path: path.to_string_lossy().into_owned(),
        })
}

fn executable(p: &Path) -> Result<(), ProgramError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p).map_err(|_| ProgramError::Missing(p.to_path_buf()))?;
    if !meta.is_file() {
        return Err(ProgramError::NotAFile(p.to_path_buf()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(ProgramError::NotExecutable(p.to_path_buf()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn programs_resolve_to_an_absolute_executable() {
        let sh = resolve("sh", Some(OsStr::new("/nonexistent:/bin:/usr/bin"))).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        let e = resolve("no-such-program-x", Some(OsStr::new("/bin"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no program named \"no-such-program-x\" on faultd's PATH (/bin): give its absolute path"
        );
        let e = resolve("../target/release/inventory-svc", None).unwrap_err();
        assert!(matches!(e, ProgramError::Relative(_)), "{e}");
        let e = resolve("/nonexistent/svc", None).unwrap_err();
        assert!(
            e.to_string().contains("does not exist on faultd's host"),
            "{e}"
        );
        assert!(matches!(
            resolve("/tmp", None),
            Err(ProgramError::NotAFile(_))
        ));
        let plain =
            std::env::temp_dir().join(format!("faultd-not-executable-{}", std::process::id()));
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let e = resolve(plain.to_str().unwrap(), None).unwrap_err();
        std::fs::remove_file(&plain).unwrap();
        assert!(matches!(e, ProgramError::NotExecutable(_)), "{e}");
    }

    #[test]
    fn argv_env_and_cwd_are_bounded_and_well_formed() {
        let none = std::collections::BTreeMap::<String, String>::new();
        assert!(check(&argv(&["/bin/sh"]), none.iter(), "/tmp").is_ok());
        assert!(matches!(
            check(&[], none.iter(), ""),
            Err(ProgramError::Empty)
        ));
        assert!(matches!(
            check(&argv(&["/bin/sh", "a\0b"]), none.iter(), ""),
            Err(ProgramError::Nul("argv"))
        ));
        assert!(matches!(
            check(&argv(&["/bin/sh"]), none.iter(), "tmp"),
            Err(ProgramError::Cwd(_))
        ));
        let bad: std::collections::BTreeMap<_, _> = [("A=B".to_string(), "x".to_string())].into();
        assert!(matches!(
            check(&argv(&["/bin/sh"]), bad.iter(), ""),
            Err(ProgramError::EnvName(_))
        ));
        let huge = vec!["x".repeat(1024); 2048];
        assert!(matches!(
            check(&huge, none.iter(), ""),
            Err(ProgramError::TooLarge { .. })
        ));
    }
}
