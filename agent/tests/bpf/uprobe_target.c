// A user-space program for the uprobe test: calls bpfpin_probe_me() as many times as argv[1] says.
#include <stdlib.h>

__attribute__((noinline)) int bpfpin_probe_me(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1, acc = 0;
	for (int i = 0; i < n; i++)
		acc = bpfpin_probe_me(acc);
	return acc == n ? 0 : 1;
}
