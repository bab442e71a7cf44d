// SPDX-License-Identifier: GPL-2.0
// Compiles, but the verifier refuses it: the map value is used without a NULL check. One good
// program beside it proves nothing of the object is left pinned when one program fails.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH); // a hash lookup may return NULL, always
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

SEC("xdp")
int fine(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int unchecked(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&hits, &key);
	*value += 1; // no NULL check: "invalid mem access 'map_value_or_null'"
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
