// SPDX-License-Identifier: GPL-2.0
// The hook kinds of agent/tests/attach_hooks.rs: one program per kind, each counting in
// hits[<kind>] only what the test itself does (its thread, its file, its port), so that the test
// can assert exact counts while other tests run.
#include <linux/bpf.h>
#include <linux/types.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <asm/unistd.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

enum {
	TP_BTF = 0,
	LSM_OPEN = 1,
	LSM_DENIED = 2,
	KSYSCALL = 3,
	KRETSYSCALL = 4,
	NF_DROPPED = 5,
	NF_PASSED = 6,
	CONNECT_UNIX = 7,
	SENDMSG_UNIX = 8,
	RECVMSG_UNIX = 9,
	GETPEERNAME_UNIX = 10,
	GETSOCKNAME_UNIX = 11,
	SYSCALL_RUN = 12,
	ACTION_RUN = 13,
	KINDS = 16,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KINDS);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

// Set by the tests through spec.globalData.
const volatile __u32 target_tid = 0;     // the thread whose calls count
const volatile __u64 target_ino = 0;     // the file whose opens count
const volatile __u64 deny_ino = 0;       // the file whose opens are denied
const volatile __u16 target_port = 0;    // UDP packets to this port are dropped; to +1 counted

static __always_inline void hit(__u32 kind)
{
	__u64 *value = bpf_map_lookup_elem(&hits, &kind);
	if (value)
		__sync_fetch_and_add(value, 1);
}

static __always_inline int mine(void)
{
	return (__u32)bpf_get_current_pid_tgid() == target_tid;
}

// tp_btf: the raw sys_enter tracepoint with typed arguments (struct pt_regs *regs, long id).
struct pt_regs;

SEC("tp_btf/sys_enter")
int BPF_PROG(tp_btf_getpid, struct pt_regs *regs, long id)
{
	if (id == __NR_getpid && mine())
		hit(TP_BTF);
	return 0;
}

// lsm: file_open(struct file *file); CO-RE reads of the two fields it needs.
struct inode {
	unsigned long i_ino;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

SEC("lsm/file_open")
int BPF_PROG(lsm_file_open, struct file *file)
{
	__u64 ino;

	if (!mine())
		return 0;
	ino = BPF_CORE_READ(file, f_inode, i_ino);
	if (ino == target_ino)
		hit(LSM_OPEN);
	if (ino == deny_ino) {
		hit(LSM_DENIED);
		return -1; // -EPERM
	}
	return 0;
}

// ksyscall / kretsyscall: kprobes on the arch wrapper of getpid.
SEC("ksyscall/getpid")
int ksyscall_getpid(void *ctx)
{
	if (mine())
		hit(KSYSCALL);
	return 0;
}

SEC("kretsyscall/getpid")
int kretsyscall_getpid(void *ctx)
{
	if (mine())
		hit(KRETSYSCALL);
	return 0;
}

// netfilter: the context is struct bpf_nf_ctx (include/net/netfilter/nf_bpf_link.h), whose skb
// is read with CO-RE. At the IPv4 hooks skb->data is the IP header.
struct sk_buff {
	unsigned char *data;
} __attribute__((preserve_access_index));

struct bpf_nf_ctx {
	const void *state;
	struct sk_buff *skb;
};

#define NF_DROP 0
#define NF_ACCEPT 1

SEC("netfilter")
int nf_drop_port(struct bpf_nf_ctx *ctx)
{
	struct iphdr ip = {};
	struct udphdr udp = {};
	unsigned char *data = BPF_CORE_READ(ctx->skb, data);
	__u16 port;

	if (bpf_probe_read_kernel(&ip, sizeof(ip), data) || ip.version != 4 ||
	    ip.protocol != IPPROTO_UDP)
		return NF_ACCEPT;
	if (bpf_probe_read_kernel(&udp, sizeof(udp), data + ip.ihl * 4))
		return NF_ACCEPT;
	port = bpf_ntohs(udp.dest);
	if (port == target_port) {
		hit(NF_DROPPED);
		return NF_DROP;
	}
	if (port == target_port + 1)
		hit(NF_PASSED);
	return NF_ACCEPT;
}

// cgroup sock_addr hooks of unix sockets (kernel 6.7+); 1 lets the call proceed.
SEC("cgroup/connect_unix")
int connect_unix(struct bpf_sock_addr *ctx)
{
	hit(CONNECT_UNIX);
	return 1;
}

SEC("cgroup/sendmsg_unix")
int sendmsg_unix(struct bpf_sock_addr *ctx)
{
	hit(SENDMSG_UNIX);
	return 1;
}

SEC("cgroup/recvmsg_unix")
int recvmsg_unix(struct bpf_sock_addr *ctx)
{
	hit(RECVMSG_UNIX);
	return 1;
}

SEC("cgroup/getpeername_unix")
int getpeername_unix(struct bpf_sock_addr *ctx)
{
	hit(GETPEERNAME_UNIX);
	return 1;
}

SEC("cgroup/getsockname_unix")
int getsockname_unix(struct bpf_sock_addr *ctx)
{
	hit(GETSOCKNAME_UNIX);
	return 1;
}

// Load-only program types: pinned, attached by something else (or run with BPF_PROG_RUN).
SEC("syscall")
int syscall_prog(void *ctx)
{
	hit(SYSCALL_RUN);
	return 42;
}

SEC("action")
int action_prog(struct __sk_buff *skb)
{
	hit(ACTION_RUN);
	return 0; // TC_ACT_OK
}

SEC("lwt_in")
int lwt_in_prog(struct __sk_buff *skb)
{
	return BPF_OK;
}

SEC("lwt_out")
int lwt_out_prog(struct __sk_buff *skb)
{
	return BPF_OK;
}

SEC("lwt_xmit")
int lwt_xmit_prog(struct __sk_buff *skb)
{
	return BPF_OK;
}

SEC("lwt_seg6local")
int lwt_seg6local_prog(struct __sk_buff *skb)
{
	return BPF_OK;
}

char LICENSE[] SEC("license") = "GPL";
