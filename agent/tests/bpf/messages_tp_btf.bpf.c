// SPDX-License-Identifier: GPL-2.0
// A tp_btf program, attached as the wrong kind in agent/tests/error_messages.rs.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tp_btf/sched_switch")
int on_switch(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
