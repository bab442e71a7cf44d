// SPDX-License-Identifier: GPL-2.0
// Packet counters at the two earliest hooks of the host's network stack: XDP (ingress, before the
// stack allocates anything) and tc via tcx (ingress or egress, with the packet's socket buffer).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} packets SEC(".maps");

static __always_inline void count(__u32 hook)
{
	__u64 *value = bpf_map_lookup_elem(&packets, &hook);
	if (value)
		*value += 1; // per-CPU: no atomics needed
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	count(0);
	return XDP_PASS;
}

SEC("classifier")
int tc_count(struct __sk_buff *skb)
{
	count(1);
	return -1; // TCX_NEXT
}

char LICENSE[] SEC("license") = "GPL";
