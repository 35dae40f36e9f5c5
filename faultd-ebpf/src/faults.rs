//! Types shared with `bpf/faults.bpf.c` (the ebpf-override and ebpf-lsm backends' programs).
//!
//! The C side (`bpf/faults.h`) pins the same layout with `_Static_assert`s; the tests below pin this
//! side.

/// The kprobe attached to each faulted syscall's entry (`bpf_override_return`).
pub const ENTRY_PROGRAM: &str = "fd_fault_entry";
/// `lsm/file_open`: remembers the path of files targeted cgroups open; decides open rules.
pub const OPEN_PROGRAM: &str = "fd_fault_open";
/// `lsm/file_free_security`: forgets a file.
pub const FILE_FREE_PROGRAM: &str = "fd_fault_file_free";
/// `lsm/file_permission`: decides read and write families (ebpf-lsm).
pub const PERM_PROGRAM: &str = "fd_fault_perm";
/// The ebpf-lsm programs of path and socket operations: (program, LSM hook, the syscalls it decides).
/// `unlinkat` reaches `inode_unlink` or, with `AT_REMOVEDIR`, `inode_rmdir`.
pub const OP_PROGRAMS: [(&str, &str, &[&str]); 7] = [
    ("fd_fault_unlink", "inode_unlink", &["unlink", "unlinkat"]),
    ("fd_fault_rmdir", "inode_rmdir", &["rmdir", "unlinkat"]),
    ("fd_fault_mkdir", "inode_mkdir", &["mkdir", "mkdirat"]),
    (
        "fd_fault_rename",
        "inode_rename",
        &["rename", "renameat", "renameat2"],
    ),
    ("fd_fault_path_truncate", "path_truncate", &["truncate"]),
    ("fd_fault_file_truncate", "file_truncate", &["ftruncate"]),
    ("fd_fault_connect", "socket_connect", &["connect"]),
];
/// cgroup id (`u64`) → `u32` (1): the targeted cgroups.
pub const CGROUPS_MAP: &str = "fd_fault_cgroups";
/// [`FaultKey`] → [`FaultEntry`].
pub const RULES_MAP: &str = "fd_fault_rules";
/// Array of [`Glob`]s, [`GLOBS`] slots.
pub const GLOBS_MAP: &str = "fd_fault_globs";
/// Array of [`Rng`]s, [`RNGS`] slots.
pub const RNGS_MAP: &str = "fd_fault_rngs";
/// [`HitKey`] → [`HitValue`].
pub const HITS_MAP: &str = "fd_fault_hits";
/// Array with one [`FaultState`].
pub const STATE_MAP: &str = "fd_fault_state";
/// struct file address (`u64`) → the path as opened and its glob mask.
pub const FILES_MAP: &str = "fd_fault_files";
/// Ring buffer of [`FaultEvent`]s.
pub const EVENTS_MAP: &str = "fd_fault_events";

/// Rules per (cgroup, syscall) entry.
pub const RULES_PER_ENTRY: usize = 8;
/// Glob slots.
pub const GLOBS: usize = 16;
/// Random-source slots (one per fault set with a probability).
pub const RNGS: usize = 256;
/// Longest path kept for a file, NUL included.
pub const PATH_MAX: usize = 256;

/// [`FaultRule::hook`]: the kprobe at the syscall's entry.
pub const HOOK_ENTRY: u8 = 1;
/// [`FaultRule::hook`]: `lsm/file_open`.
pub const HOOK_OPEN: u8 = 2;
/// [`FaultRule::hook`]: `lsm/file_permission`.
pub const HOOK_PERM: u8 = 3;
/// [`FaultRule::hook`]: the LSM hook of a path or socket operation ([`OP_PROGRAMS`]).
pub const HOOK_OP: u8 = 4;
/// [`FaultRule::threshold`]: no draw.
pub const ALWAYS: u64 = u64::MAX;
/// [`FaultEntry::fd_arg`]: no fd argument.
pub const NO_FD: u8 = 0xff;

/// One rule as a hook sees it (`struct fd_fault_rule`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultRule {
    /// faultd's rule id.
    pub rule_id: u32,
    /// Positive errno; 0 allows.
    pub errno: i32,
    /// [`ALWAYS`], or fires when the draw (`splitmix64 >> 11`) is below it.
    pub threshold: u64,
    /// 0: no path filter; n: glob slot n - 1.
    pub glob: u16,
    /// The fault set's random-source slot.
    pub rng: u16,
    /// `HOOK_*`.
    pub hook: u8,
    /// Zero.
    pub _pad: [u8; 3],
}

/// A syscall of one cgroup (`struct fd_fault_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultKey {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Syscall number.
    pub nr: u32,
    /// Zero.
    pub _pad: u32,
}

/// The rules of a key, in precedence order (`struct fd_fault_entry`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultEntry {
    /// The first `count` are used.
    pub rules: [FaultRule; RULES_PER_ENTRY],
    /// Rules used.
    pub count: u32,
    /// Index of the fd argument, or [`NO_FD`].
    pub fd_arg: u8,
    /// Zero.
    pub _pad: [u8; 3],
}

/// A glob compiled to a bit-parallel NFA (`struct fd_glob`; see `faults.h`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Glob {
    /// Bit i: token i consumes the byte.
    pub consume: [u64; 256],
    /// Bit i: the star before state i consumes the byte.
    pub loop_: [u64; 256],
    /// Bit i: token i may match nothing.
    pub eps1: u64,
    /// Bit i: tokens i and i + 1 (`**` and `/`) may match nothing.
    pub eps2: u64,
    /// The final state's bit; 0 for an unused slot.
    pub accept: u64,
    /// Zero.
    pub _pad: u64,
}

impl Default for Glob {
    fn default() -> Self {
        Glob {
            consume: [0; 256],
            loop_: [0; 256],
            eps1: 0,
            eps2: 0,
            accept: 0,
            _pad: 0,
        }
    }
}

/// A fault set's draws (`struct fd_rng`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rng {
    /// The fault set's seed.
    pub seed: u64,
    /// Draws taken.
    pub next: u64,
}

/// A rule of one cgroup (`struct fd_hit_key`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct HitKey {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// faultd's rule id.
    pub rule_id: u32,
    /// Zero.
    pub _pad: u32,
}

/// Matches and hits counted in the kernel (`struct fd_hit_value`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HitValue {
    /// Times the rule matched.
    pub matches: u64,
    /// Times it decided.
    pub hits: u64,
}

/// The single entry of `fd_fault_state` (`struct fd_fault_state`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultState {
    /// Bumped when a glob slot changes.
    pub glob_gen: u64,
    /// Bit n: glob slot n is in use.
    pub globs: u64,
}

/// One decision (`struct fd_fault_event`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultEvent {
    /// cgroup v2 id of the caller.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` of the decision.
    pub ts_ns: u64,
    /// Thread group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Syscall number.
    pub nr: u32,
    /// The deciding rule.
    pub rule_id: u32,
    /// The errno returned, 0 for an allow.
    pub errno: i32,
    /// `HOOK_*` that decided.
    pub hook: u32,
    /// The file's path as opened, NUL-terminated; empty when unknown.
    pub path: [u8; PATH_MAX],
}

impl FaultEvent {
    /// Reads an event from a ring-buffer record; `None` if it is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<FaultEvent> {
        if bytes.len() < size_of::<FaultEvent>() {
            return None;
        }
        // SAFETY: the length is checked, FaultEvent is plain old data valid for any bit pattern, and
        // read_unaligned has no alignment requirement.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FaultEvent>()) })
    }

    /// The path, when the event has one.
    pub fn path(&self) -> Option<String> {
        let end = self.path.iter().position(|b| *b == 0).unwrap_or(PATH_MAX);
        (end > 0).then(|| String::from_utf8_lossy(&self.path[..end]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_faults_h() {
        assert_eq!(size_of::<FaultRule>(), 24);
        assert_eq!(offset_of!(FaultRule, threshold), 8);
        assert_eq!(offset_of!(FaultRule, glob), 16);
        assert_eq!(offset_of!(FaultRule, rng), 18);
        assert_eq!(offset_of!(FaultRule, hook), 20);
        assert_eq!(size_of::<FaultKey>(), 16);
        assert_eq!(size_of::<FaultEntry>(), 200);
        assert_eq!(offset_of!(FaultEntry, count), 192);
        assert_eq!(offset_of!(FaultEntry, fd_arg), 196);
        assert_eq!(size_of::<Glob>(), 4128);
        assert_eq!(offset_of!(Glob, eps1), 4096);
        assert_eq!(size_of::<Rng>(), 16);
        assert_eq!(size_of::<HitKey>(), 16);
        assert_eq!(size_of::<HitValue>(), 16);
        assert_eq!(size_of::<FaultState>(), 16);
        assert_eq!(size_of::<FaultEvent>(), 40 + 256);
        assert_eq!(offset_of!(FaultEvent, path), 40);
    }

    #[test]
    fn header_constants_match() {
        let h = include_str!("bpf/faults.h");
        for line in [
            "#define FD_FAULT_RULES 8",
            "#define FD_FAULT_GLOBS 16",
            "#define FD_FAULT_RNGS 256",
            "#define FD_FAULT_PATH 256",
            "#define FD_HOOK_ENTRY 1",
            "#define FD_HOOK_OPEN 2",
            "#define FD_HOOK_PERM 3",
            "#define FD_HOOK_OP 4",
            "#define FD_NO_FD 0xffu",
        ] {
            assert!(h.contains(line), "faults.h lacks {line:?}");
        }
    }

    #[test]
    fn the_object_has_the_programs_and_maps() {
        let elf = crate::FAULTS_OBJ;
        for name in [
            ENTRY_PROGRAM,
            OPEN_PROGRAM,
            FILE_FREE_PROGRAM,
            PERM_PROGRAM,
            CGROUPS_MAP,
            RULES_MAP,
            GLOBS_MAP,
            RNGS_MAP,
            HITS_MAP,
            STATE_MAP,
            FILES_MAP,
            EVENTS_MAP,
        ]
        .into_iter()
        .chain(OP_PROGRAMS.iter().map(|(program, ..)| *program))
        {
            assert!(
                elf.windows(name.len()).any(|w| w == name.as_bytes()),
                "{name} is not in faults.bpf.o"
            );
        }
    }

    #[test]
    fn events_decode_their_path() {
        let mut e = FaultEvent {
            cgroup_id: 1,
            ts_ns: 2,
            pid: 3,
            tid: 4,
            nr: 1,
            rule_id: 7,
            errno: 5,
            hook: HOOK_ENTRY as u32,
            path: [0; PATH_MAX],
        };
        assert_eq!(e.path(), None);
        e.path[..6].copy_from_slice(b"/a/b.x");
        // SAFETY: FaultEvent is repr(C) plain integers and bytes without padding.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const e).cast::<u8>(), size_of::<FaultEvent>())
        };
        let back = FaultEvent::from_bytes(bytes).unwrap();
        assert_eq!(back.path().as_deref(), Some("/a/b.x"));
        assert_eq!(back.rule_id, 7);
        assert!(FaultEvent::from_bytes(&bytes[..100]).is_none());
    }
}
