// SPDX-License-Identifier: Apache-2.0
// The sandbox ("pause") image of e2e real nodes, built by hack/images: it holds the pod's
// namespaces, reaps the zombies of the pod's processes (it is PID 1 when the pod shares its PID
// namespace) and exits on SIGTERM/SIGINT. Kubernetes' own pause does the same in a few lines of C;
// building it here keeps the e2e nodes free of any registry.
//
// `pause tick` (a container's args: [tick]) instead calls the function bpfpin_tick every 50 ms,
// for the e2e uprobes in containers: hack/images keeps that one symbol when it strips the binary.
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long ticks;

__attribute__((noinline)) void bpfpin_tick(void)
{
	__asm__ volatile("" ::: "memory");
	ticks++;
}

static void on_stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void on_child(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(int argc, char **argv)
{
	struct sigaction stop = { .sa_handler = on_stop };
	struct sigaction child = { .sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART };
	if (sigaction(SIGTERM, &stop, NULL) || sigaction(SIGINT, &stop, NULL) ||
	    sigaction(SIGCHLD, &child, NULL))
		return 1;
	if (argc > 1 && strcmp(argv[1], "tick") == 0) {
		const struct timespec every = { .tv_sec = 0, .tv_nsec = 50 * 1000 * 1000 };
		for (;;) {
			bpfpin_tick();
			nanosleep(&every, NULL);
		}
	}
	for (;;)
		pause();
}
