// SPDX-License-Identifier: GPL-2.0
// One program bpfpin loads (`tc`) next to programs it cannot (`kprobe.multi`) or that no loader knows:
// only the programs a spec lists are ever looked at.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int wanted(struct __sk_buff *skb)
{
	return 0;
}

SEC("kprobe.multi/do_unlinkat")
int run_me(void *ctx)
{
	return 0;
}

SEC("not_a_libbpf_section/at_all")
int nobody_knows(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
