// SPDX-License-Identifier: GPL-2.0
// The sample object of bpfpin's demo and tests: a tracepoint counter, an XDP packet counter, a
// program that is only pinned, a map shared by name (LIBBPF_PIN_BY_NAME), and a global constant
// that spec.globalData can override.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// How much each getpid() adds to counts[0]; override with globalData: {INCREMENT: <8 bytes>}.
volatile const __u64 INCREMENT = 1;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} packets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} last_pid SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int count_getpid(void *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&counts, &key);
	if (value)
		__sync_fetch_and_add(value, INCREMENT);
	__u64 pid = bpf_get_current_pid_tgid() >> 32;
	bpf_map_update_elem(&last_pid, &key, &pid, BPF_ANY);
	return 0;
}

SEC("xdp")
int count_packets(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&packets, &key);
	if (value)
		__sync_fetch_and_add(value, 1);
	return XDP_PASS;
}

SEC("xdp")
int tail_target(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
