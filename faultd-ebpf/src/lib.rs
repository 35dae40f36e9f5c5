//! faultd's eBPF programs and the types shared with them.
//!
//! The programs are C (`src/bpf/*.bpf.c`, libbpf headers), compiled by clang from `build.rs` into ELF
//! objects with BTF; each is exposed as an 8-byte-aligned byte slice ([`TRACE_OBJ`], …) that faultd
//! loads with aya. The `#[repr(C)]` types below mirror `src/bpf/faultd.h`; both sides pin the layout
//! (`_Static_assert` in C, the tests here in Rust).

/// `include_bytes!` with the bytes aligned to 8, as ELF parsers expect.
macro_rules! include_bytes_aligned {
    ($path:expr) => {{
        #[repr(C)]
        struct Aligned<Bytes: ?Sized> {
            _align: [u64; 0],
            bytes: Bytes,
        }
        const ALIGNED: &Aligned<[u8]> = &Aligned {
            _align: [],
            bytes: *include_bytes!($path),
        };
        &ALIGNED.bytes
    }};
}

include!(concat!(env!("OUT_DIR"), "/objects.rs"));

/// The name of syscall `nr` on the host architecture (any syscall, not only those faultd can fault).
pub fn syscall_name(nr: u32) -> Option<&'static str> {
    SYSCALL_NAMES
        .get(nr as usize)
        .copied()
        .filter(|n| !n.is_empty())
}

/// Types, programs and maps of [`CGROUP_OBJ`] (the ebpf-cgroup backend's connect programs).
pub mod cgroup;

/// Types, programs and maps of [`FAULTS_OBJ`] (the ebpf-override and ebpf-lsm backends).
pub mod faults;

/// Names of the programs, maps and attach points of [`TRACE_OBJ`].
pub mod trace {
    /// The `raw_tracepoint/sys_enter` program.
    pub const PROG_ENTER: &str = "fd_trace_enter";
    /// The `raw_tracepoint/sys_exit` program.
    pub const PROG_EXIT: &str = "fd_trace_exit";
    /// Hash map: target cgroup id (`u64`) → `TARGET_*` bits (`u32`).
    pub const MAP_TARGETS: &str = "fd_targets";
    /// Hash map: [`CrashKey`](crate::CrashKey) → [`CrashValue`](crate::CrashValue).
    pub const MAP_CRASH: &str = "fd_crash";
    /// Capacity of [`MAP_CRASH`].
    pub const MAX_CRASH: u32 = 4096;
    /// LRU hash: tid → [`TraceStart`](crate::TraceStart).
    pub const MAP_STARTS: &str = "fd_starts";
    /// Ring buffer of [`TraceEvent`](crate::TraceEvent)s.
    pub const MAP_EVENTS: &str = "fd_events";
    /// Array map with one [`TraceConfig`](crate::TraceConfig) at [`CONFIG_KEY`](crate::CONFIG_KEY).
    pub const MAP_CONFIG: &str = "fi_config";
    /// Per-CPU array, one `u64` at key 0: events lost because the ring was full.
    pub const MAP_LOST: &str = "fd_lost";
    /// Capacity of [`MAP_TARGETS`].
    pub const MAX_TARGETS: u32 = 4096;
}

/// [`TraceEvent::flags`]: the event carries a return value (its `sys_exit` was seen).
pub const TRACE_HAS_RETVAL: u32 = 1;
/// [`TraceEvent::flags`]: `fd_trace_enter` sent a crash signal at this syscall's entry (`fd_crash`);
/// the event has no return value, [`TraceEvent::retval`] holds the signal and
/// [`TraceEvent::latency_ns`] the rule id.
pub const TRACE_CRASH: u32 = 2;
/// `fd_targets` bit: trace every syscall of the cgroup.
pub const TARGET_TRACE: u32 = 1;
/// `fd_targets` bit: look the cgroup's syscalls up in `fd_crash`.
pub const TARGET_CRASH: u32 = 2;
/// Ring-buffer fill level (bytes) at which the programs wake the reader unless configured otherwise.
pub const TRACE_WAKEUP_BYTES_DEFAULT: u64 = 64 * 1024;
/// The key of the single entry of the `fi_config` map.
pub const CONFIG_KEY: u32 = 0;

/// One traced syscall (`struct fd_trace_event`), produced at `sys_exit`, or at `sys_enter` for the
/// syscalls that never return (`exit`, `exit_group`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceEvent {
    /// cgroup v2 id (the inode of the cgroup directory) of the calling task.
    pub cgroup_id: u64,
    /// From `sys_enter` to `sys_exit`; 0 without a return value.
    pub latency_ns: u64,
    /// Return value (`-errno` on failure); meaningful with [`TRACE_HAS_RETVAL`].
    pub retval: i64,
    /// Thread group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Syscall number.
    pub nr: u32,
    /// `TRACE_*` flags.
    pub flags: u32,
    /// `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) when the event was produced (at `sys_exit`, or at
    /// `sys_enter` for crash and exit records).
    pub ts_ns: u64,
    /// `bpf_ktime_get_ns()` at `sys_enter`; 0 when `sys_enter` was not seen (seccomp failed the call).
    pub enter_ns: u64,
    /// The first argument (the fd of fd syscalls).
    pub arg0: i64,
}

impl TraceEvent {
    /// Decodes a ring-buffer record; `None` if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<TraceEvent> {
        if bytes.len() < size_of::<TraceEvent>() {
            return None;
        }
        // SAFETY: the slice holds at least size_of::<TraceEvent>() bytes, the read is unaligned, and
        // every bit pattern is a valid TraceEvent (plain integers).
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<TraceEvent>()) })
    }

    /// The path argument of a successful open that follows the record in the ring (`struct
    /// fd_trace_event_path`), as the caller gave it.
    pub fn path_of(bytes: &[u8]) -> Option<&[u8]> {
        let rest = bytes.get(size_of::<TraceEvent>()..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        (end > 0).then(|| &rest[..end])
    }

    /// The return value, if the event carries one.
    pub fn retval(&self) -> Option<i64> {
        (self.flags & TRACE_HAS_RETVAL != 0).then_some(self.retval)
    }
}

/// What the programs keep per thread between `sys_enter` and `sys_exit` (`struct fd_trace_start`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceStart {
    /// `bpf_ktime_get_ns()` at entry.
    pub ts_ns: u64,
    /// Syscall number.
    pub nr: u32,
    /// Padding.
    pub _pad: u32,
    /// The first argument.
    pub arg0: i64,
}

/// The tracer's configuration (`struct fd_trace_config`, the single entry of `fi_config`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceConfig {
    /// Fill level (bytes) at which a producer wakes the reader; 0 = [`TRACE_WAKEUP_BYTES_DEFAULT`].
    pub wakeup_bytes: u64,
}

/// A syscall of one cgroup that crashes its caller (`struct fd_crash_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct CrashKey {
    /// cgroup v2 id of the calling task.
    pub cgroup_id: u64,
    /// Syscall number.
    pub nr: u32,
    /// Zero.
    pub _pad: u32,
}

/// What `fd_trace_enter` does at a [`CrashKey`] (`struct fd_crash_value`): send `signal`, every time.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CrashValue {
    /// Signal number.
    pub signal: u32,
    /// The rule the entry comes from.
    pub rule_id: u32,
    /// Signals sent (added by the program).
    pub hits: u64,
}

impl TraceEvent {
    /// For a [`TRACE_CRASH`] event: the signal sent and the rule id.
    pub fn crash(&self) -> Option<(i32, u32)> {
        (self.flags & TRACE_CRASH != 0).then_some((self.retval as i32, self.latency_ns as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn trace_event_layout_matches_faultd_h() {
        assert_eq!(size_of::<TraceEvent>(), 64);
        assert_eq!(offset_of!(TraceEvent, enter_ns), 48);
        assert_eq!(offset_of!(TraceEvent, arg0), 56);
        assert_eq!(align_of::<TraceEvent>(), 8);
        assert_eq!(offset_of!(TraceEvent, cgroup_id), 0);
        assert_eq!(offset_of!(TraceEvent, latency_ns), 8);
        assert_eq!(offset_of!(TraceEvent, retval), 16);
        assert_eq!(offset_of!(TraceEvent, pid), 24);
        assert_eq!(offset_of!(TraceEvent, tid), 28);
        assert_eq!(offset_of!(TraceEvent, nr), 32);
        assert_eq!(offset_of!(TraceEvent, flags), 36);
        assert_eq!(offset_of!(TraceEvent, ts_ns), 40);
    }

    #[test]
    fn trace_start_and_config_layout_match_faultd_h() {
        assert_eq!(size_of::<TraceStart>(), 24);
        assert_eq!(offset_of!(TraceStart, arg0), 16);
        assert_eq!(align_of::<TraceStart>(), 8);
        assert_eq!(offset_of!(TraceStart, ts_ns), 0);
        assert_eq!(offset_of!(TraceStart, nr), 8);
        assert_eq!(size_of::<TraceConfig>(), 8);
        assert_eq!(offset_of!(TraceConfig, wakeup_bytes), 0);
    }

    #[test]
    fn crash_key_and_value_layout_match_faultd_h() {
        assert_eq!(size_of::<CrashKey>(), 16);
        assert_eq!(align_of::<CrashKey>(), 8);
        assert_eq!(offset_of!(CrashKey, cgroup_id), 0);
        assert_eq!(offset_of!(CrashKey, nr), 8);
        assert_eq!(size_of::<CrashValue>(), 16);
        assert_eq!(offset_of!(CrashValue, signal), 0);
        assert_eq!(offset_of!(CrashValue, rule_id), 4);
        assert_eq!(offset_of!(CrashValue, hits), 8);
        let e = TraceEvent {
            retval: 9,
            latency_ns: 7,
            flags: TRACE_CRASH,
            ..TraceEvent::default()
        };
        assert_eq!(e.crash(), Some((9, 7)));
        assert_eq!(e.retval(), None);
    }

    #[test]
    fn header_constants_match() {
        let h = include_str!("bpf/faultd.h");
        assert!(h.contains("#define FD_TRACE_HAS_RETVAL 1u"));
        assert!(h.contains("#define FD_TRACE_WAKEUP_BYTES_DEFAULT (64u * 1024u)"));
        assert!(h.contains("#define FD_CONFIG_KEY 0u"));
        assert!(h.contains("#define FD_TRACE_CRASH 2u"));
        assert!(h.contains("#define FD_TARGET_TRACE 1u"));
        assert!(h.contains("#define FD_TARGET_CRASH 2u"));
        assert_eq!(TRACE_WAKEUP_BYTES_DEFAULT, 64 * 1024);
    }

    #[test]
    fn names_every_x86_64_syscall() {
        assert_eq!(syscall_name(0), Some("read"));
        assert_eq!(syscall_name(59), Some("execve"));
        assert_eq!(syscall_name(231), Some("exit_group"));
        assert_eq!(syscall_name(262), Some("newfstatat"));
        assert_eq!(syscall_name(100_000), None);
    }

    #[test]
    fn decodes_a_record() {
        let e = TraceEvent {
            cgroup_id: 7,
            latency_ns: 1234,
            retval: -5,
            pid: 10,
            tid: 11,
            nr: 1,
            flags: TRACE_HAS_RETVAL,
            ts_ns: 99,
            enter_ns: 98,
            arg0: 3,
        };
        // SAFETY: TraceEvent is repr(C) plain integers without padding; viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<TraceEvent>())
        };
        let mut record = bytes.to_vec();
        record.extend([0u8; 8]); // ring records may be padded
        assert_eq!(TraceEvent::from_bytes(&record), Some(e));
        assert_eq!(TraceEvent::from_bytes(&record[..63]), None);
        assert_eq!(e.retval(), Some(-5));
    }

    #[test]
    fn objects_are_aligned_elf_with_btf_and_the_named_programs() {
        assert!(!OBJECTS.is_empty());
        for (name, obj) in OBJECTS {
            assert_eq!(obj.as_ptr() as usize % 8, 0, "{name} is not 8-byte aligned");
            assert_eq!(&obj[..4], b"\x7fELF", "{name} is not ELF");
            let has = |needle: &[u8]| obj.windows(needle.len()).any(|w| w == needle);
            assert!(has(b".BTF\0"), "{name} has no BTF");
        }
        let has = |needle: &str| {
            TRACE_OBJ
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        };
        for symbol in [
            trace::PROG_ENTER,
            trace::PROG_EXIT,
            trace::MAP_TARGETS,
            trace::MAP_STARTS,
            trace::MAP_EVENTS,
            trace::MAP_CONFIG,
            trace::MAP_LOST,
            trace::MAP_CRASH,
        ] {
            assert!(has(symbol), "TRACE_OBJ lacks {symbol}");
        }
    }
}
