// A user-space program for the uprobe tests: calls bpfpin_probe_me() as many times as argv[1]
// says. With a second argument `wait`, it first waits for a line on stdin, so that a test can
// attach a uprobe scoped to its pid before the calls.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) int bpfpin_probe_me(int x)
{
	__asm__ volatile("" ::: "memory");
	return x + 1;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1, acc = 0;
	if (argc > 2 && strcmp(argv[2], "wait") == 0) {
		char line[16];
		if (!fgets(line, sizeof(line), stdin))
			return 2;
	}
	for (int i = 0; i < n; i++)
		acc = bpfpin_probe_me(acc);
	return acc == n ? 0 : 1;
}
