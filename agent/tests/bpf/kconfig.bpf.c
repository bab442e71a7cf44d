// SPDX-License-Identifier: GPL-2.0
// `.kconfig` externs of every kind libbpf resolves, copied into `out` on each getpid(2) so a
// test can compare them with the kernel's configuration: a bool, a tristate, numbers, a string,
// the LINUX_* values the loader computes, and a weak option no kernel has (0).
// With KCONFIG_STRONG_MISSING defined, one more extern is not weak and no kernel has it: the load
// must fail naming it.
#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern unsigned int LINUX_KERNEL_VERSION __kconfig;
extern bool LINUX_HAS_BPF_COOKIE __kconfig;
extern bool CONFIG_BPF_SYSCALL __kconfig;
extern enum libbpf_tristate CONFIG_BPF_JIT __kconfig __weak;
extern int CONFIG_HZ __kconfig __weak;
extern unsigned long long CONFIG_NR_CPUS __kconfig __weak;
extern char CONFIG_DEFAULT_HOSTNAME[16] __kconfig __weak;
extern bool CONFIG_BPFPIN_NO_SUCH_OPTION __kconfig __weak;
#ifdef KCONFIG_STRONG_MISSING
extern int CONFIG_BPFPIN_STRONG_MISSING __kconfig;
#endif

// Slots of `out`: 0 LINUX_KERNEL_VERSION, 1 LINUX_HAS_BPF_COOKIE, 2 CONFIG_BPF_SYSCALL,
// 3 CONFIG_BPF_JIT, 4 CONFIG_HZ, 5 CONFIG_NR_CPUS, 6 the weak missing option, 7 calls,
// 8 and 9 the 16 bytes of CONFIG_DEFAULT_HOSTNAME.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 10);
	__type(key, __u32);
	__type(value, __u64);
} out SEC(".maps");

static __always_inline void put(__u32 slot, __u64 v)
{
	__u64 *value = bpf_map_lookup_elem(&out, &slot);
	if (value)
		*value = v;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int read_kconfig(void *ctx)
{
	__u64 no_such = CONFIG_BPFPIN_NO_SUCH_OPTION, name[2];
	__u32 calls = 7;
	__u64 *count;

#ifdef KCONFIG_STRONG_MISSING
	no_such += CONFIG_BPFPIN_STRONG_MISSING;
#endif
	put(0, LINUX_KERNEL_VERSION);
	put(1, LINUX_HAS_BPF_COOKIE);
	put(2, CONFIG_BPF_SYSCALL);
	put(3, CONFIG_BPF_JIT);
	put(4, CONFIG_HZ);
	put(5, CONFIG_NR_CPUS);
	put(6, no_such);
	__builtin_memcpy(name, CONFIG_DEFAULT_HOSTNAME, sizeof(name));
	put(8, name[0]);
	put(9, name[1]);
	count = bpf_map_lookup_elem(&out, &calls);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
