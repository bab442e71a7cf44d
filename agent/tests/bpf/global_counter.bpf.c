// SPDX-License-Identifier: GPL-2.0
// A counter kept in global variables, as modern libbpf code keeps it: `calls` in .bss, `total` in
// .data, the thread to count and the step in .rodata (set with spec.globalData). Counting only one
// thread makes the counts exact while other tests call getpid too (agent/tests/internal_maps.rs).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef LAYOUT_V2
#define LAYOUT_V2 0
#endif

volatile const __u32 TID = 0;
volatile const __u64 STEP = 1;

#if LAYOUT_V2
// Another variable in front: the same section size would not be the same layout.
__u64 first = 0;
#endif
__u64 calls = 0;
__u64 total = 100;

SEC("tracepoint/syscalls/sys_enter_getpid")
int count_calls(void *ctx)
{
	if ((__u32)bpf_get_current_pid_tgid() != TID)
		return 0;
	__sync_fetch_and_add(&calls, STEP);
	__sync_fetch_and_add(&total, 1);
#if LAYOUT_V2
	__sync_fetch_and_add(&first, 1);
#endif
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int unrelated(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
