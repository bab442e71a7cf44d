// SPDX-License-Identifier: GPL-2.0
// CO-RE reads of a syscall tracepoint's flexible `args[]` (aya-rs/aya#1662), in the three ways
// libbpf programs write them. Each program records, for the openat(2) whose mode is MAGIC_MODE,
// the path its args[1] points to and its args[2] (flags) and args[3] (mode), in its own slot of
// `seen`: the test opens a file of its own and checks every slot.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define MAGIC_MODE 01537

// The kernel's layout, as vmlinux.h declares it: the access string of args[1] is 0:2:1.
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
} __attribute__((preserve_access_index));

struct syscall_trace_enter {
	struct trace_entry ent;
	int nr;
	unsigned long args[];
} __attribute__((preserve_access_index));

// A local definition that keeps only the field it reads (access string 0:0:1): args is at offset
// 0 here and at 16 in the kernel, so only a correct relocation reads the right argument.
struct syscall_trace_enter___min {
	unsigned long args[0];
} __attribute__((preserve_access_index));

struct seen {
	char path[64];
	__u64 flags;
	__u64 mode;
	__u64 hits;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, struct seen);
} seen SEC(".maps");

static __always_inline void record(__u32 slot, unsigned long path, unsigned long flags,
				   unsigned long mode)
{
	struct seen *s = bpf_map_lookup_elem(&seen, &slot);
	if (!s)
		return;
	bpf_probe_read_user_str(s->path, sizeof(s->path), (const void *)path);
	s->flags = flags;
	s->mode = mode;
	__sync_fetch_and_add(&s->hits, 1);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int openat_direct(struct syscall_trace_enter *ctx)
{
	if (ctx->args[3] != MAGIC_MODE)
		return 0;
	record(0, ctx->args[1], ctx->args[2], ctx->args[3]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int openat_core_read(struct syscall_trace_enter *ctx)
{
	unsigned long path = BPF_CORE_READ(ctx, args[1]);
	unsigned long flags = BPF_CORE_READ(ctx, args[2]);
	unsigned long mode = BPF_CORE_READ(ctx, args[3]);
	if (mode != MAGIC_MODE)
		return 0;
	record(1, path, flags, mode);
	return 0;
}

SEC("tp/syscalls/sys_enter_openat")
int openat_minimal(struct syscall_trace_enter___min *ctx)
{
	if (ctx->args[3] != MAGIC_MODE)
		return 0;
	record(2, ctx->args[1], ctx->args[2], ctx->args[3]);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
