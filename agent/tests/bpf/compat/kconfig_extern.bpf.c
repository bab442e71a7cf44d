// SPDX-License-Identifier: GPL-2.0
// A ksyscall probe written with libbpf's BPF_KSYSCALL macro, which reads the
// `LINUX_HAS_SYSCALL_WRAPPER` `__kconfig` extern (a `.kconfig` section libbpf fills at load):
// aya 0.14 has no `.kconfig` support; the patched aya-obj in third_party resolves it as libbpf
// does, so this object pins like the rest of the corpus.
#define __TARGET_ARCH_x86
#define __VMLINUX_H__
#include <linux/bpf.h>

struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
} __attribute__((preserve_access_index));

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

__u64 unlinkat_calls = 0;

SEC("ksyscall/unlinkat")
int BPF_KSYSCALL(unlinkat_entry, int dfd, const char *pathname)
{
	__sync_fetch_and_add(&unlinkat_calls, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
