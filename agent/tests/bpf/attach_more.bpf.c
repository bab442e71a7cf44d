// SPDX-License-Identifier: GPL-2.0
// One program per attach kind of issue 13 that this host runs, each counting its hits in
// hits[<kind>], so a test can prove that the kind's pinned link really runs the program.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

enum {
	RAW_TP = 0, SOCKOPS, CONNECT4, CONNECT6, BIND4, BIND6, SENDMSG4, SENDMSG6, RECVMSG4,
	RECVMSG6, GETPEERNAME4, GETSOCKNAME4, SOCK_CREATE, POST_BIND4, SYSCTL, GETSOCKOPT,
	SETSOCKOPT, DEVICE, SK_LOOKUP, SK_MSG, SK_SKB, PERF_EVENT, ITER, KINDS
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KINDS);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

// The sockets whose messages sk_msg and sk_skb see (the test inserts a connected pair).
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} socks SEC(".maps");

static __always_inline void hit(__u32 kind)
{
	__u64 *value = bpf_map_lookup_elem(&hits, &kind);
	if (value)
		__sync_fetch_and_add(value, 1);
}

SEC("raw_tp/sys_enter")
int raw_tp_count(void *ctx) { hit(RAW_TP); return 0; }

// A bare section: the manifest names the raw tracepoint.
SEC("raw_tp")
int raw_tp_any(void *ctx) { hit(RAW_TP); return 0; }

SEC("sockops")
int sockops_count(struct bpf_sock_ops *ctx) { hit(SOCKOPS); return 1; }

SEC("cgroup/connect4")
int connect4_count(struct bpf_sock_addr *ctx) { hit(CONNECT4); return 1; }

SEC("cgroup/connect6")
int connect6_count(struct bpf_sock_addr *ctx) { hit(CONNECT6); return 1; }

SEC("cgroup/bind4")
int bind4_count(struct bpf_sock_addr *ctx) { hit(BIND4); return 1; }

SEC("cgroup/bind6")
int bind6_count(struct bpf_sock_addr *ctx) { hit(BIND6); return 1; }

SEC("cgroup/sendmsg4")
int sendmsg4_count(struct bpf_sock_addr *ctx) { hit(SENDMSG4); return 1; }

SEC("cgroup/sendmsg6")
int sendmsg6_count(struct bpf_sock_addr *ctx) { hit(SENDMSG6); return 1; }

SEC("cgroup/recvmsg4")
int recvmsg4_count(struct bpf_sock_addr *ctx) { hit(RECVMSG4); return 1; }

SEC("cgroup/recvmsg6")
int recvmsg6_count(struct bpf_sock_addr *ctx) { hit(RECVMSG6); return 1; }

SEC("cgroup/getpeername4")
int getpeername4_count(struct bpf_sock_addr *ctx) { hit(GETPEERNAME4); return 1; }

SEC("cgroup/getsockname4")
int getsockname4_count(struct bpf_sock_addr *ctx) { hit(GETSOCKNAME4); return 1; }

SEC("cgroup/sock_create")
int sock_create_count(struct bpf_sock *ctx) { hit(SOCK_CREATE); return 1; }

SEC("cgroup/post_bind4")
int post_bind4_count(struct bpf_sock *ctx) { hit(POST_BIND4); return 1; }

SEC("cgroup/sysctl")
int sysctl_count(struct bpf_sysctl *ctx) { hit(SYSCTL); return 1; }

SEC("cgroup/getsockopt")
int getsockopt_count(struct bpf_sockopt *ctx) { hit(GETSOCKOPT); return 1; }

SEC("cgroup/setsockopt")
int setsockopt_count(struct bpf_sockopt *ctx) { hit(SETSOCKOPT); return 1; }

SEC("cgroup/dev")
int device_count(struct bpf_cgroup_dev_ctx *ctx) { hit(DEVICE); return 1; }

SEC("sk_lookup")
int sk_lookup_count(struct bpf_sk_lookup *ctx) { hit(SK_LOOKUP); return SK_PASS; }

SEC("sk_msg")
int sk_msg_count(struct sk_msg_md *msg) { hit(SK_MSG); return SK_PASS; }

SEC("sk_skb/stream_verdict")
int sk_skb_count(struct __sk_buff *skb) { hit(SK_SKB); return SK_PASS; }

SEC("perf_event")
int perf_event_count(void *ctx) { hit(PERF_EVENT); return 0; }

// The iterator's context, as the kernel's BTF has it (no vmlinux.h here).
struct seq_file;
struct task_struct;
struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
};
struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
};

SEC("iter/task")
int iter_tasks(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;

	if (!ctx->task)
		return 0;
	hit(ITER);
	bpf_seq_write(seq, "task\n", 5);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
