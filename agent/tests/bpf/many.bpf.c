// SPDX-License-Identifier: GPL-2.0
// 24 small programs sharing one map: the object of the `--once` timing and the load benchmark.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 24);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

#define PROG(n)                                                  \
	SEC("xdp")                                               \
	int prog_##n(struct xdp_md *ctx)                         \
	{                                                        \
		__u32 key = n;                                   \
		__u64 *value = bpf_map_lookup_elem(&hits, &key); \
		if (value)                                       \
			__sync_fetch_and_add(value, 1);          \
		return XDP_PASS;                                 \
	}

PROG(0) PROG(1) PROG(2) PROG(3) PROG(4) PROG(5) PROG(6) PROG(7)
PROG(8) PROG(9) PROG(10) PROG(11) PROG(12) PROG(13) PROG(14) PROG(15)
PROG(16) PROG(17) PROG(18) PROG(19) PROG(20) PROG(21) PROG(22) PROG(23)

char LICENSE[] SEC("license") = "GPL";
