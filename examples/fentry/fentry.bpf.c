// SPDX-License-Identifier: GPL-2.0
// Counts unlink(2)/unlinkat(2) calls on the node with BPF trampolines: fentry on the kernel's
// do_unlinkat() counts calls going in, fexit counts calls coming back. Cheaper than kprobes, and
// the kernel checks the program against the function's BTF (/sys/kernel/btf/vmlinux) at load.
//
// No vmlinux.h needed: the programs take the raw context (one u64 per argument, and for fexit the
// return value after them) and do not read it. The function named in the section is replaced by
// the one in the manifest (spec.programs[].attach.fentry / fexit).
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

SEC("fentry/do_unlinkat")
int unlink_fentry(unsigned long long *ctx)
{
	count(ENTERED);
	return 0;
}

SEC("fexit/do_unlinkat")
int unlink_fexit(unsigned long long *ctx)
{
	count(RETURNED);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
