// SPDX-License-Identifier: GPL-2.0
/* ebpf-override and ebpf-lsm: named-op faults decided in the kernel, for the cgroups of sessions.
 *
 * Every hook starts with one lookup of the caller's cgroup id in fd_fault_cgroups; a task of any other
 * cgroup pays that lookup and nothing else. For a targeted cgroup it looks up the rules of (cgroup,
 * syscall number) in fd_fault_rules and walks them in precedence order, considering only the rules
 * that name this hook:
 *
 * - fd_fault_entry (kprobe, attached to __x64_sys_<name> for each faulted syscall): the ebpf-override
 *   backend. On a firing deny it calls bpf_override_return(-errno): the syscall never runs.
 * - fd_fault_open (lsm/file_open): remembers, for every file a targeted cgroup opens, the path the
 *   kernel resolved (bpf_d_path) and which globs it matches, keyed by the struct file (fd_fault_files,
 *   dropped at lsm/file_free_security). A rule with a path glob on an fd syscall is matched against
 *   that entry, found from the fd at the faulted call: the fact exists before the program can use the
 *   fd, relative paths and dirfds are resolved by the kernel, and a rename after the open or a hard
 *   link opened under another name is seen as the path that was opened. Open rules with a glob are
 *   decided here too, by returning -errno.
 * - fd_fault_perm (lsm/file_permission): the ebpf-lsm backend's read and write families.
 * - fd_fault_unlink, _rmdir, _mkdir, _rename, _path_truncate, _file_truncate, _connect (the LSM hook
 *   of each): the ebpf-lsm backend's path and socket operations. Only ftruncate has a file to match a
 *   glob against; the others decide rules without one.
 *
 * A rule with a probability draws from its fault set's sequence in fd_fault_rngs (SplitMix64 of the
 * seed and a shared counter, as faultd's userspace source); matches and hits are counted per rule in
 * fd_fault_hits; each decision goes to fd_fault_events for the session's trace.
 *
 * faultd-ebpf/src/faults.rs mirrors faults.h; both sides pin the layout. */
#include <linux/bpf.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "faults.h"

char LICENSE[] SEC("license") = "GPL";

/* The few kernel types the programs walk, relocated against the running kernel's BTF (CO-RE). */
struct path {
	void *mnt;
	void *dentry;
} __attribute__((preserve_access_index));
struct file {
	struct path f_path;
} __attribute__((preserve_access_index));
struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));
struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));
struct task_struct {
	struct files_struct *files;
} __attribute__((preserve_access_index));

/* Keeps clang from computing an offset from a pointer before its NULL check (the verifier refuses
 * arithmetic on a maybe-NULL map value). */
#define fd_opaque(var) asm volatile("" : "+r"(var))

/* x86_64 struct pt_regs (the syscall's own registers): byte offsets of the arguments and orig_ax. */
#define FD_REGS_ORIG_AX 120
static const __u16 arg_offset[6] = {112, 104, 96, 56, 72, 64};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} fd_fault_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fd_fault_key);
	__type(value, struct fd_fault_entry);
} fd_fault_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FD_FAULT_GLOBS);
	__type(key, __u32);
	__type(value, struct fd_glob);
} fd_fault_globs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FD_FAULT_RNGS);
	__type(key, __u32);
	__type(value, struct fd_rng);
} fd_fault_rngs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fd_hit_key);
	__type(value, struct fd_hit_value);
} fd_fault_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fd_fault_state);
} fd_fault_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct fd_fault_file);
} fd_fault_files SEC(".maps");

/* Scratch space for a path being resolved (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fd_fault_file);
} fd_fault_scratch SEC(".maps");

#define FD_FAULT_WAKEUP_BYTES (64u * 1024u)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} fd_fault_events SEC(".maps");

/* The NFA run of one glob over one path, stepped by bpf_loop (one byte per step; a plain loop over
 * 256 bytes is more than the verifier will walk for every glob). */
struct glob_run {
	struct fd_glob *g;
	const char *path;
	__u64 d;
};

static __always_inline __u64 glob_close(struct fd_glob *g, __u64 d)
{
	d |= (d & g->eps1) << 1;
	d |= (d & g->eps2) << 2;
	d |= (d & g->eps1) << 1;
	return d;
}

static long glob_step(__u32 i, struct glob_run *run)
{
	if (i >= FD_FAULT_PATH - 1)
		return 1;
	__u8 c = run->path[i];

	if (c == 0)
		return 1;
	struct fd_glob *g = run->g;
	__u64 d = run->d;

	d = ((d & g->consume[c]) << 1) | (d & g->loop[c]);
	run->d = glob_close(g, d);
	return run->d == 0;
}

/* Whether glob `g` matches the NUL-terminated `path` (a map value of FD_FAULT_PATH bytes). */
static __always_inline int glob_match(struct fd_glob *g, const char *path)
{
	struct glob_run run = {.g = g, .path = path, .d = glob_close(g, 1)};

	bpf_loop(FD_FAULT_PATH - 1, glob_step, &run, 0);
	return (run.d & g->accept) != 0;
}

/* Matching one path against every glob in use, stepped by bpf_loop (one glob per step). */
struct mask_run {
	const char *path;
	__u64 globs;
	__u64 mask;
};

static long mask_step(__u32 n, struct mask_run *run)
{
	if (n >= FD_FAULT_GLOBS)
		return 1;
	if (!(run->globs & (1ull << n)))
		return 0;
	struct fd_glob *g = bpf_map_lookup_elem(&fd_fault_globs, &n);

	if (g && glob_match(g, run->path))
		run->mask |= 1ull << n;
	return 0;
}

/* Which of the globs in use `path` matches. */
static __always_inline __u64 glob_mask(const char *path, __u64 globs)
{
	struct mask_run run = {.path = path, .globs = globs, .mask = 0};

	bpf_loop(FD_FAULT_GLOBS, mask_step, &run, 0);
	return run.mask;
}

static __always_inline struct fd_fault_state *state(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&fd_fault_state, &zero);
}

/* The file's glob mask, recomputed from its path as opened when the globs changed since. */
static __always_inline __u64 file_mask(struct fd_fault_file *f)
{
	struct fd_fault_state *s = state();

	if (!s)
		return 0;
	if (f->gen != s->glob_gen) {
		f->mask = glob_mask(f->path, s->globs);
		f->gen = s->glob_gen;
	}
	return f->mask;
}

static __always_inline __u64 splitmix(__u64 z)
{
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* Whether a matching rule fires: always, or when its fault set's next draw is below the threshold. */
static __always_inline int fires(const struct fd_fault_rule *r)
{
	if (r->threshold == FD_ALWAYS)
		return 1;
	__u32 slot = r->rng;
	struct fd_rng *rng = bpf_map_lookup_elem(&fd_fault_rngs, &slot);

	if (!rng)
		return 0;
	__u64 n = __sync_fetch_and_add(&rng->next, 1);
	__u64 z = splitmix(rng->seed + (n + 1) * 0x9E3779B97F4A7C15ull);

	return (z >> 11) < r->threshold;
}

static __always_inline void count(__u64 cgroup_id, __u32 rule_id, int hit)
{
	struct fd_hit_key key = {.cgroup_id = cgroup_id, .rule_id = rule_id};
	struct fd_hit_value *v = bpf_map_lookup_elem(&fd_fault_hits, &key);

	if (!v)
		return;
	__sync_fetch_and_add(&v->matches, 1);
	if (hit)
		__sync_fetch_and_add(&v->hits, 1);
}

static __always_inline void report(__u64 cgroup_id, __u32 nr, const struct fd_fault_rule *r,
				   __u32 hook, const struct fd_fault_file *f)
{
	struct fd_fault_event *e = bpf_ringbuf_reserve(&fd_fault_events, sizeof(*e), 0);

	if (!e)
		return;
	__u64 id = bpf_get_current_pid_tgid();

	e->cgroup_id = cgroup_id;
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->nr = nr;
	e->rule_id = r->rule_id;
	e->errno_ = r->errno_;
	e->hook = hook;
	e->path[0] = 0;
	if (f) {
		fd_opaque(f);
		bpf_probe_read_kernel_str(e->path, sizeof(e->path), f->path);
	}
	bpf_ringbuf_submit(e, bpf_ringbuf_query(&fd_fault_events, BPF_RB_AVAIL_DATA) >=
				      FD_FAULT_WAKEUP_BYTES
			      ? BPF_RB_FORCE_WAKEUP
			      : BPF_RB_NO_WAKEUP);
}

/* The deciding rule's errno (0: the call proceeds) among the entry's rules of `hook`, for a call on
 * file `f` (NULL when none or unknown: a rule with a glob then does not match). */
static __always_inline int decide(__u64 cgroup_id, __u32 nr, struct fd_fault_entry *entry,
				  __u32 hook, struct fd_fault_file *f)
{
	__u64 mask = 0;
	int have_mask = 0;

#pragma clang loop unroll(full)
	for (int i = 0; i < FD_FAULT_RULES; i++) {
		if (i >= entry->count)
			break;
		struct fd_fault_rule *r = &entry->rules[i];

		if (r->hook != hook)
			continue;
		if (r->glob) {
			if (!f)
				continue;
			fd_opaque(f);
			if (!have_mask) {
				mask = file_mask(f);
				have_mask = 1;
			}
			if (!(mask & (1ull << ((r->glob - 1) & 63))))
				continue;
		}
		int hit = fires(r);

		count(cgroup_id, r->rule_id, hit);
		if (!hit)
			continue;
		report(cgroup_id, nr, r, hook, f);
		return r->errno_;
	}
	return 0;
}

/* An LSM hook's return value for errno `err`: within [-4095, 0], as the verifier requires. */
static __always_inline int lsm_ret(int err)
{
	/* A subtraction, not a negation: this verifier (6.12) keeps no bounds through BPF_NEG. */
	long zero = 0, bounded = err & 4095;

	fd_opaque(zero);
	return zero - bounded;
}

/* The syscall number of the current task's syscall (LSM hooks run inside one). */
static __always_inline __u32 current_nr(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	void *regs = (void *)bpf_task_pt_regs(task);
	__u64 nr = 0;

	bpf_probe_read_kernel(&nr, sizeof(nr), regs + FD_REGS_ORIG_AX);
	return nr;
}

/* The struct file behind `fd` in the current task. */
static __always_inline struct file *fd_file(__u64 fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

SEC("kprobe/__x64_sys_write")
int fd_fault_entry(struct pt_regs *ctx)
{
	__u64 cgroup_id = bpf_get_current_cgroup_id();

	if (!bpf_map_lookup_elem(&fd_fault_cgroups, &cgroup_id))
		return 0;
	void *regs = (void *)PT_REGS_PARM1(ctx);
	__u64 nr = 0;

	bpf_probe_read_kernel(&nr, sizeof(nr), regs + FD_REGS_ORIG_AX);
	struct fd_fault_key key = {.cgroup_id = cgroup_id, .nr = nr};
	struct fd_fault_entry *entry = bpf_map_lookup_elem(&fd_fault_rules, &key);

	if (!entry)
		return 0;
	struct fd_fault_file *f = NULL;

	if (entry->fd_arg < 6) {
		__u64 fd = 0;

		bpf_probe_read_kernel(&fd, sizeof(fd), regs + arg_offset[entry->fd_arg]);
		__u64 file = (__u64)fd_file(fd);

		if (file)
			f = bpf_map_lookup_elem(&fd_fault_files, &file);
	}
	int err = decide(cgroup_id, nr, entry, FD_HOOK_ENTRY, f);

	if (err)
		bpf_override_return(ctx, -err);
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(fd_fault_open, struct file *file)
{
	__u64 cgroup_id = bpf_get_current_cgroup_id();

	if (!bpf_map_lookup_elem(&fd_fault_cgroups, &cgroup_id))
		return 0;
	struct fd_fault_state *s = state();
	__u32 zero = 0;
	struct fd_fault_file *f = bpf_map_lookup_elem(&fd_fault_scratch, &zero);

	if (!s || !f || !s->globs)
		return 0;
	if (bpf_d_path(&file->f_path, f->path, sizeof(f->path)) < 0)
		return 0;
	f->gen = s->glob_gen;
	f->mask = glob_mask(f->path, s->globs);
	__u64 key = (__u64)file;

	bpf_map_update_elem(&fd_fault_files, &key, f, BPF_ANY);
	__u32 nr = current_nr();
	struct fd_fault_key rkey = {.cgroup_id = cgroup_id, .nr = nr};
	struct fd_fault_entry *entry = bpf_map_lookup_elem(&fd_fault_rules, &rkey);

	if (!entry)
		return 0;
	return lsm_ret(decide(cgroup_id, nr, entry, FD_HOOK_OPEN, f));
}

SEC("lsm/file_free_security")
int BPF_PROG(fd_fault_file_free, struct file *file)
{
	__u64 key = (__u64)file;

	bpf_map_delete_elem(&fd_fault_files, &key);
	return 0;
}

SEC("lsm/file_permission")
int BPF_PROG(fd_fault_perm, struct file *file, int mask)
{
	__u64 cgroup_id = bpf_get_current_cgroup_id();

	if (!bpf_map_lookup_elem(&fd_fault_cgroups, &cgroup_id))
		return 0;
	__u32 nr = current_nr();
	struct fd_fault_key key = {.cgroup_id = cgroup_id, .nr = nr};
	struct fd_fault_entry *entry = bpf_map_lookup_elem(&fd_fault_rules, &key);

	if (!entry)
		return 0;
	__u64 fkey = (__u64)file;
	struct fd_fault_file *f = bpf_map_lookup_elem(&fd_fault_files, &fkey);

	return lsm_ret(decide(cgroup_id, nr, entry, FD_HOOK_PERM, f));
}

/* The decision of an operation hook (FD_HOOK_OP) for the current syscall, on file `file` when the hook
 * has one (its path as opened, for globs). */
static __always_inline int op_hook(struct file *file)
{
	__u64 cgroup_id = bpf_get_current_cgroup_id();

	if (!bpf_map_lookup_elem(&fd_fault_cgroups, &cgroup_id))
		return 0;
	__u32 nr = current_nr();
	struct fd_fault_key key = {.cgroup_id = cgroup_id, .nr = nr};
	struct fd_fault_entry *entry = bpf_map_lookup_elem(&fd_fault_rules, &key);

	if (!entry)
		return 0;
	struct fd_fault_file *f = NULL;

	if (file) {
		__u64 fkey = (__u64)file;

		f = bpf_map_lookup_elem(&fd_fault_files, &fkey);
	}
	return lsm_ret(decide(cgroup_id, nr, entry, FD_HOOK_OP, f));
}

SEC("lsm/inode_unlink")
int BPF_PROG(fd_fault_unlink, void *dir, void *dentry)
{
	return op_hook(NULL);
}

SEC("lsm/inode_rmdir")
int BPF_PROG(fd_fault_rmdir, void *dir, void *dentry)
{
	return op_hook(NULL);
}

SEC("lsm/inode_mkdir")
int BPF_PROG(fd_fault_mkdir, void *dir, void *dentry, int mode)
{
	return op_hook(NULL);
}

SEC("lsm/inode_rename")
int BPF_PROG(fd_fault_rename, void *old_dir, void *old_dentry, void *new_dir, void *new_dentry)
{
	return op_hook(NULL);
}

SEC("lsm/path_truncate")
int BPF_PROG(fd_fault_path_truncate, void *path)
{
	return op_hook(NULL);
}

SEC("lsm/file_truncate")
int BPF_PROG(fd_fault_file_truncate, struct file *file)
{
	return op_hook(file);
}

SEC("lsm/socket_connect")
int BPF_PROG(fd_fault_connect, void *sock, void *address, int addrlen)
{
	return op_hook(NULL);
}
