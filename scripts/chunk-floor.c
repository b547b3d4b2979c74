/*
 * The per-chunk floor of a lossless bus on one filesystem: the system calls
 * the protocol needs for one chunk, in a minimal loop, with nothing else.
 *
 * Exists so that the benchmark can say what bounds lossless throughput at
 * small blocks on a given filesystem (creating, renaming and removing a file,
 * inotify, the wake-ups between two processes) and how close filebus gets to
 * it. Built and run by scripts/bench.py (through scripts/bench.sh):
 *
 *     chunk-floor DIR CHUNKS SIZE
 *
 * prints one line per measurement, "NAME<TAB>MICROSECONDS-PER-CHUNK":
 *
 *   cycle.stage    one process: open an unnamed file (O_TMPFILE) in DIR and
 *                  write SIZE bytes, as a producer stages a chunk
 *   cycle.link     give it the name F.__new__ (linkat through /proc/self/fd)
 *   cycle.rename   rename F.__new__ over F
 *   cycle.read     open F, fstat, read SIZE bytes, close (a consumer's take)
 *   cycle.unlink   remove F
 *   cycle          the sum: the filesystem's cost of one chunk, no wake-ups
 *   cycle-empty    the same cycle with empty files (no data blocks)
 *   wakeups        two processes passing a token back and forth through
 *                  pipes, waiting as filebus's lossless waits do (checking
 *                  for 60 µs, yielding in between, then sleeping in poll):
 *                  the cost of the two hand-offs per chunk, no filesystem
 *   protocol       two processes running the lossless protocol: the producer
 *                  stages a chunk, waits (inotify) for F to be gone, and under
 *                  flock(F.lock) links and renames it to F; the consumer
 *                  waits (inotify) for F, and under the lock opens, reads and
 *                  removes it
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EAGER_NS 60000LL /* filebus's EAGER period */
#define INTERVAL_MS 100  /* filebus's default sleep interval */

static char F[4096], NEW[4096], LOCK[4096], *DIRNAME;
static char *buf;
static size_t size;

static void die(const char *what)
{
	fprintf(stderr, "chunk-floor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* A new unnamed file in DIR holding SIZE bytes; F.__new__ where the
 * filesystem has no unnamed files (then `named` is set). */
static int stage(int *named)
{
	int fd = open(DIRNAME, O_WRONLY | O_TMPFILE | O_CLOEXEC, 0666);
	*named = fd < 0;
	if (fd < 0)
		fd = open(NEW, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	if (fd < 0)
		die("create staging file");
	if (size && write(fd, buf, size) != (ssize_t)size)
		die("write");
	return fd;
}

static void link_staged(int fd, int named)
{
	char proc[64];
	if (named)
		return;
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, proc, AT_FDCWD, NEW, AT_SYMLINK_FOLLOW))
		die("linkat");
}

static void take(void)
{
	struct stat st;
	int fd = open(F, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st))
		die("open F");
	if (size && read(fd, buf, size) != (ssize_t)size)
		die("read F");
	close(fd);
}

static double cycle(long chunks, int report)
{
	long long t[6] = {0};
	for (long i = 0; i < chunks; i++) {
		int named;
		long long a = now_ns();
		int fd = stage(&named);
		long long b = now_ns();
		link_staged(fd, named);
		long long c = now_ns();
		if (rename(NEW, F))
			die("rename");
		long long d = now_ns();
		close(fd);
		take();
		long long e = now_ns();
		if (unlink(F))
			die("unlink");
		long long f = now_ns();
		t[0] += b - a, t[1] += c - b, t[2] += d - c, t[3] += e - d, t[4] += f - e;
		t[5] += f - a;
	}
	if (report) {
		const char *names[] = {"stage", "link", "rename", "read", "unlink"};
		for (int i = 0; i < 5; i++)
			printf("cycle.%s\t%.2f\n", names[i], t[i] / 1e3 / chunks);
	}
	return t[5] / 1e3 / chunks;
}

/* Waits for `fd` to become readable as filebus's lossless waits do: check
 * (non-blocking read) for EAGER_NS, yielding in between, then sleep in
 * poll. Returns after reading what is queued. */
static void wait_readable(int fd, char *scratch, size_t len)
{
	long long until = now_ns() + EAGER_NS;
	for (;;) {
		ssize_t n = read(fd, scratch, len);
		if (n > 0)
			return;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			die("read");
		if (now_ns() < until) {
			sched_yield();
			continue;
		}
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, INTERVAL_MS) < 0 && errno != EINTR)
			die("poll");
	}
}

static double timed_pair(long chunks, void (*producer)(long), void (*consumer)(long))
{
	long long start = now_ns();
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		consumer(chunks);
		_exit(0);
	}
	producer(chunks);
	int status;
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		die("consumer");
	return (now_ns() - start) / 1e3 / chunks;
}

static int ping[2], pong[2];

static void pipe_producer(long chunks)
{
	char token = 1, scratch[16];
	for (long i = 0; i < chunks; i++) {
		if (write(ping[1], &token, 1) != 1)
			die("write ping");
		wait_readable(pong[0], scratch, sizeof scratch);
	}
}

static void pipe_consumer(long chunks)
{
	char token = 1, scratch[16];
	for (long i = 0; i < chunks; i++) {
		wait_readable(ping[0], scratch, sizeof scratch);
		if (write(pong[1], &token, 1) != 1)
			die("write pong");
	}
}

static int watch(uint32_t events)
{
	int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (in < 0 || inotify_add_watch(in, DIRNAME, events | IN_ONLYDIR) < 0)
		die("inotify");
	return in;
}

static int exists(void)
{
	struct stat st;
	if (lstat(F, &st) == 0)
		return 1;
	if (errno != ENOENT)
		die("stat F");
	return 0;
}

static void locked(int lock, int how)
{
	while (flock(lock, how))
		if (errno != EINTR)
			die("flock");
}

static char events[4096];

static void protocol_producer(long chunks)
{
	int in = watch(IN_DELETE | IN_MOVED_FROM);
	int lock = open(LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (lock < 0)
		die("open lock");
	for (long i = 0; i < chunks; i++) {
		int named;
		int fd = stage(&named);
		/* Checked after the watch is in place, so no removal is missed. */
		while (exists())
			wait_readable(in, events, sizeof events);
		locked(lock, LOCK_EX);
		link_staged(fd, named);
		if (rename(NEW, F))
			die("rename");
		locked(lock, LOCK_UN);
		close(fd);
	}
}

static void protocol_consumer(long chunks)
{
	int in = watch(IN_MOVED_TO);
	int lock = open(LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (lock < 0)
		die("open lock");
	for (long i = 0; i < chunks; i++) {
		while (!exists())
			wait_readable(in, events, sizeof events);
		locked(lock, LOCK_EX);
		take();
		if (unlink(F))
			die("unlink");
		locked(lock, LOCK_UN);
	}
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: chunk-floor DIR CHUNKS SIZE\n");
		return 2;
	}
	DIRNAME = argv[1];
	long chunks = atol(argv[2]);
	size = (size_t)atol(argv[3]);
	if (chunks <= 0) {
		fprintf(stderr, "chunk-floor: CHUNKS must be positive\n");
		return 2;
	}
	snprintf(F, sizeof F, "%s/bus", DIRNAME);
	snprintf(NEW, sizeof NEW, "%s/bus.__new__", DIRNAME);
	snprintf(LOCK, sizeof LOCK, "%s/bus.lock", DIRNAME);
	buf = malloc(size ? size : 1);
	if (!buf)
		die("malloc");
	memset(buf, 'x', size);

	cycle(chunks / 10 + 1, 0); /* warm-up */
	printf("cycle\t%.2f\n", cycle(chunks, 1));
	size_t saved = size;
	size = 0;
	printf("cycle-empty\t%.2f\n", cycle(chunks, 0));
	size = saved;

	if (pipe2(ping, O_NONBLOCK | O_CLOEXEC) || pipe2(pong, O_NONBLOCK | O_CLOEXEC))
		die("pipe");
	printf("wakeups\t%.2f\n", timed_pair(chunks, pipe_producer, pipe_consumer));
	printf("protocol\t%.2f\n", timed_pair(chunks, protocol_producer, protocol_consumer));
	unlink(LOCK);
	return 0;
}
