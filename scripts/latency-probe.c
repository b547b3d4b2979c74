/*
 * Isolated-message latency measured from C, without Python in the loop, and
 * the same for a minimal implementation of the protocol, step by step.
 *
 * Exists for docs/latency-profile.md: the benchmark (scripts/bench.py)
 * measures end to end through Python, whose own wake-ups and system calls add
 * tens of µs to every path; this probe shows what the paths and the protocol
 * cost by themselves, and where the protocol's time goes. Not part of the
 * benchmark; build and run by hand:
 *
 *     cc -O2 -o target/latency-probe scripts/latency-probe.c
 *     target/latency-probe N cat
 *     target/latency-probe N cat2
 *     target/latency-probe N tail DIR
 *     target/latency-probe N filebus EXE DIR lossy|lossless
 *     target/latency-probe N protocol DIR lossy|lossless [prepared|allocated]
 *
 * Sends N one-line messages, each after a random pause of 20-40 ms, into the
 * path's input (a pipe; for tail, a file it follows) and times each until it
 * left the output (a pipe). `protocol` runs the protocol's system calls in two
 * forked processes: the producer reads its input, creates an unnamed file
 * (O_TMPFILE; with `prepared`, created before waiting for input; with
 * `allocated`, also given its first 4 KiB with fallocate(FALLOC_FL_KEEP_SIZE)
 * then, so that writing it needs no allocation), writes it,
 * and under flock(F.lock) links it as F.__new__ and renames it to F (lossless:
 * first waits by inotify for F to be gone); the consumer waits by inotify for
 * F, opens it and sendfile()s it out (lossless: under the lock, then removes
 * it). For `protocol` it also prints the median of each step.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX 100000

/* Timestamps shared by the three processes (MAP_SHARED), per message:
 * 0 sent, 1 producer awake, 2 file created, 3 written, 4 locked, 5 linked,
 * 6 renamed, 7 consumer awake, 8 consumer opened F, 9 sent out, 10 arrived. */
enum { SENT, P_AWAKE, CREATED, WRITTEN, LOCKED, LINKED, RENAMED, C_AWAKE, OPENED, OUT, ARRIVED, STAMPS };
static long long (*ts)[STAMPS];
static char F[4096], NEW[4096], LOCK[4096];
static const char *dir;
static int lossless, prepared, allocated;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static long long now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return x < y ? -1 : x > y;
}

/* Messages carry their index, so each process knows which slot to stamp. */
static long index_of(const char *msg)
{
	return strtol(msg + 1, NULL, 10);
}

static int watch(uint32_t events)
{
	int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (in < 0 || inotify_add_watch(in, dir, events | IN_ONLYDIR) < 0)
		die("inotify");
	return in;
}

static void wait_event(int in)
{
	char events[4096];
	struct pollfd p = {.fd = in, .events = POLLIN};
	poll(&p, 1, 100);
	while (read(in, events, sizeof events) > 0)
		;
}

static void producer(int input)
{
	char buf[4096], proc[64];
	struct stat st;
	int lock = open(LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	int in = watch(IN_DELETE);
	int fd = -1;
	if (lock < 0)
		die("open lock");
	for (;;) {
		if (prepared)
			fd = open(dir, O_WRONLY | O_TMPFILE | O_CLOEXEC, 0666);
		if (allocated && fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4096))
			die("fallocate");
		struct pollfd p = {.fd = input, .events = POLLIN};
		poll(&p, 1, -1);
		long long awake = now();
		ssize_t n = read(input, buf, sizeof buf - 1);
		if (n <= 0)
			exit(0);
		buf[n] = 0;
		long long *t = ts[index_of(buf)];
		t[P_AWAKE] = awake;
		if (!prepared)
			fd = open(dir, O_WRONLY | O_TMPFILE | O_CLOEXEC, 0666);
		if (fd < 0)
			die("O_TMPFILE");
		t[CREATED] = now();
		if (write(fd, buf, n) != n)
			die("write");
		t[WRITTEN] = now();
		if (lossless)
			while (lstat(F, &st) == 0)
				wait_event(in);
		flock(lock, LOCK_EX);
		t[LOCKED] = now();
		snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
		if (linkat(AT_FDCWD, proc, AT_FDCWD, NEW, AT_SYMLINK_FOLLOW))
			die("linkat");
		t[LINKED] = now();
		if (rename(NEW, F))
			die("rename");
		t[RENAMED] = now();
		flock(lock, LOCK_UN);
		close(fd);
	}
}

static void consumer(int output)
{
	char buf[64];
	struct stat st;
	int lock = open(LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	int in = watch(IN_MOVED_TO);
	int last = -1;
	if (lock < 0)
		die("open lock");
	for (;;) {
		wait_event(in);
		long long awake = now();
		if (lossless)
			flock(lock, LOCK_EX);
		int fd = open(F, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) || pread(fd, buf, sizeof buf - 1, 0) <= 0) {
			if (fd >= 0)
				close(fd);
			if (lossless)
				flock(lock, LOCK_UN);
			continue;
		}
		long long *t = ts[index_of(buf)];
		t[C_AWAKE] = awake;
		t[OPENED] = now();
		off_t off = 0;
		sendfile(output, fd, &off, st.st_size);
		t[OUT] = now();
		if (lossless) {
			unlink(F);
			flock(lock, LOCK_UN);
		}
		/* Like filebus's lossy consumer, keep the chunk until the next
		 * one went out (its last close may free its storage). */
		if (last >= 0)
			close(last);
		last = fd;
	}
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: see the comment at the top of latency-probe.c\n");
		return 2;
	}
	long n = atol(argv[1]);
	const char *mode = argv[2];
	int in[2], out[2], input;
	pid_t kids[2] = {-1, -1};
	if (n <= 0 || n > MAX || pipe(in) || pipe(out))
		die("setup");
	ts = mmap(NULL, sizeof(*ts) * (MAX + 1), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ts == MAP_FAILED)
		die("mmap");
	input = in[1];
	if (!strcmp(mode, "cat")) {
		if (!(kids[0] = fork())) {
			dup2(in[0], 0), dup2(out[1], 1);
			execlp("cat", "cat", (char *)NULL);
			die("cat");
		}
	} else if (!strcmp(mode, "cat2")) {
		/* writer | cat | cat | reader: the process hops of the CLI path
		 * (writer | producer | consumer | reader), without a bus. */
		int mid[2];
		if (pipe(mid))
			die("pipe");
		if (!(kids[0] = fork())) {
			dup2(in[0], 0), dup2(mid[1], 1);
			close(mid[0]);
			execlp("cat", "cat", (char *)NULL);
			die("cat");
		}
		if (!(kids[1] = fork())) {
			dup2(mid[0], 0), dup2(out[1], 1);
			close(mid[1]);
			execlp("cat", "cat", (char *)NULL);
			die("cat");
		}
		close(mid[0]);
		close(mid[1]);
	} else if (!strcmp(mode, "tail") && argc == 4) {
		mkdir(argv[3], 0755);
		snprintf(F, sizeof F, "%s/log", argv[3]);
		input = open(F, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (input < 0)
			die(F);
		if (!(kids[0] = fork())) {
			dup2(out[1], 1);
			execlp("tail", "tail", "-F", "-s", "0.1", "-n", "+1", F, (char *)NULL);
			die("tail");
		}
	} else if (!strcmp(mode, "filebus") && argc == 6) {
		lossless = !strcmp(argv[5], "lossless");
		mkdir(argv[4], 0755);
		snprintf(F, sizeof F, "%s/bus", argv[4]);
		char *cv[] = {argv[3], "--filename", F, lossless ? "--back-pressure" : "consumer",
			      lossless ? "consumer" : NULL, NULL};
		char *pv[] = {argv[3], "--filename", F, lossless ? "--back-pressure" : "producer",
			      lossless ? "producer" : NULL, NULL};
		if (!(kids[0] = fork())) {
			dup2(out[1], 1);
			execv(argv[3], cv);
			die(argv[3]);
		}
		if (!(kids[1] = fork())) {
			dup2(in[0], 0);
			execv(argv[3], pv);
			die(argv[3]);
		}
	} else if (!strcmp(mode, "protocol") && (argc == 5 || argc == 6)) {
		dir = argv[3];
		lossless = !strcmp(argv[4], "lossless");
		allocated = argc == 6 && !strcmp(argv[5], "allocated");
		prepared = allocated || (argc == 6 && !strcmp(argv[5], "prepared"));
		mkdir(dir, 0755);
		snprintf(F, sizeof F, "%s/bus", dir);
		snprintf(NEW, sizeof NEW, "%s/bus.__new__", dir);
		snprintf(LOCK, sizeof LOCK, "%s/bus.lock", dir);
		if (!(kids[0] = fork())) {
			close(in[1]);
			consumer(out[1]);
		}
		if (!(kids[1] = fork())) {
			close(in[1]);
			producer(in[0]);
		}
	} else {
		fprintf(stderr, "usage: see the comment at the top of latency-probe.c\n");
		return 2;
	}
	close(in[0]);
	close(out[1]);

	char msg[32], got[4096];
	long long *v = malloc(sizeof *v * n);
	srand(3);
	usleep(300000); /* let the processes start */
	for (long i = 0; i <= n; i++) { /* message 0 is a warm-up */
		if (i)
			usleep(20000 + rand() % 20000);
		int len = snprintf(msg, sizeof msg, "m%06ld\n", i);
		long long sent = now();
		if (write(input, msg, len) != len)
			die("write");
		int have = 0;
		while (have < len || memcmp(got + have - len, msg, len)) {
			ssize_t r = read(out[0], got + have, sizeof got - have);
			if (r <= 0)
				die("read output");
			have += r;
			if (have > 2048) {
				memmove(got, got + have - len, len);
				have = len;
			}
		}
		ts[i][SENT] = sent;
		ts[i][ARRIVED] = now();
		if (i)
			v[i - 1] = ts[i][ARRIVED] - sent;
	}
	qsort(v, n, sizeof *v, cmp);
	printf("%s %s%s: p10 %.0f p50 %.0f p90 %.0f p99 %.0f µs (%ld messages)\n", mode,
	       !strcmp(mode, "filebus") ? argv[5] : argc > 4 ? argv[4] : "",
	       prepared ? (allocated ? " allocated" : " prepared") : "", v[n / 10] / 1e3, v[n / 2] / 1e3, v[n * 9 / 10] / 1e3,
	       v[n * 99 / 100] / 1e3, n);
	if (!strcmp(mode, "protocol")) {
		static const char *steps[] = {
			"input written -> producer awake",
			"read input, create unnamed file",
			"write it",
			"lock (lossless: check F is gone)",
			"link as F.__new__",
			"rename to F",
			"renamed -> consumer awake (negative: woken during rename)",
			"consumer: [lock,] open F",
			"consumer: fstat, sendfile out",
			"sent out -> arrived",
		};
		int from[] = {SENT, P_AWAKE, CREATED, WRITTEN, LOCKED, LINKED, RENAMED, C_AWAKE, OPENED, OUT};
		int to[] = {P_AWAKE, CREATED, WRITTEN, LOCKED, LINKED, RENAMED, C_AWAKE, OPENED, OUT, ARRIVED};
		for (int s = 0; s < 10; s++) {
			for (long i = 1; i <= n; i++)
				v[i - 1] = ts[i][to[s]] - ts[i][from[s]];
			qsort(v, n, sizeof *v, cmp);
			printf("  %-58s %7.1f µs\n", steps[s], v[n / 2] / 1e3);
		}
	}
	for (int k = 0; k < 2; k++)
		if (kids[k] > 0)
			kill(kids[k], SIGTERM);
	while (wait(NULL) > 0)
		;
	return 0;
}
