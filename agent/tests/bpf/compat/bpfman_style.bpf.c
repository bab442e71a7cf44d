// SPDX-License-Identifier: GPL-2.0
// In the style of bpfman's examples: counters (xdp, tc, tracepoint, uprobe) in per-CPU arrays,
// `const volatile` globals set at load time (bpfman's globalData), and the classic `classifier`
// section.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct datarec {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct datarec);
	__uint(max_entries, 1);
} xdp_stats_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct datarec);
	__uint(max_entries, 1);
} tc_stats_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} tracepoint_stats_map SEC(".maps");

volatile const __u8 GLOBAL_u8 = 0;
volatile const __u32 GLOBAL_u32 = 0;

static __always_inline void count(void *map, __u64 bytes)
{
	__u32 key = 0;
	struct datarec *rec = bpf_map_lookup_elem(map, &key);
	if (!rec)
		return;
	rec->packets++;
	rec->bytes += bytes;
}

SEC("xdp")
int xdp_stats(struct xdp_md *ctx)
{
	count(&xdp_stats_map, ctx->data_end - ctx->data);
	return GLOBAL_u8 ? XDP_DROP : XDP_PASS;
}

SEC("classifier")
int stats(struct __sk_buff *skb)
{
	count(&tc_stats_map, skb->len);
	return TC_ACT_OK;
}

SEC("tracepoint/syscalls/sys_enter_kill")
int tracepoint_kill_recorder(void *ctx)
{
	__u32 key = 0;
	__u64 *calls = bpf_map_lookup_elem(&tracepoint_stats_map, &key);
	if (calls)
		__sync_fetch_and_add(calls, 1 + GLOBAL_u32);
	return 0;
}

SEC("uprobe/malloc")
int uprobe_counter(void *ctx)
{
	__u32 key = 0;
	__u64 *calls = bpf_map_lookup_elem(&tracepoint_stats_map, &key);
	if (calls)
		__sync_fetch_and_add(calls, 1);
	return 0;
}

char _license[] SEC("license") = "Dual BSD/GPL";
