// SPDX-License-Identifier: GPL-2.0
// An XDP program for a hook that is already taken (agent/tests/error_messages.rs).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int pass_all(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
