// SPDX-License-Identifier: GPL-2.0
// Programs for the XDP dispatcher's and tcx priorities' tests (agent/tests/xdp_dispatcher.rs): each
// counts the packets it sees in hits[0] (a private map per object) and returns one verdict.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void count(void)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&hits, &key);
	if (value)
		__sync_fetch_and_add(value, 1);
}

SEC("xdp")
int count_and_pass(struct xdp_md *ctx)
{
	count();
	return XDP_PASS;
}

SEC("xdp")
int count_and_drop(struct xdp_md *ctx)
{
	count();
	return XDP_DROP;
}

// tcx: counts and lets the next tcx program run (TCX_NEXT, -1; older uapi headers lack the name).
SEC("classifier")
int count_tc(struct __sk_buff *skb)
{
	count();
	return -1;
}

char _license[] SEC("license") = "GPL";
