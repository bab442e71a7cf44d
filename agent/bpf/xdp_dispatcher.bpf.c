// SPDX-License-Identifier: GPL-2.0-only
//
// bpfpin's XDP dispatcher: runs up to ten XDP programs on one interface, in priority order.
//
// It speaks libxdp's multi-program protocol (version 2), so libxdp tools (`xdp-loader status`)
// recognise it: ten global functions prog0..prog9 that the programs of the interface replace
// with freplace (BPF_PROG_TYPE_EXT), a `.rodata` struct `conf` the agent sets at load time, and
// the `dispatcher_version` entry of the `xdp_metadata` section that libxdp reads from the BTF.
//
// Self-contained (no kernel or libbpf headers) so that building the agent needs clang only.

typedef unsigned char __u8;
typedef unsigned int __u32;

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP,
	XDP_PASS,
	XDP_TX,
	XDP_REDIRECT,
};

#define SEC(name) __attribute__((section(name), used))
// BTF-defined "map-like" metadata, as libbpf's __uint: the value is the array's length.
#define __uint(name, val) int(*name)[val]

#define XDP_METADATA_SECTION "xdp_metadata"
#define DISPATCHER_VERSION 2
// 'X' + 'D' + 'P'
#define DISPATCHER_MAGIC 236
// What an empty slot returns: bit 31 of every chain_call_actions mask is set, so the chain goes on
// past a slot whose program has been detached.
#define SLOT_EMPTY_RETVAL 31
#define MAX_SLOTS 10

// The layout libxdp reads from the dispatcher's .rodata (struct xdp_dispatcher_config, v2).
struct xdp_dispatcher_config {
	__u8 magic;
	__u8 dispatcher_version;
	__u8 num_progs_enabled;
	__u8 is_xdp_frags;
	__u32 chain_call_actions[MAX_SLOTS];
	__u32 run_prios[MAX_SLOTS];
	__u32 program_flags[MAX_SLOTS];
};

// Set by the agent before load; frozen by the kernel, so the verifier prunes unused slots.
volatile const struct xdp_dispatcher_config conf = {};

// A slot: global and not inlined, so freplace can replace it. The volatile return keeps the
// compiler from folding the constant into the caller; the ctx test keeps the argument used, so
// the function keeps the `int (struct xdp_md *)` prototype that extensions must match.
#define SLOT(n)                                                  \
	__attribute__((noinline)) int prog##n(struct xdp_md *ctx) \
	{                                                        \
		volatile int ret = SLOT_EMPTY_RETVAL;            \
		if (!ctx)                                        \
			return XDP_ABORTED;                      \
		return ret;                                      \
	}

SLOT(0)
SLOT(1)
SLOT(2)
SLOT(3)
SLOT(4)
SLOT(5)
SLOT(6)
SLOT(7)
SLOT(8)
SLOT(9)

// Runs slot n when it is enabled; returns from the dispatcher unless the slot's action is one
// after which the chain goes on.
#define RUN(n)                                                   \
	if (conf.num_progs_enabled < (n) + 1)                    \
		goto out;                                        \
	ret = prog##n(ctx);                                      \
	if (!((1U << ret) & conf.chain_call_actions[n]))         \
		return ret;

SEC("xdp")
int xdp_dispatcher(struct xdp_md *ctx)
{
	int ret;

	RUN(0)
	RUN(1)
	RUN(2)
	RUN(3)
	RUN(4)
	RUN(5)
	RUN(6)
	RUN(7)
	RUN(8)
	RUN(9)
out:
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
__uint(dispatcher_version, DISPATCHER_VERSION) SEC(XDP_METADATA_SECTION);
