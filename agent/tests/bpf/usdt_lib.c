// The shared library of the USDT tests (libbpfpin_usdt.so, linked into usdt_target): a probe
// in a library, whose note address is relative to the library's own load address.
#include <sys/sdt.h>

__attribute__((noinline)) void bpfpin_lib_call(int x, long y)
{
	DTRACE_PROBE2(bpfpinlib, call, x, y);
	__asm__ volatile("" ::: "memory");
}
