// A user-space program for the USDT tests, with probes from <sys/sdt.h> (systemtap-sdt-dev):
// `usdt_target N [wait]` fires each probe a known number of times with known arguments, so a test
// can assert what the BPF side read. With `wait` it first waits for a line on stdin (a test
// attaches a probe scoped to its pid in between).
//
//   bpfpin:args     3 sites: twice in the loop (N times each), once after it; 4 arguments of 4
//                   forms (32-bit register, 64-bit register, signed 16-bit, the constant 42)
//   bpfpin:deref    N times, from a function built without optimisation: its 2 arguments are
//                   stack slots (`-4@-20(%rbp)`), read through the frame pointer
//   bpfpin:guarded  N times, but only while its semaphore is set (a probe attached with the
//                   semaphore's ref_ctr_offset sets it)
//                   semaphore's ref_ctr_offset sets it); in usdt_guarded.c, as <sys/sdt.h> gives
//                   every probe of a file a semaphore or none
//   bpfpinlib:call  in libbpfpin_usdt.so (usdt_lib.c), N times
#include <sys/sdt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void bpfpin_lib_call(int x, long y);
int bpfpin_guarded_site(int v);

__attribute__((noinline, optimize("O0"))) static void deref_site(int a, long b)
{
	DTRACE_PROBE2(bpfpin, deref, a, b);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	int guarded_fired = 0;
	if (argc > 2 && strcmp(argv[2], "wait") == 0) {
		char line[16];
		if (!fgets(line, sizeof(line), stdin))
			return 2;
	}
	for (volatile int i = 1; i <= n; i++) {
		int v = i;
		DTRACE_PROBE4(bpfpin, args, v, (long)v * -1000, (short)(v - 10), 42);
		deref_site(v * 3, (long)v << 33);
		guarded_fired += bpfpin_guarded_site(v);
		bpfpin_lib_call(v, (long)v * 7);
		DTRACE_PROBE4(bpfpin, args, v + 100, (long)v, (short)-1, 42);
	}
	DTRACE_PROBE4(bpfpin, args, 1000, 0L, (short)0, 42);
	printf("guarded %d\n", guarded_fired);
	return 0;
}
