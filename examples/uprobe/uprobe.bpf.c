// SPDX-License-Identifier: GPL-2.0
// Counts calls of bash's readline() (every interactive prompt) on the node: a uprobe on a binary
// the node already has, pinned as a bpf_link so it outlives the agent.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} calls SEC(".maps");

SEC("uprobe")
int count_readline(void *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&calls, &key);
	if (value)
		__sync_fetch_and_add(value, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
