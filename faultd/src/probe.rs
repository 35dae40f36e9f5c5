//! Host capability probe: which enforcement backends work on this kernel, and why not.
//!
//! Each backend probes itself, beside its implementation ([`crate::enforce::Backend::capability`]);
//! cgroup v2 detection lives in [`crate::cgroup`]. This module holds the capability table's types, the
//! kernel facts backends share (release, build configuration) and the table's text form. Detection is
//! done by trying things (a cgroup directory is created, a seccomp filter is installed in a throw-away
//! child, BPF programs are loaded) rather than only by reading the kernel configuration. [`probe`]
//! blocks for a few milliseconds (a fork, loading programs); call it from a blocking thread in async
//! code.

use std::ffi::CStr;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;

pub use crate::cgroup::CgroupMode;

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
    /// Every backend, in a fixed order: `seccomp`, `ebpf-override`, `ebpf-lsm`, `ebpf-trace`,
    /// `ebpf-cgroup`.
    pub backends: Vec<Backend>,
    /// Whether sessions get a network namespace of their own.
    pub network: NetworkIsolation,
}

/// Network isolation of sessions on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkIsolation {
    /// Each session gets a network namespace of its own.
    pub available: bool,
    /// One sentence: what sessions get, or why they share the host network.
    pub reason: String,
}

impl NetworkIsolation {
    /// Probes the host: creates (and drops) one namespace. Blocks briefly.
    pub fn probe() -> NetworkIsolation {
        let (available, reason) = match crate::netns::availability() {
            Ok(what) => (true, what),
            Err(why) => (false, why),
        };
        NetworkIsolation { available, reason }
    }
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
pub(crate) type ActionRow = (&'static str, Result<&'static str, String>);

/// The action list of a backend: an action the backend could enforce is unavailable, with the
/// backend's own reason, when the backend is.
pub(crate) fn action_table(
    available: bool,
    backend_reason: &str,
    rows: Vec<ActionRow>,
) -> Vec<ActionSupport> {
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

/// Probes the host. Blocks.
pub fn probe() -> Capabilities {
    let (kernel_release, arch) = uname();
    let (cgroup, cgroup_root) = crate::cgroup::detect();
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
        network: NetworkIsolation::probe(),
    };
    tracing::debug!(?caps, "probed host");
    caps
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
        let network = if self.network.available {
            "namespace per session"
        } else {
            "host"
        };
        writeln!(f, "network  {network}: {}", self.network.reason)?;
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
pub(crate) fn uname() -> (String, String) {
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
pub(crate) fn major_minor(release: &str) -> String {
    release
        .split(['.', '-'])
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
}

/// The kernel's build configuration: `/boot/config-<release>`, else `/proc/config.gz`.
pub(crate) fn kernel_config(release: &str) -> Option<String> {
    if let Ok(text) = fs::read_to_string(format!("/boot/config-{release}")) {
        return Some(text);
    }
    config_from_gz(File::open("/proc/config.gz").ok()?)
}

/// A gzip-compressed kernel configuration, decompressed.
fn config_from_gz(compressed: impl Read) -> Option<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(compressed)
        .read_to_string(&mut text)
        .ok()?;
    text.contains("CONFIG_").then_some(text)
}

/// Whether `option` (e.g. `CONFIG_KPROBES`) is `y` or `m` in a kernel config.
pub(crate) fn config_enabled(config: &str, option: &str) -> bool {
    config.lines().any(|line| {
        line.strip_prefix(option)
            .and_then(|rest| rest.strip_prefix('='))
            .is_some_and(|value| value == "y" || value == "m")
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::path::Path;

    use super::*;
    use crate::enforce::ebpf::{cgroup_backend, crash, override_backend};
    use crate::enforce::seccomp::probe::{self as seccomp_probe, SeccompSupport};

    /// Every reason of every action of these rows is one sentence.
    pub(crate) fn assert_one_sentence_each(rows: &[&Backend]) {
        for b in rows {
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

    #[test]
    fn reads_kernel_config_options() {
        let config =
            "# CONFIG_KPROBES is not set\nCONFIG_KPROBES_X=y\nCONFIG_SECCOMP=y\nCONFIG_M=m\n";
        assert!(!config_enabled(config, "CONFIG_KPROBES"));
        assert!(config_enabled(config, "CONFIG_SECCOMP"));
        assert!(config_enabled(config, "CONFIG_M"));
    }

    #[test]
    fn reads_a_gzipped_kernel_config() {
        let config = "CONFIG_KPROBES=y\n# CONFIG_BPF_KPROBE_OVERRIDE is not set\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(config.as_bytes()).unwrap();
        let compressed = gz.finish().unwrap();
        assert_eq!(config_from_gz(&compressed[..]).as_deref(), Some(config));
        assert_eq!(config_from_gz(&b"not gzip"[..]), None);
        if Path::new("/proc/config.gz").exists() {
            let text = config_from_gz(File::open("/proc/config.gz").unwrap()).unwrap();
            assert!(text.contains("CONFIG_"));
        }
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
            [
                "seccomp",
                "ebpf-override",
                "ebpf-lsm",
                "ebpf-trace",
                "ebpf-cgroup"
            ]
        );
        let seccomp = &caps.backends[0];
        assert!(seccomp.available, "{}", seccomp.reason);
        let ebpf_override = &caps.backends[1];
        assert!(!ebpf_override.available);
        if !Path::new(override_backend::KPROBE_TYPE).exists() {
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

    #[test]
    fn display_is_an_aligned_table() {
        let caps = Capabilities {
            kernel_release: "6.18.44".into(),
            arch: "x86_64".into(),
            cgroup: CgroupMode::Hybrid,
            cgroup_root: Some("/sys/fs/cgroup/unified".into()),
            backends: vec![
                seccomp_probe::backend_row("6.18.44", &SeccompSupport::Notify(Ok(()))),
                override_backend::backend_row(false, None, &Err("unused.".into())),
                crash::backend_row(&Err(
                    "loading faultd's eBPF tracer failed: Operation not permitted (os error 1)"
                        .into(),
                )),
                cgroup_backend::backend_row(&Ok(()), &Ok(())),
            ],
            network: NetworkIsolation {
                available: true,
                reason: "each session gets its own network namespace.".into(),
            },
        };
        let text = caps.to_string();
        let expected = "\
kernel   Linux 6.18.44 (x86_64)
cgroup   hybrid (cgroup v2 at /sys/fs/cgroup/unified)
network  namespace per session: each session gets its own network namespace.

BACKEND        AVAILABLE  REASON
seccomp        yes        seccomp user notification works (Linux 6.18); intercepted syscalls cost one round trip to faultd.
  deny         yes        fails a matched syscall with the chosen errno before it runs (faultd answers the notification).
  delay        yes        holds a matched syscall in faultd for the chosen time, then lets it run.
  allow        yes        lets a matched syscall run unchanged, to carve an exception out of a broader rule.
  crash        yes        kills the service with the chosen signal at the entry of a matched syscall, before it takes effect.
  short        yes        does a read or write on the caller's behalf and transfers only a prefix (pidfd_getfd and process_vm_readv/writev).
  lie          yes        answers a sync with success without syncing, or a write in full without writing.
  volatile     yes        lets writes run but saves what they overwrite until a sync makes them durable.
  power_loss   yes        kills every process of the service and restores its tracked files to their durable state.
ebpf-override  no         kprobes are not available: the kernel was built without CONFIG_KPROBES, so bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE) cannot run.
  deny         no         kprobes are not available: the kernel was built without CONFIG_KPROBES, so bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE) cannot run.
  allow        no         kprobes are not available: the kernel was built without CONFIG_KPROBES, so bpf_override_return (CONFIG_BPF_KPROBE_OVERRIDE) cannot run.
  delay        no         ebpf-override cannot delay: a kprobe cannot sleep on the caller's behalf, so delays stay with seccomp.
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
