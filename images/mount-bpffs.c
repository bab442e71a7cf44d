// SPDX-License-Identifier: Apache-2.0
// bpfpin-mount-bpffs DIR: mounts bpffs on DIR unless DIR already is a bpffs; exits 0 when DIR is a
// bpffs afterwards. The chart's `mount-bpffs` init container runs it with Bidirectional mount
// propagation on the host's /sys/fs/bpf, so a bpffs it mounts lands on the host and pins outlive
// the agent pod. The API server allows Bidirectional only in privileged containers: keeping this
// step in its own statically linked, single-purpose binary keeps the long-running agent
// unprivileged, and the agent image needs no shell.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#define BPF_FS_MAGIC 0xcafe4a11

static int is_bpffs(const char *dir)
{
	struct statfs st;
	return statfs(dir, &st) == 0 && (unsigned long)st.f_type == BPF_FS_MAGIC;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: bpfpin-mount-bpffs DIR (e.g. /sys/fs/bpf)\n");
		return 2;
	}
	const char *dir = argv[1];
	if (is_bpffs(dir)) {
		printf("bpfpin-mount-bpffs: %s is a bpffs already; nothing to do\n", dir);
		return 0;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "bpfpin-mount-bpffs: creating %s: %s\n", dir, strerror(errno));
		return 1;
	}
	// mode=0700 and these flags are what systemd uses for /sys/fs/bpf.
	if (mount("bpf", dir, "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") != 0) {
		fprintf(stderr,
			"bpfpin-mount-bpffs: mounting bpffs on %s: %s (needs CAP_SYS_ADMIN, i.e. a "
			"privileged container, and a kernel with CONFIG_BPF_SYSCALL)\n",
			dir, strerror(errno));
		return 1;
	}
	if (!is_bpffs(dir)) {
		fprintf(stderr, "bpfpin-mount-bpffs: mounted bpffs on %s but it is not visible there\n",
			dir);
		return 1;
	}
	printf("bpfpin-mount-bpffs: mounted bpffs on %s\n", dir);
	return 0;
}
