// SPDX-License-Identifier: GPL-2.0
// In the style of bcc's libbpf-tools (opensnoop, execsnoop): syscall tracepoints reading the
// vmlinux.h context `struct trace_event_raw_sys_enter` (a fixed `args[6]`), `const volatile`
// filters, a perf event array for output, an enter/exit pair keyed by thread id, and a ksyscall
// probe.
#define __TARGET_ARCH_x86
// What vmlinux.h defines: bpf_tracing.h then reads the kernel's pt_regs field names.
#define __VMLINUX_H__
#include <linux/bpf.h>

// vmlinux.h's x86-64 `struct pt_regs`, which the BPF_KSYSCALL/BPF_KRETPROBE macros read (CO-RE).
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
} __attribute__((preserve_access_index));

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
} __attribute__((preserve_access_index));

struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
} __attribute__((preserve_access_index));

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
} __attribute__((preserve_access_index));

const volatile int targ_tgid = 0;
const volatile _Bool targ_failed = 0;

struct args_t {
	const char *fname;
	int flags;
};

struct event {
	__u32 pid;
	int ret;
	int flags;
	char fname[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct args_t);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

__u64 ksyscall_calls = 0;

SEC("tracepoint/syscalls/sys_enter_openat")
int tracepoint__syscalls__sys_enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = id;
	struct args_t args = {};

	if (targ_tgid && targ_tgid != tgid)
		return 0;
	args.fname = (const char *)ctx->args[1];
	args.flags = (int)ctx->args[2];
	bpf_map_update_elem(&start, &tid, &args, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int tracepoint__syscalls__sys_exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct args_t *ap = bpf_map_lookup_elem(&start, &tid);
	struct event event = {};
	int ret;

	if (!ap)
		return 0;
	ret = ctx->ret;
	if (targ_failed && ret >= 0)
		goto cleanup;
	event.pid = bpf_get_current_pid_tgid() >> 32;
	event.ret = ret;
	event.flags = ap->flags;
	bpf_probe_read_user_str(&event.fname, sizeof(event.fname), ap->fname);
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &event, sizeof(event));
cleanup:
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

// BPF_KPROBE on the syscall wrapper, as older libbpf-tools wrote it; BPF_KSYSCALL, which reads
// the `LINUX_HAS_SYSCALL_WRAPPER` kconfig extern (resolved by the patched aya-obj), is in
// kconfig_extern.bpf.c.
SEC("ksyscall/unlinkat")
int BPF_KPROBE(ksyscall_unlinkat, struct pt_regs *regs)
{
	__sync_fetch_and_add(&ksyscall_calls, 1);
	return 0;
}

SEC("kretsyscall/unlinkat")
int BPF_KRETPROBE(kretsyscall_unlinkat, long ret)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
