// SPDX-License-Identifier: GPL-2.0
// In the style of xdp-tutorial's lessons: an Ethernet/IPv4 header parser with explicit bounds
// checks, a per-CPU array of per-action statistics, a devmap redirect, and `xdp.frags` and
// `xdp/devmap` programs next to the interface one.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct datarec {
	__u64 rx_packets;
	__u64 rx_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct datarec);
	__uint(max_entries, XDP_REDIRECT + 1);
} xdp_stats_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 16);
} tx_port SEC(".maps");

struct hdr_cursor {
	void *pos;
};

static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end, struct ethhdr **eth)
{
	struct ethhdr *h = nh->pos;
	if ((void *)(h + 1) > data_end)
		return -1;
	nh->pos = h + 1;
	*eth = h;
	return h->h_proto;
}

static __always_inline __u32 stats(struct xdp_md *ctx, __u32 action)
{
	struct datarec *rec = bpf_map_lookup_elem(&xdp_stats_map, &action);
	if (!rec)
		return XDP_ABORTED;
	rec->rx_packets++;
	rec->rx_bytes += ctx->data_end - ctx->data;
	return action;
}

SEC("xdp")
int xdp_parser_func(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor nh = { .pos = (void *)(long)ctx->data };
	struct ethhdr *eth;
	struct iphdr *ip;

	if (parse_ethhdr(&nh, data_end, &eth) != bpf_htons(ETH_P_IP))
		return stats(ctx, XDP_PASS);
	ip = nh.pos;
	if ((void *)(ip + 1) > data_end)
		return stats(ctx, XDP_ABORTED);
	if (ip->ttl <= 1)
		return stats(ctx, XDP_DROP);
	return stats(ctx, XDP_PASS);
}

SEC("xdp")
int xdp_redirect_map_func(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tx_port, 0, XDP_PASS);
}

SEC("xdp.frags")
int xdp_pass_frags(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp/devmap")
int xdp_devmap_egress(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
