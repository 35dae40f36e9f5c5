//! eBPF backends, loaded with aya from the objects `faultd-ebpf` compiles (C, clang, BTF kept).
//!
//! - [`trace`]: the `ebpf-trace` backend (raw_syscalls tracepoints filtered by cgroup id, events
//!   through a ring buffer with batched wakeups); it observes every syscall, and enforces `crash`
//!   rules with `bpf_send_signal` at `sys_enter`.
//! - [`cgroup`]: the `ebpf-cgroup` enforcement backend (connect faults decided by cgroup/connect4 and
//!   cgroup/connect6 programs attached to a service's cgroup).
//!
//! - [`faults`]: the in-kernel fault programs of the `ebpf-override` (kprobe + `bpf_override_return`)
//!   and `ebpf-lsm` (BPF LSM hooks) backends, with cgroup, rule and path maps.
//!
//! Each backend's registry face and probe row sit beside it: [`crash`] (`ebpf-trace`),
//! [`cgroup_backend`] (`ebpf-cgroup`), [`override_backend`] (`ebpf-override`), [`lsm_backend`]
//! (`ebpf-lsm`).

pub mod cgroup;
pub(crate) mod cgroup_backend;
pub(crate) mod crash;
pub(crate) mod faults;
mod fd_paths;
pub(crate) mod lsm_backend;
pub(crate) mod override_backend;
mod records;
pub mod trace;

pub(crate) use cgroup_backend::CgroupBackend;
pub(crate) use crash::CrashBackend;
pub use crash::ebpf_trace_unavailable;
pub(crate) use lsm_backend::LsmBackend;
pub(crate) use override_backend::OverrideBackend;

/// The first line of an error's text (aya errors may append a multi-line verifier log).
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    let first = text.lines().next().unwrap_or_default().trim_end();
    first.trim_end_matches(['.', ':']).to_owned()
}
