// SPDX-License-Identifier: GPL-2.0
// Counts unlink(2)/unlinkat(2) calls on the node: a kprobe on the kernel's do_unlinkat() counts
// calls going in, a kretprobe on the same function counts calls coming back. Which function each
// program attaches to is in the manifest (spec.programs[].attach.kprobe); the section only says
// kprobe or kretprobe.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

enum { ENTERED = 0, RETURNED = 1 };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} unlinks SEC(".maps");

static __always_inline void count(__u32 key)
{
	__u64 *value = bpf_map_lookup_elem(&unlinks, &key);
	if (value)
		__sync_fetch_and_add(value, 1);
}

SEC("kprobe")
int unlink_entry(void *ctx)
{
	count(ENTERED);
	return 0;
}

SEC("kretprobe")
int unlink_return(void *ctx)
{
	count(RETURNED);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
