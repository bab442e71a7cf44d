// SPDX-License-Identifier: GPL-2.0
// USDT programs written against libbpf's <bpf/usdt.bpf.h>, as a libbpf user writes them: each
// records what BPF_USDT read of its probe's arguments into `stats`, so a test can compare them
// with what usdt_target passed. usdt.bpf.h reads its per-site argument specs from the
// __bpf_usdt_specs map, which the loader fills from the target's .note.stapsdt notes, and the
// kconfig extern LINUX_HAS_BPF_COOKIE.
//
// With USDT_AUTO_TARGET defined (a path), one more program auto-attaches through its section
// `usdt/<path>:bpfpin:deref`, as libbpf's SEC("usdt/...") does.
#define __TARGET_ARCH_x86
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

// Slots of `stats` (u64; sums of signed values are two's complement).
enum {
	ARGS_COUNT = 0, ARGS_SUM0, ARGS_SUM1, ARGS_SUM2, ARGS_SUM3, ARGS_ARGC, ARGS_NEGATIVE,
	DEREF_COUNT = 8, DEREF_SUM0, DEREF_SUM1,
	GUARDED_COUNT = 16, GUARDED_SUM,
	LIB_COUNT = 24, LIB_SUM0, LIB_SUM1,
	AUTO_COUNT = 32,
	SLOTS = 40,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void add(__u32 slot, __u64 v)
{
	__u64 *value = bpf_map_lookup_elem(&stats, &slot);
	if (value)
		__sync_fetch_and_add(value, v);
}

SEC("usdt")
int BPF_USDT(on_args, int a, long b, short c, int d)
{
	add(ARGS_COUNT, 1);
	add(ARGS_SUM0, a);
	add(ARGS_SUM1, b);
	add(ARGS_SUM2, c);
	add(ARGS_SUM3, d);
	add(ARGS_ARGC, bpf_usdt_arg_cnt(ctx));
	if (c < 0)
		add(ARGS_NEGATIVE, 1);
	return 0;
}

SEC("usdt")
int BPF_USDT(on_deref, int a, long b)
{
	add(DEREF_COUNT, 1);
	add(DEREF_SUM0, a);
	add(DEREF_SUM1, b);
	return 0;
}

SEC("usdt")
int BPF_USDT(on_guarded, int v)
{
	add(GUARDED_COUNT, 1);
	add(GUARDED_SUM, v);
	return 0;
}

SEC("usdt")
int BPF_USDT(on_lib, int x, long y)
{
	add(LIB_COUNT, 1);
	add(LIB_SUM0, x);
	add(LIB_SUM1, y);
	return 0;
}

#ifdef USDT_AUTO_TARGET
SEC("usdt/" USDT_AUTO_TARGET ":bpfpin:deref")
int BPF_USDT(auto_deref, int a)
{
	add(AUTO_COUNT, 1);
	return 0;
}
#endif

char LICENSE[] SEC("license") = "GPL";
