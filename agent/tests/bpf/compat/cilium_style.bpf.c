// SPDX-License-Identifier: GPL-2.0
// In the style of cilium/ebpf's examples: tcx ingress/egress packet counters and a cgroup_skb
// counter kept in globals (`.bss` and `.data`, read by user space through the internal maps), and
// a `tc` program for the legacy clsact hook.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

// Older uapi headers (Linux < 6.6) lack the tcx return codes.
#ifndef TCX_PASS
#define TCX_PASS 0
#endif

__u64 ingress_pkt_count = 0;
__u64 egress_pkt_count = 0;
__u64 cgroup_pkt_count = 1;

SEC("tcx/ingress")
int ingress_prog_func(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&ingress_pkt_count, 1);
	return TCX_PASS;
}

SEC("tcx/egress")
int egress_prog_func(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&egress_pkt_count, 1);
	return TCX_PASS;
}

SEC("tc")
int legacy_tc_func(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

SEC("cgroup_skb/egress")
int count_egress_packets(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&cgroup_pkt_count, 1);
	return 1;
}

char __license[] SEC("license") = "Dual MIT/GPL";
