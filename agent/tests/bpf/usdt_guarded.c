// The semaphore-guarded probe of usdt_target (bpfpin:guarded): it fires only while its
// semaphore is non-zero, which the kernel sees to while a uprobe attached with the semaphore's
// offset (perf_event_open's ref_ctr_offset) is there. Returns whether it fired.
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

// The name <sys/sdt.h> expects: <provider>_<name>_semaphore, in section .probes.
unsigned short bpfpin_guarded_semaphore __attribute__((unused, section(".probes")));

__attribute__((noinline)) int bpfpin_guarded_site(int v)
{
	if (!bpfpin_guarded_semaphore)
		return 0;
	DTRACE_PROBE1(bpfpin, guarded, v);
	return 1;
}
