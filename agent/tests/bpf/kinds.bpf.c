// SPDX-License-Identifier: GPL-2.0
// One program per attach kind, each counting its hits in hits[<kind>], so a test can prove that
// the kind's pinned link really runs the program.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

enum { TC = 0, KPROBE = 1, KRETPROBE = 2, UPROBE = 3, URETPROBE = 4, FENTRY = 5, FEXIT = 6, CGROUP_SKB = 7 };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void hit(__u32 kind)
{
	__u64 *value = bpf_map_lookup_elem(&hits, &kind);
	if (value)
		__sync_fetch_and_add(value, 1);
}

SEC("classifier")
int tc_count(struct __sk_buff *skb)
{
	hit(TC);
	return -1; // TCX_NEXT: let the next program (or the stack) decide
}

SEC("kprobe/do_unlinkat")
int kprobe_count(void *ctx)
{
	hit(KPROBE);
	return 0;
}

SEC("kretprobe/do_unlinkat")
int kretprobe_count(void *ctx)
{
	hit(KRETPROBE);
	return 0;
}

SEC("uprobe")
int uprobe_count(void *ctx)
{
	hit(UPROBE);
	return 0;
}

SEC("uretprobe")
int uretprobe_count(void *ctx)
{
	hit(URETPROBE);
	return 0;
}

SEC("fentry/do_unlinkat")
int fentry_count(unsigned long long *ctx)
{
	hit(FENTRY);
	return 0;
}

SEC("fexit/do_unlinkat")
int fexit_count(unsigned long long *ctx)
{
	hit(FEXIT);
	return 0;
}

SEC("cgroup_skb/egress")
int cgroup_skb_count(struct __sk_buff *skb)
{
	hit(CGROUP_SKB);
	return 1; // allow
}

char LICENSE[] SEC("license") = "GPL";
