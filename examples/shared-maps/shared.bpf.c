// SPDX-License-Identifier: GPL-2.0
// Two objects built from this one file share `events` through spec.maps[].pinPath: each program
// adds to its own slot of the one map at /sys/fs/bpf/bpfpin/shared/demo/events.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 SLOT = 0; // set per object with globalData

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int count(void *ctx)
{
	__u32 key = SLOT;
	__u64 *value = bpf_map_lookup_elem(&events, &key);
	if (value)
		__sync_fetch_and_add(value, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
