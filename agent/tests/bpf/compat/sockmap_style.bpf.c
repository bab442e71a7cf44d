// SPDX-License-Identifier: GPL-2.0
// In the style of the sockmap/sockops tutorials (bpf-developer-tutorial, cilium's socket
// acceleration): a sockops program filling a sockhash, sk_msg and sk_skb verdicts redirecting
// through it, a stream parser, plus the cgroup socket hooks libbpf names `cgroup/*` and an
// sk_lookup dispatcher.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct sock_key {
	__u32 sip;
	__u32 dip;
	__u32 sport;
	__u32 dport;
	__u32 family;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65535);
	__type(key, struct sock_key);
	__type(value, int);
} sock_ops_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sock_map SEC(".maps");

SEC("sockops")
int bpf_sockops_handler(struct bpf_sock_ops *skops)
{
	struct sock_key key = {};

	if (skops->family != 2 /* AF_INET */)
		return 0;
	if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 0;
	key.sip = skops->local_ip4;
	key.dip = skops->remote_ip4;
	key.sport = bpf_htonl(skops->local_port);
	key.dport = skops->remote_port;
	key.family = skops->family;
	bpf_sock_hash_update(skops, &sock_ops_map, &key, BPF_NOEXIST);
	return 0;
}

SEC("sk_msg")
int bpf_redir(struct sk_msg_md *msg)
{
	struct sock_key key = {
		.sip = msg->remote_ip4,
		.dip = msg->local_ip4,
		.dport = bpf_htonl(msg->local_port),
		.sport = msg->remote_port,
		.family = msg->family,
	};
	return bpf_msg_redirect_hash(msg, &sock_ops_map, &key, BPF_F_INGRESS);
}

SEC("sk_skb/stream_parser")
int bpf_prog_parser(struct __sk_buff *skb)
{
	return skb->len;
}

SEC("sk_skb/stream_verdict")
int bpf_prog_verdict(struct __sk_buff *skb)
{
	return bpf_sk_redirect_map(skb, &sock_map, 0, 0);
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->user_port == bpf_htons(1))
		return 0;
	return 1;
}

SEC("cgroup/sock_create")
int sock_create(struct bpf_sock *sk)
{
	return 1;
}

SEC("cgroup/sysctl")
int sysctl_ro(struct bpf_sysctl *ctx)
{
	return ctx->write ? 0 : 1;
}

SEC("sk_lookup")
int sk_dispatch(struct bpf_sk_lookup *ctx)
{
	return SK_PASS;
}

SEC("iter/task")
int dump_task(void *ctx)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int raw_sys_enter(void *ctx)
{
	return 0;
}

SEC("perf_event")
int on_sample(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
