// SPDX-License-Identifier: GPL-2.0
// Tail calls: `entry` jumps through jumps[0]; when the slot is empty it falls through and counts
// hits[0]; `target` counts hits[1]. The spec's tailCalls fills jumps.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} jumps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void hit(__u32 i)
{
	__u64 *value = bpf_map_lookup_elem(&hits, &i);
	if (value)
		__sync_fetch_and_add(value, 1);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int entry(void *ctx)
{
	bpf_tail_call(ctx, &jumps, 0);
	hit(0); // only reached when jumps[0] is empty
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int target(void *ctx)
{
	hit(1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
