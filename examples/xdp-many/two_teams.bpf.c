// SPDX-License-Identifier: GPL-2.0
// Two XDP programs meant for different objects on one interface (two_teams.yaml): a sampler that
// counts every packet, and a firewall that drops ICMP packets larger than 512 bytes.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} packets SEC(".maps");

SEC("xdp")
int sample(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&packets, &key);
	if (value)
		__sync_fetch_and_add(value, 1);
	return XDP_PASS;
}

SEC("xdp")
int drop_big_icmp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u32 key = 0;
	__u64 *dropped;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (ip->protocol != IPPROTO_ICMP || bpf_ntohs(ip->tot_len) <= 512)
		return XDP_PASS;
	dropped = bpf_map_lookup_elem(&packets, &key);
	if (dropped)
		__sync_fetch_and_add(dropped, 1);
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
