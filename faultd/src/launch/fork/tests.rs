//! The fork: placement in the cgroup (clone3 and its fallback), env, output, failing steps.

use super::*;

use crate::test_skip as skip;

fn spec(argv: &[&str], cwd: Option<&str>) -> LaunchSpec {
    LaunchSpec {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        env: vec![("FORK_TEST".into(), "1".into())],
        clear_env: false,
        cwd: cwd.map(Into::into),
        run_as: None,
    }
}

/// A fresh cgroup v2 directory for this test, if this host lets us make one.
fn cgroup(tag: &str) -> Option<std::path::PathBuf> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let root = crate::cgroup::cgroup_v2_root();
    let test = format!("fork {tag}");
    if !skip::runs_if(euid == 0 && root.is_some(), &test, || {
        format!("needs root and a writable cgroup v2 (euid {euid}, root {root:?})")
    }) {
        return None;
    }
    let dir = root?.join(format!("faultd-fork-test-{tag}-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    Some(dir)
}

/// Starts `sleep` placed as `placement`, checks it runs in its cgroup with its output piped,
/// then kills it and removes the cgroup.
fn lands_in_its_cgroup(placement: Placement, tag: &str) {
    let Some(dir) = cgroup(tag) else { return };
    let fd: OwnedFd = std::fs::File::open(&dir).unwrap().into();
    let forked = spawn(
        &spec(&["/bin/sleep", "30"], None),
        Some(&fd),
        placement,
        None,
        None,
    )
    .unwrap();
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert_eq!(procs.trim(), forked.pid.to_string(), "{procs:?}");
    let environ = std::fs::read(format!("/proc/{}/environ", forked.pid)).unwrap();
    assert!(
        environ.split(|b| *b == 0).any(|e| e == b"FORK_TEST=1"),
        "the service's env is passed"
    );
    std::fs::write(dir.join("cgroup.kill"), "1").unwrap();
    let mut status = 0;
    // SAFETY: waits for our own child (a reaper of the test process may have taken it: ECHILD).
    unsafe { libc::waitpid(forked.pid, &mut status, 0) };
    // The last process leaves the cgroup as it exits; then it can go.
    while std::fs::remove_dir(&dir).is_err() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn clone3_creates_the_child_in_its_cgroup() {
    lands_in_its_cgroup(Placement::Clone3, "clone3");
}

/// The path taken where the kernel refuses `clone3(CLONE_INTO_CGROUP)`.
#[test]
fn the_fallback_joins_by_writing_cgroup_procs() {
    lands_in_its_cgroup(Placement::Write, "write");
}

#[test]
fn a_failing_step_names_itself_and_the_child_is_reaped() {
    let e = spawn(
        &spec(&["/bin/true"], Some("/nonexistent-faultd-dir")),
        None,
        Placement::Clone3,
        None,
        None,
    )
    .err()
    .expect("no such directory");
    assert!(
        e.to_string()
            .starts_with("changing to its working directory: No such file or directory"),
        "{e}"
    );
    let e = spawn(
        &spec(&["/nonexistent-faultd-program"], None),
        None,
        Placement::Clone3,
        None,
        None,
    )
    .err()
    .expect("no such program");
    assert!(e.to_string().starts_with("exec: No such file"), "{e}");
}

#[test]
fn output_goes_to_the_pipes() {
    let forked = spawn(
        &spec(&["/bin/sh", "-c", "echo out; echo err >&2"], None),
        None,
        Placement::Clone3,
        None,
        None,
    )
    .unwrap();
    let read = |fd: OwnedFd| {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s).unwrap();
        s
    };
    assert_eq!(read(forked.stdout), "out\n");
    assert_eq!(read(forked.stderr), "err\n");
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(forked.pid, &mut status, 0) };
}
