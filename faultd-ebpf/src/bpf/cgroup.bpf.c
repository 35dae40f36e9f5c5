// SPDX-License-Identifier: GPL-2.0
/* ebpf-cgroup: connect faults decided in-kernel, attached to one service's cgroup.
 *
 * cgroup/connect4 and cgroup/connect6 look the destination up in fd_conn_rules, most specific first:
 * (family, address, port), then (any address, port), then (any address, any port). On a hit the rule's
 * counter in fd_conn_hits grows; a deny makes connect(2) fail with the rule's errno through
 * bpf_set_retval (ECONNREFUSED, ETIMEDOUT, ...), an allow lets it through. Userspace resolves rule
 * precedence when it fills the map, so the first matching lookup is the deciding rule. Each decision is
 * also reported on fd_conn_events (ring buffer) for the session's trace.
 *
 * cgroup_skb/egress and cgroup_skb/ingress (fd_skb_egress, fd_skb_ingress) drop the IPv4/IPv6 TCP and
 * UDP packets of a partition: those to (egress) or from (ingress) a peer in fd_drop_peers, looked up as
 * (family, address, port), then (any address, port). They are attached only while a partition is
 * active, so a partition also cuts connections opened before it (and UDP). Egress drops return 2
 * (drop + congestion notification): UDP sendto still succeeds as on a lossy network, TCP sees a local
 * drop and retries every 500 ms, so open connections carry data again soon after the partition ends.
 * fd_drop_hits counts dropped packets per rule.
 *
 * faultd-ebpf/src/cgroup.rs mirrors the types below; both sides pin their layout. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* fd_conn_key.family */
#define FD_CONN_ANY 0
#define FD_CONN_INET 4
#define FD_CONN_INET6 6

/* A destination: address in network byte order (IPv4 in addr[0]), port in host byte order.
 * family FD_CONN_ANY means any address (addr all zero); port 0 means any port. */
struct fd_conn_key {
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 _pad;
};

/* What the deciding rule does: fail with errno (positive), or allow when errno is 0. */
struct fd_conn_verdict {
	__u32 rule_id;
	__s32 errno_;
};

/* One decision, for the trace. */
struct fd_conn_event {
	__u32 rule_id;
	__s32 errno_;
	__u32 pid;
	__u32 tid;
	__u32 addr[4];
	__u16 port;
	__u8 family;
	__u8 _pad;
	__u32 _pad2;
	__u64 ts_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the decision */
};

/* fd_drop_rule.directions */
#define FD_DROP_EGRESS 1
#define FD_DROP_INGRESS 2

/* A peer's packets to drop (value of fd_drop_peers, keyed by the peer as a struct fd_conn_key). */
struct fd_drop_rule {
	__u32 rule_id;
	__u32 directions;
};

_Static_assert(sizeof(struct fd_drop_rule) == 8, "fd_drop_rule size");
_Static_assert(__builtin_offsetof(struct fd_drop_rule, directions) == 4, "fd_drop_rule.directions");
_Static_assert(sizeof(struct fd_conn_key) == 20, "fd_conn_key size");
_Static_assert(_Alignof(struct fd_conn_key) == 4, "fd_conn_key align");
_Static_assert(__builtin_offsetof(struct fd_conn_key, port) == 16, "fd_conn_key.port");
_Static_assert(__builtin_offsetof(struct fd_conn_key, family) == 18, "fd_conn_key.family");
_Static_assert(sizeof(struct fd_conn_verdict) == 8, "fd_conn_verdict size");
_Static_assert(__builtin_offsetof(struct fd_conn_verdict, errno_) == 4, "fd_conn_verdict.errno_");
_Static_assert(sizeof(struct fd_conn_event) == 48, "fd_conn_event size");
_Static_assert(__builtin_offsetof(struct fd_conn_event, ts_ns) == 40, "fd_conn_event.ts_ns");
_Static_assert(__builtin_offsetof(struct fd_conn_event, pid) == 8, "fd_conn_event.pid");
_Static_assert(__builtin_offsetof(struct fd_conn_event, tid) == 12, "fd_conn_event.tid");
_Static_assert(__builtin_offsetof(struct fd_conn_event, addr) == 16, "fd_conn_event.addr");
_Static_assert(__builtin_offsetof(struct fd_conn_event, port) == 32, "fd_conn_event.port");
_Static_assert(__builtin_offsetof(struct fd_conn_event, family) == 34, "fd_conn_event.family");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fd_conn_key);
	__type(value, struct fd_conn_verdict);
} fd_conn_rules SEC(".maps");

/* rule id → times it decided a connect. Userspace inserts 0 for each rule it installs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} fd_conn_hits SEC(".maps");

/* Decisions for the trace. Wakeups are batched: waking faultd's reader on another CPU for every record
 * would cost more than the fault itself (KERNEL.md §2), so the reader also polls on a timer. */
#define FD_CONN_WAKEUP_BYTES (64u * 1024u)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} fd_conn_events SEC(".maps");

static __always_inline int decide(struct fd_conn_key *key)
{
	struct fd_conn_key dest = *key;
	struct fd_conn_verdict *v = bpf_map_lookup_elem(&fd_conn_rules, key);

	if (!v) {
		key->family = FD_CONN_ANY;
		key->addr[0] = key->addr[1] = key->addr[2] = key->addr[3] = 0;
		v = bpf_map_lookup_elem(&fd_conn_rules, key);
	}
	if (!v) {
		key->port = 0;
		v = bpf_map_lookup_elem(&fd_conn_rules, key);
	}
	if (!v)
		return 1;
	__u32 rule_id = v->rule_id;
	__s32 err = v->errno_;
	__u64 *hits = bpf_map_lookup_elem(&fd_conn_hits, &rule_id);

	if (hits)
		__sync_fetch_and_add(hits, 1);
	struct fd_conn_event *e = bpf_ringbuf_reserve(&fd_conn_events, sizeof(*e), 0);

	if (e) {
		__u64 id = bpf_get_current_pid_tgid();

		e->rule_id = rule_id;
		e->errno_ = err;
		e->pid = id >> 32;
		e->tid = (__u32)id;
		e->addr[0] = dest.addr[0];
		e->addr[1] = dest.addr[1];
		e->addr[2] = dest.addr[2];
		e->addr[3] = dest.addr[3];
		e->port = dest.port;
		e->family = dest.family;
		e->_pad = 0;
		e->_pad2 = 0;
		e->ts_ns = bpf_ktime_get_ns();
		bpf_ringbuf_submit(e, bpf_ringbuf_query(&fd_conn_events, BPF_RB_AVAIL_DATA) >=
						  FD_CONN_WAKEUP_BYTES
					  ? BPF_RB_FORCE_WAKEUP
					  : BPF_RB_NO_WAKEUP);
	}
	if (err == 0)
		return 1;
	bpf_set_retval(-err);
	return 0;
}

SEC("cgroup/connect4")
int fd_connect4(struct bpf_sock_addr *ctx)
{
	struct fd_conn_key key = {};

	key.addr[0] = ctx->user_ip4;
	key.port = bpf_ntohs((__u16)ctx->user_port);
	key.family = FD_CONN_INET;
	return decide(&key);
}

SEC("cgroup/connect6")
int fd_connect6(struct bpf_sock_addr *ctx)
{
	struct fd_conn_key key = {};

	key.addr[0] = ctx->user_ip6[0];
	key.addr[1] = ctx->user_ip6[1];
	key.addr[2] = ctx->user_ip6[2];
	key.addr[3] = ctx->user_ip6[3];
	key.port = bpf_ntohs((__u16)ctx->user_port);
	key.family = FD_CONN_INET6;
	/* An IPv4-mapped address (::ffff:a.b.c.d) is an IPv4 destination. */
	if (key.addr[0] == 0 && key.addr[1] == 0 && key.addr[2] == bpf_htonl(0xffff)) {
		key.addr[0] = key.addr[3];
		key.addr[2] = 0;
		key.addr[3] = 0;
		key.family = FD_CONN_INET;
	}
	return decide(&key);
}

/* ------------------------------------------------------------------------------- packet drops */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fd_conn_key);
	__type(value, struct fd_drop_rule);
} fd_drop_peers SEC(".maps");

/* rule id → packets dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} fd_drop_hits SEC(".maps");

#define FD_ETH_P_IP 0x0800
#define FD_ETH_P_IPV6 0x86DD
#define FD_IPPROTO_TCP 6
#define FD_IPPROTO_UDP 17

/* The peer of a TCP or UDP packet: its destination on egress, its source on ingress. The skb starts
 * at the L3 header. Returns 0 for anything else (other protocols, non-first IPv4 fragments, IPv6
 * extension headers). */
static __always_inline int peer_of(struct __sk_buff *skb, int egress, struct fd_conn_key *key)
{
	__u32 l4;
	__u8 proto;

	if (skb->protocol == bpf_htons(FD_ETH_P_IP)) {
		__u8 h[20];

		if (bpf_skb_load_bytes(skb, 0, h, sizeof(h)) < 0)
			return 0;
		l4 = (h[0] & 0xf) * 4;
		if (l4 < 20 || ((h[6] & 0x1f) | h[7]) != 0)
			return 0;
		proto = h[9];
		__builtin_memcpy(&key->addr[0], &h[egress ? 16 : 12], 4);
		key->family = FD_CONN_INET;
	} else if (skb->protocol == bpf_htons(FD_ETH_P_IPV6)) {
		__u8 h[40];

		if (bpf_skb_load_bytes(skb, 0, h, sizeof(h)) < 0)
			return 0;
		l4 = 40;
		proto = h[6];
		__builtin_memcpy(key->addr, &h[egress ? 24 : 8], 16);
		key->family = FD_CONN_INET6;
	} else {
		return 0;
	}
	if (proto != FD_IPPROTO_TCP && proto != FD_IPPROTO_UDP)
		return 0;
	__be16 ports[2];

	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) < 0)
		return 0;
	key->port = bpf_ntohs(egress ? ports[1] : ports[0]);
	return 1;
}

/* Whether a partition drops this packet in `direction` (FD_DROP_EGRESS or FD_DROP_INGRESS). */
static __always_inline int partitioned(struct __sk_buff *skb, __u32 direction)
{
	struct fd_conn_key key = {};

	if (!peer_of(skb, direction == FD_DROP_EGRESS, &key))
		return 0;
	struct fd_drop_rule *rule = bpf_map_lookup_elem(&fd_drop_peers, &key);

	if (!rule) {
		key.family = FD_CONN_ANY;
		key.addr[0] = key.addr[1] = key.addr[2] = key.addr[3] = 0;
		rule = bpf_map_lookup_elem(&fd_drop_peers, &key);
	}
	if (!rule || !(rule->directions & direction))
		return 0;
	__u32 rule_id = rule->rule_id;
	__u64 *hits = bpf_map_lookup_elem(&fd_drop_hits, &rule_id);

	if (hits)
		__sync_fetch_and_add(hits, 1);
	return 1;
}

SEC("cgroup_skb/egress")
int fd_skb_egress(struct __sk_buff *skb)
{
	/* 2: drop with congestion notification (see the top of the file); 1: pass. */
	return partitioned(skb, FD_DROP_EGRESS) ? 2 : 1;
}

SEC("cgroup_skb/ingress")
int fd_skb_ingress(struct __sk_buff *skb)
{
	return partitioned(skb, FD_DROP_INGRESS) ? 0 : 1;
}
