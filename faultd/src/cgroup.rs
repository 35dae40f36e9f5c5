//! Per-service cgroup v2 directories: detection of the cgroup v2 mount, placement, signalling every
//! member, removal, stale sweeps.
//!
//! Layout: `<cgroup2 root>/faultd/<instance>/<session>/<service>`, where `<instance>` is
//! `<pid>-<start time>` of the faultd process that owns it. When faultd starts it kills and removes every
//! instance directory whose owner is no longer running — what a crashed daemon left behind. No controllers
//! are enabled, so the "no internal processes" rule never applies and hybrid hosts (cgroup v2 at
//! `/sys/fs/cgroup/unified`) work the same as unified ones.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::watchdog::Watchdog;

mod events;

/// The cgroup v2 mount point of a unified host.
const UNIFIED_MOUNT: &str = "/sys/fs/cgroup";

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

impl fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unified => "unified",
            Self::Hybrid => "hybrid",
            Self::None => "none",
        })
    }
}

/// The cgroup mode and, when writable, the cgroup v2 mount. Blocks briefly: it creates and removes a
/// directory to find out whether faultd can create cgroups.
pub fn detect() -> (CgroupMode, Option<PathBuf>) {
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

/// The writable cgroup v2 mount services can be placed under, if any (see [`detect`]).
pub fn cgroup_v2_root() -> Option<PathBuf> {
    detect().1
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

/// Whether faultd can create cgroups under `dir`: creates and removes `faultd-probe-<pid>-<n>`.
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

/// The directory faultd owns under a cgroup v2 root.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    instance: PathBuf,
    /// Kills everything below `instance` when this process dies.
    _watchdog: Option<Arc<Watchdog>>,
}

impl CgroupTree {
    /// Creates this process's instance directory under `root` (a cgroup v2 mount) after sweeping stale
    /// instances. `tag` tells apart several engines of one process.
    pub fn create(root: &Path, tag: u32) -> io::Result<CgroupTree> {
        let base = root.join("faultd");
        fs::create_dir_all(&base)?;
        sweep_stale(&base);
        let pid = std::process::id();
        let instance = base.join(format!("{pid}-{}-{tag}", start_time(pid).unwrap_or(0)));
        match fs::create_dir(&instance) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let watchdog = match Watchdog::arm(&instance) {
            Ok(w) => Some(Arc::new(w)),
            Err(e) => {
                tracing::warn!(
                    "no watchdog ({e}): if this process is killed, its services run until the next \
                     faultd starts"
                );
                None
            }
        };
        Ok(CgroupTree {
            instance,
            _watchdog: watchdog,
        })
    }

    /// Creates the cgroup of one service of a session.
    /// Both names must be plain names (no `/`, `.` or `..`): they become directories.
    pub fn service(&self, session: &str, service: &str) -> io::Result<Cgroup> {
        for (what, name) in [("session", session), ("service", service)] {
            faultd_model::names::check(what, name)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let dir = self.instance.join(session).join(service);
        fs::create_dir_all(&dir)?;
        Ok(Cgroup { dir })
    }

    /// Removes a session's (empty) directory.
    pub fn remove_session(&self, session: &str) {
        let _ = fs::remove_dir(self.instance.join(session));
    }

    /// Kills whatever is left in this instance and removes it.
    pub fn destroy(&self) {
        destroy_tree(&self.instance);
    }

    /// Removes every directory of this instance that no process is in (all of it once every
    /// session ended), without signalling or waiting: what an engine does when it is dropped.
    pub fn remove_unused(&self) {
        remove_unused(&self.instance);
    }
}

/// Removes `dir` and the directories below it that hold no process, deepest first.
fn remove_unused(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_unused(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// One service's cgroup directory.
#[derive(Debug, Clone)]
pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// An existing cgroup v2 directory faultd did not create (a service it attaches to): `dir` must
    /// exist, be a directory on a cgroup2 mount and lie under `root` (the cgroup v2 root), if given.
    pub fn existing(dir: &Path, root: Option<&Path>) -> Result<Cgroup, String> {
        if !dir.is_absolute() {
            return Err(format!(
                "{} is not an absolute path to a cgroup v2 directory",
                dir.display()
            ));
        }
        let meta = fs::metadata(dir)
            .map_err(|e| format!("cannot attach to cgroup {}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!(
                "cannot attach to cgroup {}: it is not a directory",
                dir.display()
            ));
        }
        let canonical = fs::canonicalize(dir)
            .map_err(|e| format!("cannot attach to cgroup {}: {e}", dir.display()))?;
        if !is_cgroup2(&canonical) || !canonical.join("cgroup.procs").exists() {
            return Err(format!(
                "cannot attach to cgroup {}: it is not a directory of a cgroup v2 (cgroup2) mount",
                dir.display()
            ));
        }
        if let Some(root) = root {
            let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
            if !canonical.starts_with(&root) {
                return Err(format!(
                    "cannot attach to cgroup {}: it is not under the cgroup v2 mount {}",
                    dir.display(),
                    root.display()
                ));
            }
        }
        Ok(Cgroup { dir: canonical })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Opens `cgroup.procs` for writing, so a forked child can join by writing `0` before exec.
    pub fn procs_file(&self) -> io::Result<OwnedFd> {
        Ok(fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))?
            .into())
    }

    /// Opens the directory, so a child can be created in it (`clone3(CLONE_INTO_CGROUP)`) or join
    /// it (its `cgroup.procs`).
    pub fn dir_fd(&self) -> io::Result<OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        Ok(fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.dir)?
            .into())
    }

    /// Pids of every process in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        read_pids(&self.dir)
    }

    /// Whether no process is left.
    pub fn is_empty(&self) -> bool {
        is_empty(&self.dir)
    }

    /// Sends `signal` to every process of the cgroup.
    pub fn signal(&self, signal: i32) {
        signal_all(&self.dir, signal);
    }

    /// Waits until the cgroup is empty or `timeout` passes; returns whether it is empty. Wakes on
    /// each change of `cgroup.events` (polls every 10 ms where it cannot watch the file).
    pub async fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // Watching before the first look: a change in between still wakes the wait.
        let watch = events::EventsWatch::new(&self.dir.join("cgroup.events"));
        if let Err(e) = &watch {
            tracing::debug!(cgroup = %self.dir.display(), "cannot watch cgroup.events ({e}); polling");
        }
        loop {
            if self.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match &watch {
                Ok(w) => {
                    let _ = tokio::time::timeout(deadline - now, w.changed()).await;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Removes the directory (it must be empty).
    pub fn remove(&self) -> io::Result<()> {
        fs::remove_dir(&self.dir)
    }
}

/// Whether `dir` lies on a cgroup2 file system.
fn is_cgroup2(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    // The field and constant types differ between architectures, hence the casts.
    #[allow(clippy::unnecessary_cast)]
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &mut buf) == 0
            && buf.f_type as i64 == libc::CGROUP2_SUPER_MAGIC as i64
    }
}

fn read_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn is_empty(dir: &Path) -> bool {
    match fs::read_to_string(dir.join("cgroup.events")) {
        Ok(events) => events.lines().any(|l| l.trim() == "populated 0"),
        Err(_) => read_pids(dir).is_empty(),
    }
}

fn signal_all(dir: &Path, signal: i32) {
    if signal == libc::SIGKILL && fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    // Repeat a few times: a process that forks while being signalled may add members.
    for _ in 0..3 {
        let pids = read_pids(dir);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

/// SIGKILLs every process below `dir`, waits briefly for them to go, and removes the directories.
fn destroy_tree(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            destroy_tree(&entry.path());
        }
    }
    signal_all(dir, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !is_empty(dir) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = fs::remove_dir(dir);
}

/// Kills and removes instance directories whose owning faultd is gone.
fn sweep_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !owner_alive(name) {
            if is_empty(&entry.path()) {
                tracing::debug!(cgroup = %entry.path().display(), "removing an empty stale instance");
            } else {
                tracing::warn!(cgroup = %entry.path().display(), "killing what a previous faultd left behind");
            }
            destroy_tree(&entry.path());
        }
    }
}

/// Whether the process named by an instance directory (`<pid>-<start>-<tag>`) still runs.
fn owner_alive(instance: &str) -> bool {
    let mut parts = instance.split('-');
    let (Some(Ok(pid)), Some(Ok(start))) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    start_time(pid) == Some(start)
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split(' ').nth(19)?.parse().ok()
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
    fn instance_names_identify_live_owners() {
        let me = std::process::id();
        let start = start_time(me).expect("own start time");
        assert!(owner_alive(&format!("{me}-{start}-0")));
        assert!(!owner_alive(&format!("{me}-{}-0", start + 1)));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn attaching_needs_an_existing_cgroup_v2_directory() {
        let err = Cgroup::existing(Path::new("relative/dir"), None).unwrap_err();
        assert!(err.contains("not an absolute path"), "{err}");
        let err = Cgroup::existing(Path::new("/nonexistent/faultd-attach"), None).unwrap_err();
        assert!(err.contains("No such file"), "{err}");
        let err = Cgroup::existing(Path::new("/tmp"), None).unwrap_err();
        assert!(err.contains("not a directory of a cgroup v2"), "{err}");
    }
}
