/* Types shared between faults.bpf.c (the ebpf-override and ebpf-lsm backends) and userspace
 * (faultd-ebpf/src/faults.rs mirrors them; both sides pin the layout). */
#ifndef FAULTD_FAULTS_H
#define FAULTD_FAULTS_H

#include <linux/types.h>

/* Rules per (cgroup, syscall) entry, globs in the object, fault-set random sources. */
#define FD_FAULT_RULES 8
#define FD_FAULT_GLOBS 16
#define FD_FAULT_RNGS 256
/* Longest path the programs keep for a file (bpf_d_path's buffer, NUL included). */
#define FD_FAULT_PATH 256

/* fd_fault_rule.hook: which program decides the rule. */
#define FD_HOOK_ENTRY 1 /* kprobe on the syscall's entry, bpf_override_return (ebpf-override) */
#define FD_HOOK_OPEN 2  /* lsm/file_open: an open decided on the path the kernel resolved */
#define FD_HOOK_PERM 3  /* lsm/file_permission: read/write families (ebpf-lsm) */
#define FD_HOOK_OP 4    /* the LSM hook of a path or socket operation: unlink, rmdir, mkdir, rename,
			 * truncate, ftruncate, connect (ebpf-lsm) */

/* fd_fault_rule.threshold: no draw, the rule fires every time it matches. */
#define FD_ALWAYS 0xffffffffffffffffull
/* fd_fault_entry.fd_arg: the syscall has no fd argument. */
#define FD_NO_FD 0xffu

/* One rule as a hook sees it. It matches when its glob (if any) matched the file's path; it then fires
 * when the fault set's seeded draw is below `threshold` (ceil(p * 2^53)), or always. */
struct fd_fault_rule {
	__u32 rule_id;
	__s32 errno_;     /* positive errno to fail with; 0 lets the call through (allow) */
	__u64 threshold;  /* FD_ALWAYS, or fires when (splitmix64 >> 11) < threshold */
	__u16 glob;       /* 0: no path filter; n: glob slot n - 1 must match */
	__u16 rng;        /* fault set's slot in fd_fault_rngs */
	__u8 hook;        /* FD_HOOK_* */
	__u8 _pad[3];
};

/* fd_fault_rules key: a syscall of one cgroup. */
struct fd_fault_key {
	__u64 cgroup_id;
	__u32 nr;
	__u32 _pad;
};

/* fd_fault_rules value: the rules for the key, in precedence order. */
struct fd_fault_entry {
	struct fd_fault_rule rules[FD_FAULT_RULES];
	__u32 count;
	__u8 fd_arg; /* index of the fd argument (the file a glob is matched against), or FD_NO_FD */
	__u8 _pad[3];
};

/* A glob compiled to a bit-parallel NFA over its tokens (state i: the first i tokens matched).
 * On byte c, states advance through `consume[c]` (bit i: token i takes c) and stay through
 * `loop[c]` (bit i: a star before state i takes c); then `eps1` (bit i: token i is a star that may
 * match nothing) lets state i reach i + 1 and `eps2` (a `**` token between slashes) reaches i + 2. */
struct fd_glob {
	__u64 consume[256];
	__u64 loop[256];
	__u64 eps1;
	__u64 eps2;
	__u64 accept; /* the final state's bit; 0 for an unused slot */
	__u64 _pad;
};

/* A fault set's draws: the same SplitMix64 sequence as faultd's seeded source. */
struct fd_rng {
	__u64 seed;
	__u64 next;
};

/* fd_fault_hits key and value: matches and hits of one rule of one cgroup. */
struct fd_hit_key {
	__u64 cgroup_id;
	__u32 rule_id;
	__u32 _pad;
};
struct fd_hit_value {
	__u64 matches;
	__u64 hits;
};

/* The single entry of fd_fault_state. */
struct fd_fault_state {
	__u64 glob_gen; /* bumped when a glob slot changes: cached file masks are recomputed */
	__u64 globs;    /* bit n: glob slot n is in use */
};

/* fd_fault_files value, keyed by the struct file's address: the path as opened (bpf_d_path at
 * file_open) and which globs it matched at generation `gen`. */
struct fd_fault_file {
	__u64 gen;
	__u64 mask;
	char path[FD_FAULT_PATH];
};

/* One decision, for the trace. */
struct fd_fault_event {
	__u64 cgroup_id;
	__u64 ts_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u32 pid;
	__u32 tid;
	__u32 nr;
	__u32 rule_id;
	__s32 errno_;
	__u32 hook;
	char path[FD_FAULT_PATH]; /* the file's path as opened; empty when unknown */
};

_Static_assert(sizeof(struct fd_fault_rule) == 24, "fd_fault_rule size");
_Static_assert(__builtin_offsetof(struct fd_fault_rule, threshold) == 8, "threshold");
_Static_assert(__builtin_offsetof(struct fd_fault_rule, glob) == 16, "glob");
_Static_assert(__builtin_offsetof(struct fd_fault_rule, rng) == 18, "rng");
_Static_assert(__builtin_offsetof(struct fd_fault_rule, hook) == 20, "hook");
_Static_assert(sizeof(struct fd_fault_key) == 16, "fd_fault_key size");
_Static_assert(sizeof(struct fd_fault_entry) == 200, "fd_fault_entry size");
_Static_assert(__builtin_offsetof(struct fd_fault_entry, count) == 192, "count");
_Static_assert(__builtin_offsetof(struct fd_fault_entry, fd_arg) == 196, "fd_arg");
_Static_assert(sizeof(struct fd_glob) == 4128, "fd_glob size");
_Static_assert(__builtin_offsetof(struct fd_glob, eps1) == 4096, "eps1");
_Static_assert(sizeof(struct fd_rng) == 16, "fd_rng size");
_Static_assert(sizeof(struct fd_hit_key) == 16, "fd_hit_key size");
_Static_assert(sizeof(struct fd_hit_value) == 16, "fd_hit_value size");
_Static_assert(sizeof(struct fd_fault_state) == 16, "fd_fault_state size");
_Static_assert(sizeof(struct fd_fault_file) == 16 + 256, "fd_fault_file size");
_Static_assert(sizeof(struct fd_fault_event) == 40 + 256, "fd_fault_event size");
_Static_assert(__builtin_offsetof(struct fd_fault_event, path) == 40, "event path");

#endif
