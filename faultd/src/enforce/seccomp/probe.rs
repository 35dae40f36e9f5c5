//! The seccomp backend's probe: whether this kernel offers seccomp user notification, tried by
//! installing a listener filter in a throw-away child.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use crate::probe::{Backend, action_table, major_minor, uname};

/// The `seccomp` row, probed once per process (a throw-away child installs a filter). Blocks the first
/// time (a fork).
pub(crate) fn row() -> Backend {
    static ROW: OnceLock<Backend> = OnceLock::new();
    ROW.get_or_init(|| backend_row(&uname().0, &support()))
        .clone()
}

/// What the kernel accepted from the seccomp probes.
#[derive(Debug)]
pub(crate) enum SeccompSupport {
    /// `prctl(PR_GET_SECCOMP)` failed: no `CONFIG_SECCOMP`.
    NoSeccomp(io::Error),
    /// `SECCOMP_GET_NOTIF_SIZES` failed: no user notification.
    NoNotify(io::Error),
    /// Notification is supported; the result of installing a listener filter with
    /// `NEW_LISTENER | WAIT_KILLABLE_RECV` in a child.
    Notify(Result<(), ChildFailure>),
}

/// Why the filter-installing child did not succeed.
#[derive(Debug)]
pub(crate) enum ChildFailure {
    /// The kernel refused the filter with this error.
    Refused(io::Error),
    /// Forking, waiting, or the child itself failed for a reason unrelated to the filter.
    Other(String),
}

fn support() -> SeccompSupport {
    // SAFETY: PR_GET_SECCOMP takes no pointers; it returns the calling thread's seccomp mode.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP) } < 0 {
        return SeccompSupport::NoSeccomp(io::Error::last_os_error());
    }
    // SAFETY: `seccomp_notif_sizes` is plain old data; all-zero bytes are a valid value.
    let mut sizes: libc::seccomp_notif_sizes = unsafe { std::mem::zeroed() };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one `seccomp_notif_sizes` to the pointer, which is valid.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &raw mut sizes,
        )
    };
    if rc != 0 {
        return SeccompSupport::NoNotify(io::Error::last_os_error());
    }
    SeccompSupport::Notify(install_listener_in_child())
}

/// Forks a child that installs an allow-all filter with `NEW_LISTENER | WAIT_KILLABLE_RECV`; the
/// filter dies with the child.
///
/// The child reports 0 or the errno through a pipe rather than its exit status, so the answer
/// survives a process-wide `waitpid(-1)` reaper collecting the child first.
fn install_listener_in_child() -> Result<(), ChildFailure> {
    let other = |what: &str| ChildFailure::Other(format!("{what}: {}", io::Error::last_os_error()));
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a valid [c_int; 2].
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(other("pipe failed"));
    }
    // SAFETY: both descriptors are fresh from pipe2 and owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let report_fd = write_end.as_raw_fd();
    let mut allow_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: allow_all.as_mut_ptr(),
    };
    let flags =
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    // SAFETY: the child only makes raw system calls (prctl, seccomp, write, _exit), which are
    // async-signal-safe, so forking a multi-threaded process is sound; it never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(other("fork failed"));
    }
    if pid == 0 {
        // SAFETY: in the child: `prog` points at a filter in this process's copy of the parent's
        // stack, `errno` is a valid 4-byte buffer, errno is read through libc's thread-local
        // pointer; _exit does not return.
        unsafe {
            let installed = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                && libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    flags,
                    &raw const prog,
                ) >= 0;
            let errno: i32 = if installed {
                0
            } else {
                *libc::__errno_location()
            };
            libc::write(report_fd, (&raw const errno).cast(), size_of::<i32>());
            libc::_exit(0);
        }
    }
    drop(write_end);
    let mut report = [0u8; size_of::<i32>()];
    let read = File::from(read_end).read_exact(&mut report);
    let mut status = 0;
    // Reap our child only; ECHILD means a process-wide reaper already did.
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    match (read, i32::from_ne_bytes(report)) {
        (Ok(()), 0) => Ok(()),
        (Ok(()), errno) => Err(ChildFailure::Refused(io::Error::from_raw_os_error(errno))),
        (Err(_), _) if libc::WIFSIGNALED(status) => Err(ChildFailure::Other(format!(
            "the probe child was killed by signal {}",
            libc::WTERMSIG(status)
        ))),
        (Err(e), _) => Err(ChildFailure::Other(format!(
            "the probe child did not report: {e}"
        ))),
    }
}

/// The `seccomp` row for what the kernel accepted on a kernel of this release.
pub(crate) fn backend_row(release: &str, support: &SeccompSupport) -> Backend {
    let linux = major_minor(release);
    let (available, reason) = match support {
        SeccompSupport::NoSeccomp(e) => (
            false,
            format!("the kernel was built without CONFIG_SECCOMP (prctl(PR_GET_SECCOMP): {e})."),
        ),
        SeccompSupport::NoNotify(e) => (
            false,
            format!(
                "seccomp user notification is not available (SECCOMP_GET_NOTIF_SIZES: {e}); it needs \
                 Linux 5.5+ with CONFIG_SECCOMP_FILTER."
            ),
        ),
        SeccompSupport::Notify(Ok(())) => (
            true,
            format!(
                "seccomp user notification works (Linux {linux}); intercepted syscalls cost one round \
                 trip to faultd."
            ),
        ),
        SeccompSupport::Notify(Err(ChildFailure::Refused(e))) => match e.raw_os_error() {
            Some(libc::EINVAL) => (
                true,
                format!(
                    "seccomp user notification works (Linux {linux}), but without \
                     SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19+) a signal during a delayed \
                     syscall makes it fail with EINTR."
                ),
            ),
            Some(libc::EBUSY) => (
                false,
                "faultd itself runs under a seccomp user-notification filter (EBUSY), and the kernel \
                 allows only one listener per process tree."
                    .to_owned(),
            ),
            _ => (false, format!("the kernel refused a seccomp user-notification filter: {e}.")),
        },
        SeccompSupport::Notify(Err(ChildFailure::Other(why))) => (
            false,
            format!("seccomp user notification could not be tested: {why}."),
        ),
    };
    let actions = action_table(
        available,
        &reason,
        vec![
            (
                "deny",
                Ok(
                    "fails a matched syscall with the chosen errno before it runs (faultd answers \
                    the notification).",
                ),
            ),
            (
                "delay",
                Ok("holds a matched syscall in faultd for the chosen time, then lets it run."),
            ),
            (
                "allow",
                Ok(
                    "lets a matched syscall run unchanged, to carve an exception out of a broader \
                    rule.",
                ),
            ),
            (
                "crash",
                Ok(
                    "kills the service with the chosen signal at the entry of a matched syscall, \
                    before it takes effect.",
                ),
            ),
            (
                "short",
                Ok(
                    "does a read or write on the caller's behalf and transfers only a prefix \
                    (pidfd_getfd and process_vm_readv/writev).",
                ),
            ),
            (
                "lie",
                Ok(
                    "answers a sync with success without syncing, or a write in full without writing.",
                ),
            ),
            (
                "volatile",
                Ok(
                    "lets writes run but saves what they overwrite until a sync makes them durable.",
                ),
            ),
            (
                "power_loss",
                Ok(
                    "kills every process of the service and restores its tracked files to their \
                    durable state.",
                ),
            ),
        ],
    );
    Backend {
        name: "seccomp",
        available,
        reason,
        actions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tests::assert_one_sentence_each;

    #[test]
    fn seccomp_reasons() {
        let notify = |r| backend_row("5.15.0-91-generic", &SeccompSupport::Notify(r));
        let b = notify(Ok(()));
        assert!(b.available);
        assert!(
            b.reason
                .starts_with("seccomp user notification works (Linux 5.15);"),
            "{}",
            b.reason
        );
        let b = notify(Err(ChildFailure::Refused(io::Error::from_raw_os_error(
            libc::EINVAL,
        ))));
        assert!(b.available && b.reason.contains("WAIT_KILLABLE_RECV"));
        let b = notify(Err(ChildFailure::Refused(io::Error::from_raw_os_error(
            libc::EBUSY,
        ))));
        assert!(!b.available && b.reason.contains("EBUSY"));
    }

    /// Each action it knows, available or not, with one sentence.
    #[test]
    fn lists_its_actions_with_a_reason() {
        let seccomp = backend_row("6.18.44", &SeccompSupport::Notify(Ok(())));
        assert_eq!(
            seccomp
                .actions
                .iter()
                .map(|a| (a.action, a.available))
                .collect::<Vec<_>>(),
            [
                ("deny", true),
                ("delay", true),
                ("allow", true),
                ("crash", true),
                ("short", true),
                ("lie", true),
                ("volatile", true),
                ("power_loss", true)
            ]
        );
        let no_seccomp = backend_row(
            "6.18.44",
            &SeccompSupport::NoSeccomp(io::Error::from_raw_os_error(libc::EINVAL)),
        );
        assert!(no_seccomp.actions.iter().all(|a| !a.available));
        assert_eq!(no_seccomp.actions[0].reason, no_seccomp.reason);
        assert_one_sentence_each(&[&seccomp, &no_seccomp]);
    }

    /// The child's answer survives a `waitpid(-1)` reaper collecting it first. The reaper would also
    /// collect the children of tests running beside it, so the test reruns itself alone in a process
    /// of its own.
    #[test]
    fn seccomp_probe_survives_a_reaper() {
        const ALONE: &str = "FAULTD_TEST_REAPER_ALONE";
        if std::env::var_os(ALONE).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "enforce::seccomp::probe::tests::seccomp_probe_survives_a_reaper",
                    "--test-threads=1",
                ])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("1 passed"),
                "the rerun ran the test: {stdout}"
            );
            return;
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reaper = std::thread::spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: a null status pointer is allowed; WNOHANG never blocks.
                    unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
                }
            }
        });
        for _ in 0..20 {
            let support = support();
            assert!(
                matches!(support, SeccompSupport::Notify(Ok(()))),
                "{support:?}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reaper.join().unwrap();
    }
}
