/* Types shared between faultd's eBPF programs and userspace (faultd-ebpf/src/lib.rs mirrors them;
 * both sides pin the layout: _Static_assert here, size/align/offset tests there). */
#ifndef FAULTD_H
#define FAULTD_H

#include <linux/types.h>

/* ---- ebpf-trace ----------------------------------------------------------------------------- */

/* fd_trace_event.flags: the event carries the syscall's return value (sys_exit was seen). */
#define FD_TRACE_HAS_RETVAL 1u
/* fd_trace_event.flags: fd_trace_enter sent a crash signal (fd_crash) at this syscall's entry; such an
 * event has no return value, `retval` holds the signal number and `latency_ns` the rule id. */
#define FD_TRACE_CRASH 2u

/* fd_targets values (bits): trace every syscall of the cgroup; look its syscalls up in fd_crash. */
#define FD_TARGET_TRACE 1u
#define FD_TARGET_CRASH 2u

/* Default ring-buffer fill level (bytes) at which the producer wakes the reader. */
#define FD_TRACE_WAKEUP_BYTES_DEFAULT (64u * 1024u)

/* One traced syscall, produced at sys_exit (or at sys_enter for syscalls that never return). */
struct fd_trace_event {
	__u64 cgroup_id;  /* cgroup v2 id (= inode of the cgroup dir) of the calling task */
	__u64 latency_ns; /* sys_enter → sys_exit, 0 without a return value */
	__s64 retval;     /* return value (-errno on failure), valid with FD_TRACE_HAS_RETVAL */
	__u32 pid;        /* thread group id */
	__u32 tid;        /* thread id */
	__u32 nr;         /* syscall number */
	__u32 flags;      /* FD_TRACE_* */
	__u64 ts_ns;      /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) when the event was produced */
	__u64 enter_ns;   /* bpf_ktime_get_ns() at sys_enter; 0 when sys_enter was not seen */
	__s64 arg0;       /* the first argument (the fd of fd syscalls) */
};

/* A successful open/openat/openat2/creat: the record followed by the path argument as the caller
 * gave it (NUL-terminated, possibly relative to the cwd or dirfd). */
#define FD_TRACE_PATH_MAX 256
struct fd_trace_event_path {
	struct fd_trace_event event;
	char path[FD_TRACE_PATH_MAX];
};

/* Kept per thread between sys_enter and sys_exit (map fd_starts, key: tid). */
struct fd_trace_start {
	__u64 ts_ns;
	__u32 nr;
	__u32 _pad;
	__s64 arg0;
};

/* fd_crash key: a syscall of one cgroup that crashes its caller. */
struct fd_crash_key {
	__u64 cgroup_id;
	__u32 nr;
	__u32 _pad; /* zero */
};

/* fd_crash value: the signal to send (every time the syscall is entered) and the rule it comes from. */
struct fd_crash_value {
	__u32 signal;
	__u32 rule_id;
	__u64 hits; /* signals sent, added atomically by fd_trace_enter */
};

/* fi_config: an array map with one entry, key FD_CONFIG_KEY. */
#define FD_CONFIG_KEY 0u
struct fd_trace_config {
	__u64 wakeup_bytes; /* 0 = FD_TRACE_WAKEUP_BYTES_DEFAULT */
};

_Static_assert(sizeof(struct fd_trace_event) == 64, "fd_trace_event size");
_Static_assert(_Alignof(struct fd_trace_event) == 8, "fd_trace_event align");
_Static_assert(__builtin_offsetof(struct fd_trace_event, cgroup_id) == 0, "cgroup_id");
_Static_assert(__builtin_offsetof(struct fd_trace_event, latency_ns) == 8, "latency_ns");
_Static_assert(__builtin_offsetof(struct fd_trace_event, retval) == 16, "retval");
_Static_assert(__builtin_offsetof(struct fd_trace_event, pid) == 24, "pid");
_Static_assert(__builtin_offsetof(struct fd_trace_event, tid) == 28, "tid");
_Static_assert(__builtin_offsetof(struct fd_trace_event, nr) == 32, "nr");
_Static_assert(__builtin_offsetof(struct fd_trace_event, flags) == 36, "flags");
_Static_assert(__builtin_offsetof(struct fd_trace_event, ts_ns) == 40, "ts_ns");
_Static_assert(__builtin_offsetof(struct fd_trace_event, enter_ns) == 48, "enter_ns");
_Static_assert(__builtin_offsetof(struct fd_trace_event, arg0) == 56, "arg0");
_Static_assert(sizeof(struct fd_trace_event_path) == 64 + 256, "fd_trace_event_path size");
_Static_assert(sizeof(struct fd_trace_start) == 24, "fd_trace_start size");
_Static_assert(__builtin_offsetof(struct fd_trace_start, arg0) == 16, "fd_trace_start.arg0");
_Static_assert(__builtin_offsetof(struct fd_trace_start, nr) == 8, "fd_trace_start.nr");
_Static_assert(sizeof(struct fd_trace_config) == 8, "fd_trace_config size");
_Static_assert(sizeof(struct fd_crash_key) == 16, "fd_crash_key size");
_Static_assert(__builtin_offsetof(struct fd_crash_key, nr) == 8, "fd_crash_key.nr");
_Static_assert(sizeof(struct fd_crash_value) == 16, "fd_crash_value size");
_Static_assert(__builtin_offsetof(struct fd_crash_value, rule_id) == 4, "fd_crash_value.rule_id");
_Static_assert(__builtin_offsetof(struct fd_crash_value, hits) == 8, "fd_crash_value.hits");

#endif
