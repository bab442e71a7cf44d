// Global variables of several types, for the globalData checks (agent/tests/bad_input.rs). No
// maps: the object loads with its BTF stripped too, which leaves aya's symbol-size check.
#include <linux/bpf.h>
#include <linux/types.h>

#define SEC(name) __attribute__((section(name), used))

typedef struct {
	__u64 limit;
	__u32 flags;
} config_t;

volatile const __u32 LIMIT = 1;
volatile const char NAME[16] = "bpfpin";
volatile const config_t CONFIG = {};

SEC("tracepoint/syscalls/sys_enter_getpid")
int read_globals(void *ctx)
{
	return LIMIT + NAME[0] + (int)CONFIG.flags;
}

char LICENSE[] SEC("license") = "GPL";
