//! Host capability probe: which enforcement backends work on this kernel, and why not.
//!
//! Detection is done by trying things (a cgroup directory is created, a seccomp filter is installed in
//! a throw-away child) rather than only by reading the kernel configuration. [`probe`] blocks for a few
//! milliseconds (a fork, maybe a `gzip` run); call it from a blocking thread in async code.

use std::ffi::CStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Where the kernel lists its kprobe event source; missing without `CONFIG_KPROBES`.
const KPROBE_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

/// The cgroup v2 mount point of a unified host.
const UNIFIED_MOUNT: &str = "/sys/fs/cgroup";

/// What this host can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `uname -r`, e.g. `6.18.44-fc-v669`.
    pub kernel_release: String,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: String,
    /// How cgroup v2 is available.
    pub cgroup: CgroupMode,
    /// The writable cgroup v2 mount services are placed under; `None` with [`CgroupMode::None`].
    pub cgroup_root: Option<PathBuf>,
    /// Every backend, in a fixed order: `seccomp`, `ebpf-override`, `ebpf-trace`, `ebpf-cgroup`.
    pub backends: Vec<Backend>,
}

/// How cgroup v2 is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v2 mounted at `/sys/fs/cgroup`.
    Unified,
    /// cgroup v1 controllers with a v2 hierarchy elsewhere (e.g. `/sys/fs/cgroup/unified`).
    Hybrid,
    /// No writable cgroup v2: services are grouped by process group.
    None,
}

/// One enforcement backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `seccomp`, `ebpf-override` or `ebpf-trace`.
    pub name: &'static str,
    /// Whether faultd can use it on this host.
    pub available: bool,
    /// One sentence: why it is unavailable, or what it covers when available.
    pub reason: String,
    /// Every action the backend knows (`deny`, `delay`, `allow`, `crash`, `observe`, `partition`),
    /// each available or not, with a reason.
    pub actions: Vec<ActionSupport>,
}

/// One action of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSupport {
    /// `deny`, `delay`, `allow`, `crash`, `observe` or `partition`.
    pub action: &'static str,
    /// Whether the backend can enforce it on this host.
    pub available: bool,
    /// One sentence: what it does here, or why it is unavailable.
    pub reason: String,
}

impl Backend {
    /// The names of the actions available here.
    pub fn available_actions(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.actions
            .iter()
            .filter(|a| a.available)
            .map(|a| a.action)
    }
}

/// What an action does on a backend: `Ok(what it does)` when the backend can enforce it (available if
/// the backend is), `Err(why not)` when it cannot by design or on this host.
type ActionRow = (&'static str, Result<&'static str, String>);

/// The action list of a backend: an action the backend could enforce is unavailable, with the
/// backend's own reason, when the backend is.
fn action_table(available: bool, backend_reason: &str, rows: Vec<ActionRow>) -> Vec<ActionSupport> {
    rows.into_iter()
        .map(|(action, row)| match row {
            Ok(what) if available => ActionSupport {
                action,
                available: true,
                reason: what.to_owned(),
            },
            Ok(_) => ActionSupport {
                action,
                available: false,
                reason: backend_reason.to_owned(),
            },
            Err(why) => ActionSupport {
                action,
                available: false,
                reason: why,
            },
        })
        .collect()
}

/// Probes the host.
pub fn probe() -> Capabilities {
    let (kernel_release, arch) = uname();
    let (cgroup, cgroup_root) = cgroup();
    let backends = crate::enforce::Registry::host()
        .backends()
        .map(|b| b.capability())
        .collect();
    let caps = Capabilities {
        kernel_release,
        arch,
        cgroup,
        cgroup_root,
        backends,
    };
    tracing::debug!(?caps, "probed host");
    caps
}

/// The writable cgroup v2 mount services can be placed under, if any.
pub fn cgroup_v2_root() -> Option<PathBuf> {
    cgroup().1
}

impl fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unified => "unified",
            Self::Hybrid => "hybrid",
            Self::None => "none",
        })
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel   Linux {} ({})", self.kernel_release, self.arch)?;
        match &self.cgroup_root {
            Some(root) => writeln!(
                f,
                "cgroup   {} (cgroup v2 at {})",
                self.cgroup,
                root.display()
            )?,
            None => writeln!(
                f,
                "cgroup   none (no writable cgroup v2; services get process groups)"
            )?,
        }
        writeln!(f)?;
        let width = self
            .backends
            .iter()
            .map(|b| b.name.len())
            .chain(
                self.backends
                    .iter()
                    .flat_map(|b| b.actions.iter().map(|a| a.action.len() + 2)),
            )
            .chain(["BACKEND".len()])
            .max();
        let width = width.unwrap_or_default();
        let yes_no = |available: bool| if available { "yes" } else { "no" };
        writeln!(f, "{:width$}  AVAILABLE  REASON", "BACKEND")?;
        for b in &self.backends {
            writeln!(
                f,
                "{:width$}  {:9}  {}",
                b.name,
                yes_no(b.available),
                b.reason
            )?;
            for a in &b.actions {
                let name = format!("  {}", a.action);
                writeln!(f, "{name:width$}  {:9}  {}", yes_no(a.available), a.reason)?;
            }
        }
        Ok(())
    }
}

/// Kernel release and machine from `uname(2)`.
fn uname() -> (String, String) {
    // SAFETY: `utsname` is plain old data; all-zero bytes are a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable `utsname`.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return ("unknown".into(), std::env::consts::ARCH.into());
    }
    let text = |field: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates every field, and the buffer outlives the borrow.
        unsafe { CStr::from_ptr(field.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (text(&uts.release), text(&uts.machine))
}

/// `6.18` from `6.18.44-fc-v669`.
fn major_minor(release: &str) -> String {
    release
        .split(['.', '-'])
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
}

// ---------------------------------------------------------------------------------------- cgroups

/// The cgroup mode and, when writable, the cgroup v2 mount.
fn cgroup() -> (CgroupMode, Option<PathBuf>) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    match cgroup2_mount(&mountinfo) {
        Some(mount) if writable(&mount) => (mode_of(&mount), Some(mount)),
        Some(mount) => {
            tracing::debug!(mount = %mount.display(), "cgroup v2 is mounted but not writable");
            (CgroupMode::None, None)
        }
        None => (CgroupMode::None, None),
    }
}

/// The cgroup v2 mount point in `/proc/self/mountinfo` text, preferring `/sys/fs/cgroup`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    // "36 25 0:32 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw": the mount point is the fifth
    // field, the filesystem type the first one after " - ".
    let mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount_point = left.split(' ').nth(4)?;
            (fstype == "cgroup2").then(|| PathBuf::from(unescape_octal(mount_point)))
        })
        .collect();
    let unified = mounts
        .iter()
        .find(|m| m.as_path() == Path::new(UNIFIED_MOUNT));
    unified.or(mounts.first()).cloned()
}

/// Decodes mountinfo's `\040`-style escapes (space, tab, newline, backslash).
fn unescape_octal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn mode_of(mount: &Path) -> CgroupMode {
    if mount == Path::new(UNIFIED_MOUNT) {
        CgroupMode::Unified
    } else {
        CgroupMode::Hybrid
    }
}

/// Whether faultd can create cgroups under `dir`: creates and removes `faultd-probe-<pid>`.
fn writable(dir: &Path) -> bool {
    // Unique per call: two threads probing at once must not remove each other's directory.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe_dir = dir.join(format!("faultd-probe-{}-{n}", std::process::id()));
    match fs::create_dir(&probe_dir) {
        Ok(()) => fs::remove_dir(&probe_dir).is_ok(),
        // Left behind by an earlier probe of a process with the same pid.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => fs::remove_dir(&probe_dir).is_ok(),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot create a cgroup");
            false
        }
    }
}

// ---------------------------------------------------------------------------------------- seccomp

/// What the kernel accepted from the seccomp probes.
#[derive(Debug)]
enum SeccompSupport {
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
enum ChildFailure {
    /// The kernel refused the filter with this error.
    Refused(io::Error),
    /// Forking, waiting, or the child itself failed for a reason unrelated to the filter.
    Other(String),
}

fn seccomp_support() -> SeccompSupport {
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

fn seccomp_backend(release: &str, support: &SeccompSupport) -> Backend {
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
        ],
    );
    Backend {
        name: "seccomp",
        available,
        reason,
        actions,
    }
}

// ------------------------------------------------------------------------------------------- eBPF

/// The kernel's build configuration: `/boot/config-<release>`, else `/proc/config.gz`.
fn kernel_config(release: &str) -> Option<String> {
    if let Ok(text) = fs::read_to_string(format!("/boot/config-{release}")) {
        return Some(text);
    }
    if !Path::new("/proc/config.gz").exists() {
        return None;
    }
    // The workspace has no inflate implementation; gzip(1) is on every Debian system. Its exit
    // status is not relied on: a process-wide reaper may collect it first.
    let mut gzip = Command::new("gzip")
        .args(["-dc", "/proc/config.gz"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut text = String::new();
    let read = gzip.stdout.take()?.read_to_string(&mut text);
    let failed = gzip.wait().is_ok_and(|status| !status.success());
    (read.is_ok() && !failed && text.contains("CONFIG_")).then_some(text)
}

/// Whether `option` (e.g. `CONFIG_KPROBES`) is `y` or `m` in a kernel config.
fn config_enabled(config: &str, option: &str) -> bool {
    config.lines().any(|line| {
        line.strip_prefix(option)
            .and_then(|rest| rest.strip_prefix('='))
            .is_some_and(|value| value == "y" || value == "m")
    })
}

/// `bpf_override_return` from a kprobe on syscall entry.
///
/// Always unavailable in this build: loading a real BPF program to confirm the kernel accepts it comes
/// with the eBPF programs (issue: faultd-ebpf). Until then this names what is missing.
fn ebpf_override_backend(kprobes: bool, config: Option<&str>) -> Backend {
    let enabled = |option| config.map(|c| config_enabled(c, option));
    let reason = match (
        kprobes,
        enabled("CONFIG_KPROBES"),
        enabled("CONFIG_BPF_KPROBE_OVERRIDE"),
    ) {
        (false, Some(true), _) => format!(
            "the kernel has CONFIG_KPROBES=y but {KPROBE_TYPE} is missing (is sysfs mounted?), so \
             bpf_override_return cannot be attached."
        ),
        (false, _, _) => {
            "kprobes are not available: the kernel was built without CONFIG_KPROBES, so \
                          bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE) cannot run."
                .to_owned()
        }
        (true, _, Some(false)) => "kprobes work, but the kernel was built without \
                                   CONFIG_BPF_KPROBE_OVERRIDE, so bpf_override_return cannot fail \
                                   syscalls."
            .to_owned(),
        (true, _, _) => "kprobes work, but faultd was built without its eBPF programs (issue: \
                         faultd-ebpf)."
            .to_owned(),
    };
    let actions = action_table(
        false,
        &reason,
        vec![(
            "deny",
            Ok("fails a syscall with the chosen errno at its entry, in the kernel."),
        )],
    );
    Backend {
        name: "ebpf-override",
        available: false,
        reason,
        actions,
    }
}

/// The `seccomp` row, probed once per process (a throw-away child installs a filter).
pub(crate) fn seccomp_row() -> Backend {
    static ROW: OnceLock<Backend> = OnceLock::new();
    ROW.get_or_init(|| seccomp_backend(&uname().0, &seccomp_support()))
        .clone()
}

/// The `ebpf-override` row, probed once per process.
pub(crate) fn override_row() -> Backend {
    static ROW: OnceLock<Backend> = OnceLock::new();
    ROW.get_or_init(|| {
        let kprobes = Path::new(KPROBE_TYPE).exists();
        ebpf_override_backend(kprobes, kernel_config(&uname().0).as_deref())
    })
    .clone()
}

/// The `ebpf-trace` row (the tracer's load is probed once per process).
pub(crate) fn trace_row() -> Backend {
    ebpf_trace_backend()
}

/// The `ebpf-cgroup` row (the programs' load is probed once per process).
pub(crate) fn cgroup_row() -> Backend {
    ebpf_cgroup_backend(cgroup_v2_root().is_some())
}

/// Syscall tracing through raw_syscalls tracepoints: available when the tracer's programs load (they
/// are loaded, not attached, and dropped again). Probed once per process.
fn ebpf_trace_backend() -> Backend {
    trace_backend(&crate::enforce::ebpf::trace::available())
}

/// The `ebpf-trace` row for the outcome of loading the tracer.
fn trace_backend(result: &Result<(), String>) -> Backend {
    let reason = match result {
        Ok(()) => {
            "the raw_syscalls tracer loads; while a session traces every syscall, every process \
                   on the host pays about 0.1-0.2 us more per syscall (cargo xtask bench)."
                .to_owned()
        }
        Err(e) => format!("{e}."),
    };
    let actions = action_table(
        result.is_ok(),
        &reason,
        vec![
            (
                "observe",
                Ok(
                    "records every syscall of the session's services with its return value and \
                    latency (faultctl run --trace all); it decides nothing.",
                ),
            ),
            (
                "crash",
                Ok(
                    "sends the chosen signal with bpf_send_signal at the entry of the rule's syscalls \
                    (every time, while the rule is active), for rules without a path glob, \
                    destination or probability; the default for services attached by cgroup.",
                ),
            ),
        ],
    );
    Backend {
        name: crate::enforce::ebpf::trace::BACKEND.as_str(),
        available: result.is_ok(),
        reason,
        actions,
    }
}

/// In-kernel connect faults through cgroup/connect4 and connect6 programs: available when faultd's
/// `fd_connect4` program loads (it is loaded, not attached, and dropped; cached per process) and there
/// is a writable cgroup v2 to attach it to.
fn ebpf_cgroup_backend(cgroup_v2: bool) -> Backend {
    let (result, drops) = if cgroup_v2 {
        (
            crate::enforce::ebpf::cgroup::available(),
            crate::enforce::ebpf::cgroup::drops_available(),
        )
    } else {
        let none = "there is no writable cgroup v2 to attach cgroup/connect programs to.";
        (Err(none.to_owned()), Err(none.to_owned()))
    };
    cgroup_backend(&result, &drops)
}

/// The `ebpf-cgroup` row for the outcome of loading the connect program and the packet-drop program.
fn cgroup_backend(result: &Result<(), String>, drops: &Result<(), String>) -> Backend {
    let reason = match result {
        Ok(()) => {
            "cgroup/connect4 programs load; connect faults are decided in the kernel, with no \
                   round trip to faultd."
                .to_owned()
        }
        Err(e) => e.clone(),
    };
    let partition = match drops {
        Ok(()) => Ok(
            "refuses new connects to the other service's interface ports and drops TCP and UDP \
             packets to and from them (cgroup_skb egress and ingress), so open connections are cut \
             too.",
        ),
        Err(e) => Err(format!("a partition needs packet drops, but {e}")),
    };
    let actions = action_table(
        result.is_ok(),
        &reason,
        vec![
            (
                "deny",
                Ok("fails connect(2) only, in the kernel, with the chosen errno (cgroup/connect4 \
                    and connect6); other syscalls stay with seccomp."),
            ),
            (
                "allow",
                Ok("lets a connect through in the kernel, to carve an exception out of a broader \
                    connect rule."),
            ),
            (
                "delay",
                Err("ebpf-cgroup cannot delay a connect: the cgroup hook can only allow or refuse it."
                    .to_owned()),
            ),
            (
                "crash",
                Err("ebpf-cgroup cannot crash a service: its hooks can only allow or refuse a \
                     connect, so crashes go to seccomp or ebpf-trace."
                    .to_owned()),
            ),
            ("partition", partition),
        ],
    );
    Backend {
        name: crate::enforce::ebpf::cgroup::BACKEND.as_str(),
        available: result.is_ok(),
        reason,
        actions,
    }
}

/// Why `ebpf-trace` cannot be used here, or `None` when it can.
pub fn ebpf_trace_unavailable() -> Option<String> {
    let b = ebpf_trace_backend();
    (!b.available).then_some(b.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_cgroup2_mounts() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified =
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let both = format!("{HYBRID}{unified}");
        assert_eq!(cgroup2_mount(&both), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_mount(&HYBRID.replace("cgroup2", "cgroup")), None);
        let spaced = "1 2 0:1 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn cgroup_modes() {
        assert_eq!(mode_of(Path::new("/sys/fs/cgroup")), CgroupMode::Unified);
        assert_eq!(
            mode_of(Path::new("/sys/fs/cgroup/unified")),
            CgroupMode::Hybrid
        );
        assert_eq!(unescape_octal(r"a\134b\x"), r"a\b\x");
    }

    #[test]
    fn reads_kernel_config_options() {
        let config =
            "# CONFIG_KPROBES is not set\nCONFIG_KPROBES_X=y\nCONFIG_SECCOMP=y\nCONFIG_M=m\n";
        assert!(!config_enabled(config, "CONFIG_KPROBES"));
        assert!(config_enabled(config, "CONFIG_SECCOMP"));
        assert!(config_enabled(config, "CONFIG_M"));
    }

    #[test]
    fn ebpf_override_reasons() {
        let reason = |kprobes, config| ebpf_override_backend(kprobes, config).reason;
        assert!(reason(false, None).contains("without CONFIG_KPROBES"));
        assert!(reason(false, Some("CONFIG_KPROBES=y")).contains("is sysfs mounted"));
        assert!(
            reason(true, Some("CONFIG_KPROBES=y")).contains("without CONFIG_BPF_KPROBE_OVERRIDE")
        );
        let full = "CONFIG_KPROBES=y\nCONFIG_BPF_KPROBE_OVERRIDE=y";
        assert!(reason(true, Some(full)).contains("issue: faultd-ebpf"));
    }

    #[test]
    fn seccomp_reasons() {
        let notify = |r| seccomp_backend("5.15.0-91-generic", &SeccompSupport::Notify(r));
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

    /// This machine: seccomp works; kprobes are compiled out.
    #[test]
    fn probes_this_host() {
        let caps = probe();
        assert!(!caps.kernel_release.is_empty() && !caps.arch.is_empty());
        assert_eq!(caps.cgroup == CgroupMode::None, caps.cgroup_root.is_none());
        let names: Vec<_> = caps.backends.iter().map(|b| b.name).collect();
        assert_eq!(
            names,
            ["seccomp", "ebpf-override", "ebpf-trace", "ebpf-cgroup"]
        );
        let seccomp = &caps.backends[0];
        assert!(seccomp.available, "{}", seccomp.reason);
        let ebpf_override = &caps.backends[1];
        assert!(!ebpf_override.available);
        if !Path::new(KPROBE_TYPE).exists() {
            assert!(
                ebpf_override.reason.contains("CONFIG_KPROBES"),
                "{}",
                ebpf_override.reason
            );
        }
        if let Some(root) = &caps.cgroup_root {
            assert!(
                !root
                    .join(format!("faultd-probe-{}", std::process::id()))
                    .exists()
            );
        }
    }

    /// As root on our machines the connect program loads; otherwise the reason is one sentence.
    #[test]
    fn ebpf_cgroup_probe_loads_the_connect_program() {
        let b = ebpf_cgroup_backend(true);
        assert_eq!(b.name, "ebpf-cgroup");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(b.available, "{}", b.reason);
            let available: Vec<_> = b.available_actions().collect();
            assert_eq!(available, ["deny", "allow", "partition"]);
        } else {
            assert!(!b.available && b.reason.ends_with('.') && !b.reason.contains('\n'));
        }
        let b = ebpf_cgroup_backend(false);
        assert!(
            !b.available && b.reason.contains("cgroup v2"),
            "{}",
            b.reason
        );
        assert!(b.actions.iter().all(|a| !a.available), "{b:?}");
    }

    /// Each backend lists each action it knows, available or not, with one sentence.
    #[test]
    fn every_backend_lists_its_actions_with_a_reason() {
        let table = |b: &Backend| -> Vec<(&str, bool)> {
            b.actions.iter().map(|a| (a.action, a.available)).collect()
        };
        let seccomp = seccomp_backend("6.18.44", &SeccompSupport::Notify(Ok(())));
        assert_eq!(
            table(&seccomp),
            [
                ("deny", true),
                ("delay", true),
                ("allow", true),
                ("crash", true)
            ]
        );
        let no_seccomp = seccomp_backend(
            "6.18.44",
            &SeccompSupport::NoSeccomp(io::Error::from_raw_os_error(libc::EINVAL)),
        );
        assert!(no_seccomp.actions.iter().all(|a| !a.available));
        assert_eq!(no_seccomp.actions[0].reason, no_seccomp.reason);

        let over = ebpf_override_backend(false, None);
        assert_eq!(table(&over), [("deny", false)]);
        assert!(over.actions[0].reason.contains("CONFIG_KPROBES"));

        let trace = trace_backend(&Ok(()));
        assert_eq!(table(&trace), [("observe", true), ("crash", true)]);

        let cgroup = cgroup_backend(&Ok(()), &Ok(()));
        assert_eq!(
            table(&cgroup),
            [
                ("deny", true),
                ("allow", true),
                ("delay", false),
                ("crash", false),
                ("partition", true)
            ]
        );
        let reason = |b: &Backend, action: &str| {
            b.actions
                .iter()
                .find(|a| a.action == action)
                .unwrap()
                .reason
                .clone()
        };
        assert_eq!(
            reason(&cgroup, "delay"),
            "ebpf-cgroup cannot delay a connect: the cgroup hook can only allow or refuse it."
        );
        assert!(reason(&cgroup, "deny").contains("connect(2) only"));
        let no_drops = cgroup_backend(&Ok(()), &Err("the kernel refused it.".into()));
        assert_eq!(
            reason(&no_drops, "partition"),
            "a partition needs packet drops, but the kernel refused it."
        );
        assert_eq!(
            no_drops.available_actions().collect::<Vec<_>>(),
            ["deny", "allow"]
        );
        for b in [&seccomp, &no_seccomp, &over, &trace, &cgroup, &no_drops] {
            for a in &b.actions {
                assert!(
                    a.reason.ends_with('.') && !a.reason.contains('\n') && !a.reason.contains("  "),
                    "{}/{}: {:?}",
                    b.name,
                    a.action,
                    a.reason
                );
            }
        }
    }

    /// As root on our machines the tracer's programs load; otherwise the reason is one sentence.
    #[test]
    fn ebpf_trace_probe_loads_the_tracer() {
        let b = ebpf_trace_backend();
        assert_eq!(b.name, "ebpf-trace");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(b.available, "{}", b.reason);
        } else {
            assert!(!b.available && b.reason.ends_with('.') && !b.reason.contains('\n'));
        }
    }

    /// The child's answer survives a `waitpid(-1)` reaper collecting it first.
    #[test]
    fn seccomp_probe_survives_a_reaper() {
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
            let support = seccomp_support();
            assert!(
                matches!(support, SeccompSupport::Notify(Ok(()))),
                "{support:?}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reaper.join().unwrap();
    }

    #[test]
    fn display_is_an_aligned_table() {
        let caps = Capabilities {
            kernel_release: "6.18.44".into(),
            arch: "x86_64".into(),
            cgroup: CgroupMode::Hybrid,
            cgroup_root: Some("/sys/fs/cgroup/unified".into()),
            backends: vec![
                seccomp_backend("6.18.44", &SeccompSupport::Notify(Ok(()))),
                ebpf_override_backend(false, None),
                trace_backend(&Err(
                    "loading faultd's eBPF tracer failed: Operation not permitted (os error 1)"
                        .into(),
                )),
                cgroup_backend(&Ok(()), &Ok(())),
            ],
        };
        let text = caps.to_string();
        let expected = "\
kernel   Linux 6.18.44 (x86_64)
cgroup   hybrid (cgroup v2 at /sys/fs/cgroup/unified)

BACKEND        AVAILABLE  REASON
seccomp        yes        seccomp user notification works (Linux 6.18); intercepted syscalls cost one round trip to faultd.
  deny         yes        fails a matched syscall with the chosen errno before it runs (faultd answers the notification).
  delay        yes        holds a matched syscall in faultd for the chosen time, then lets it run.
  allow        yes        lets a matched syscall run unchanged, to carve an exception out of a broader rule.
  crash        yes        kills the service with the chosen signal at the entry of a matched syscall, before it takes effect.
ebpf-override  no         kprobes are not available: the kernel was built without CONFIG_KPROBES, so bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE) cannot run.
  deny         no         kprobes are not available: the kernel was built without CONFIG_KPROBES, so bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE) cannot run.
ebpf-trace     no         loading faultd's eBPF tracer failed: Operation not permitted (os error 1).
  observe      no         loading faultd's eBPF tracer failed: Operation not permitted (os error 1).
  crash        no         loading faultd's eBPF tracer failed: Operation not permitted (os error 1).
ebpf-cgroup    yes        cgroup/connect4 programs load; connect faults are decided in the kernel, with no round trip to faultd.
  deny         yes        fails connect(2) only, in the kernel, with the chosen errno (cgroup/connect4 and connect6); other syscalls stay with seccomp.
  allow        yes        lets a connect through in the kernel, to carve an exception out of a broader connect rule.
  delay        no         ebpf-cgroup cannot delay a connect: the cgroup hook can only allow or refuse it.
  crash        no         ebpf-cgroup cannot crash a service: its hooks can only allow or refuse a connect, so crashes go to seccomp or ebpf-trace.
  partition    yes        refuses new connects to the other service's interface ports and drops TCP and UDP packets to and from them (cgroup_skb egress and ingress), so open connections are cut too.
";
        assert_eq!(text, expected);
        let live = probe().to_string();
        for needle in [
            "BACKEND",
            "AVAILABLE",
            "REASON",
            "seccomp",
            "ebpf-override",
            "ebpf-trace",
        ] {
            assert!(live.contains(needle), "{needle} missing from\n{live}");
        }
    }
}
