// SPDX-License-Identifier: GPL-2.0
/* ebpf-trace: every syscall of the target cgroups, with return value and latency, through a ring
 * buffer with batched wakeups; and crash rules: bpf_send_signal at the entry of a chosen syscall of a
 * target cgroup (fd_crash). Contexts are read untyped (aya 0.14 cannot relocate ctx->args[n]). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "faultd.h"

char LICENSE[] SEC("license") = "GPL";

#if defined(__TARGET_ARCH_x86)
#include <asm/ptrace.h>
#define NR_EXIT 60
#define NR_EXIT_GROUP 231
/* offset of orig_ax in the kernel's struct pt_regs (orig_rax in the uapi copy of the same layout) */
#define FD_PT_REGS_ORIG_AX __builtin_offsetof(struct pt_regs, orig_rax)
_Static_assert(FD_PT_REGS_ORIG_AX == 120, "x86_64 pt_regs.orig_ax");
#define FD_PT_REGS_DI __builtin_offsetof(struct pt_regs, rdi)
#define FD_PT_REGS_SI __builtin_offsetof(struct pt_regs, rsi)
#define NR_OPEN 2
#define NR_CREAT 85
#define NR_OPENAT 257
#define NR_OPENAT2 437
_Static_assert(FD_PT_REGS_DI == 112, "x86_64 pt_regs.di");
#else
#error "faultd's tracer knows the syscall registers of x86_64 only"
#endif

/* Target cgroup ids → FD_TARGET_* bits. Filled by faultd per session service. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} fd_targets SEC(".maps");

/* {cgroup id, syscall nr} → signal and rule: crash rules, looked up only for FD_TARGET_CRASH cgroups. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fd_crash_key);
	__type(value, struct fd_crash_value);
} fd_crash SEC(".maps");

/* tid → enter timestamp and nr of the syscall in progress. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fd_trace_start);
} fd_starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} fd_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fd_trace_config);
} fi_config SEC(".maps");

/* Events lost because the ring was full, per CPU (one entry, key 0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fd_lost SEC(".maps");

static __always_inline __u64 wakeup_flags(void)
{
	__u32 key = FD_CONFIG_KEY;
	__u64 threshold = FD_TRACE_WAKEUP_BYTES_DEFAULT;
	struct fd_trace_config *cfg = bpf_map_lookup_elem(&fi_config, &key);

	if (cfg && cfg->wakeup_bytes)
		threshold = cfg->wakeup_bytes;
	return bpf_ringbuf_query(&fd_events, BPF_RB_AVAIL_DATA) >= threshold ? BPF_RB_FORCE_WAKEUP
									     : BPF_RB_NO_WAKEUP;
}

/* The first syscall argument, from the saved user registers. */
static __always_inline __s64 first_arg(void *ctx)
{
	__s64 arg0 = 0;
	void *regs = (void *)((__u64 *)ctx)[0];

	bpf_probe_read_kernel(&arg0, sizeof(arg0), regs + FD_PT_REGS_DI);
	return arg0;
}

static __always_inline void submit(__u64 cgroup_id, __u64 id, __u32 nr, __s64 retval,
				   __u64 latency, __u32 flags, __u64 now, __u64 enter,
				   __s64 arg0)
{
	struct fd_trace_event *e = bpf_ringbuf_reserve(&fd_events, sizeof(*e), 0);

	if (!e) {
		__u32 key = 0;
		__u64 *lost = bpf_map_lookup_elem(&fd_lost, &key);

		if (lost)
			*lost += 1;
		return;
	}
	e->cgroup_id = cgroup_id;
	e->latency_ns = latency;
	e->retval = retval;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->nr = nr;
	e->flags = flags;
	e->ts_ns = now;
	e->enter_ns = enter;
	e->arg0 = arg0;
	bpf_ringbuf_submit(e, wakeup_flags());
}

/* A successful open: the record with the path the caller passed (di for open/creat, si for openat*). */
static __always_inline int submit_open(void *ctx, __u64 cgroup_id, __u64 id, __u32 nr, __s64 ret,
				       __u64 now, __u64 enter, __s64 arg0)
{
	struct fd_trace_event_path *p = bpf_ringbuf_reserve(&fd_events, sizeof(*p), 0);

	if (!p)
		return 0;
	void *regs = (void *)((__u64 *)ctx)[0];
	__u64 ptr = 0;

	bpf_probe_read_kernel(&ptr, sizeof(ptr),
			      regs + (nr == NR_OPENAT || nr == NR_OPENAT2 ? FD_PT_REGS_SI : FD_PT_REGS_DI));
	p->event.cgroup_id = cgroup_id;
	p->event.latency_ns = now - enter;
	p->event.retval = ret;
	p->event.pid = id >> 32;
	p->event.tid = (__u32)id;
	p->event.nr = nr;
	p->event.flags = FD_TRACE_HAS_RETVAL;
	p->event.ts_ns = now;
	p->event.enter_ns = enter;
	p->event.arg0 = arg0;
	if (bpf_probe_read_user_str(p->path, sizeof(p->path), (void *)ptr) < 0)
		p->path[0] = 0;
	bpf_ringbuf_submit(p, wakeup_flags());
	return 1;
}

/* raw_tracepoint/sys_enter: args[0] = struct pt_regs *, args[1] = long id */
SEC("raw_tracepoint/sys_enter")
int fd_trace_enter(void *ctx)
{
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	__u32 *target = bpf_map_lookup_elem(&fd_targets, &cgroup_id);

	if (!target)
		return 0;
	__u32 bits = *target;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 nr = (__u32)((__u64 *)ctx)[1];

	if (bits & FD_TARGET_CRASH) {
		struct fd_crash_key key = { .cgroup_id = cgroup_id, .nr = nr, ._pad = 0 };
		struct fd_crash_value *crash = bpf_map_lookup_elem(&fd_crash, &key);

		if (crash) {
			/* Every time, while the rule is in the map. SIGKILL is pending before the syscall
			 * runs (KERNEL.md §4: a buffered write then does not take effect). */
			__sync_fetch_and_add(&crash->hits, 1);
			bpf_send_signal(crash->signal);
			__u64 now = bpf_ktime_get_ns();

			submit(cgroup_id, id, nr, crash->signal, crash->rule_id, FD_TRACE_CRASH, now,
			       now, first_arg(ctx));
			return 0;
		}
	}
	if (!(bits & FD_TARGET_TRACE))
		return 0;
	if (nr == NR_EXIT || nr == NR_EXIT_GROUP) {
		/* never returns: report at entry, without a return value */
		__u64 now = bpf_ktime_get_ns();

		submit(cgroup_id, id, nr, 0, 0, 0, now, now, first_arg(ctx));
		return 0;
	}
	__u32 tid = (__u32)id;
	struct fd_trace_start start = {
		.ts_ns = bpf_ktime_get_ns(), .nr = nr, ._pad = 0, .arg0 = first_arg(ctx)
	};

	bpf_map_update_elem(&fd_starts, &tid, &start, BPF_ANY);
	return 0;
}

/* raw_tracepoint/sys_exit: args[0] = struct pt_regs *, args[1] = long ret */
SEC("raw_tracepoint/sys_exit")
int fd_trace_exit(void *ctx)
{
	__u64 cgroup_id = bpf_get_current_cgroup_id();
	__u32 *target = bpf_map_lookup_elem(&fd_targets, &cgroup_id);

	if (!target || !(*target & FD_TARGET_TRACE))
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	__s64 ret = (__s64)((__u64 *)ctx)[1];
	struct fd_trace_start *start = bpf_map_lookup_elem(&fd_starts, &tid);

	if (!start) {
		/* A syscall seccomp failed (or killed) skips sys_enter but still exits: report it
		 * without a latency, its number taken from the registers. */
		__u64 nr = 0;
		void *regs = (void *)((__u64 *)ctx)[0];

		bpf_probe_read_kernel(&nr, sizeof(nr), regs + FD_PT_REGS_ORIG_AX);
		submit(cgroup_id, id, (__u32)nr, ret, 0, FD_TRACE_HAS_RETVAL, bpf_ktime_get_ns(), 0,
		       first_arg(ctx));
		return 0;
	}
	__u64 now = bpf_ktime_get_ns();
	__u64 ts = start->ts_ns;
	__u32 nr = start->nr;
	__s64 arg0 = start->arg0;

	bpf_map_delete_elem(&fd_starts, &tid);
	if (ret >= 0 && (nr == NR_OPEN || nr == NR_OPENAT || nr == NR_OPENAT2 || nr == NR_CREAT) &&
	    submit_open(ctx, cgroup_id, id, nr, ret, now, ts, arg0))
		return 0;
	submit(cgroup_id, id, nr, ret, now - ts, FD_TRACE_HAS_RETVAL, now, ts, arg0);
	return 0;
}
