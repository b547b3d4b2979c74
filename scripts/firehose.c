/*
 * Both ends of the benchmark's firehose: a stream of 4 KiB blocks, each
 * carrying its own sequence number, and a reader that counts which arrived.
 *
 * Exists so that the benchmark can say how many chunks of a fast lossy
 * stream a consumer that keeps up delivers, and at what rate, with ends
 * that are not the bottleneck (a Python loop over gigabytes would be).
 * Built and run by scripts/bench.py (through scripts/bench.sh):
 *
 *     firehose write BLOCKS [MB_PER_S]
 *     firehose read BLOCKS
 *
 * Word i (8 bytes, native order) of block s is (s << 9) | i, so that a block
 * cut short, shifted, or mixed from two blocks fails the check on a word.
 *
 * With MB_PER_S, the writer keeps to that rate (10^6 bytes a second),
 * sleeping whenever it is ahead: a stream as fast as that, for a consumer
 * that has to keep up with it, rather than as fast as the writer can go.
 *
 * write: writes block 0 (the warm-up) to standard output, then waits for one
 * byte on standard input (the go signal: the reader has the warm-up), then
 * writes blocks 1..BLOCKS in writes of 64 KiB (whole blocks) and prints
 * "start<TAB>NS" on standard error, NS being CLOCK_MONOTONIC just before the
 * first of those writes.
 *
 * read: reads standard input as consecutive 4 KiB blocks. Prints "ready" on
 * standard output once it has the warm-up; ends when block BLOCKS (the last)
 * arrived, or at end of input, and then prints "NAME<TAB>VALUE" lines:
 *
 *   delivered   intact blocks of 1..BLOCKS, each after the one before it
 *   missing     blocks of 1..BLOCKS never delivered
 *   torn        4 KiB blocks that fail the check (and a partial block at end)
 *   reordered   intact blocks at or below a sequence number already seen
 *   bytes       4 KiB times delivered
 *   last        CLOCK_MONOTONIC (ns) when the last delivered block was read
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define WORDS (BLOCK / 8)
#define BATCH 16 /* blocks per write: 64 KiB, a pipe's default size */

static void die(const char *what)
{
	fprintf(stderr, "firehose: %s: %s\n", what, strerror(errno));
	exit(1);
}

static long long now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* A pipe of 1 MiB (the unprivileged maximum by default) instead of 64 KiB:
 * the two ends of a pipe then hand over sixteen times fewer times, which is
 * what keeps a plain `cat` between them well above 1 GB/s. Best effort: a
 * file, or a system with a smaller limit, keeps what it has. */
static void enlarge_pipe(int fd)
{
	(void)fcntl(fd, F_SETPIPE_SZ, 1 << 20);
}

static void fill(uint64_t *words, uint64_t seq)
{
	for (uint64_t i = 0; i < WORDS; i++)
		words[i] = seq << 9 | i;
}

static void write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(1, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			die("write");
		}
		p += w;
		n -= (size_t)w;
	}
}

static int writer(uint64_t blocks, unsigned long long rate)
{
	static uint64_t buf[BATCH * WORDS];
	char go;

	enlarge_pipe(1);
	fill(buf, 0);
	write_all((char *)buf, BLOCK);
	for (;;) {
		ssize_t r = read(0, &go, 1);
		if (r == 1)
			break;
		if (r == 0 || errno != EINTR) {
			fprintf(stderr, "firehose: no go signal\n");
			return 1;
		}
	}
	long long start = now_ns();
	for (uint64_t seq = 1; seq <= blocks;) {
		uint64_t n = blocks - seq + 1 < BATCH ? blocks - seq + 1 : BATCH;
		for (uint64_t k = 0; k < n; k++)
			fill(buf + k * WORDS, seq + k);
		write_all((char *)buf, n * BLOCK);
		seq += n;
		if (rate) {
			/* Bytes per µs = MB/s: when the next write is due. */
			long long due = start + (long long)((seq - 1) * BLOCK * 1000 / rate);
			struct timespec ts = {due / 1000000000LL, due % 1000000000LL};
			if (due > now_ns())
				clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		}
	}
	fprintf(stderr, "start\t%lld\n", start);
	return 0;
}

/* Whether the block is intact; its sequence number in *seq. The check is
 * branch-free over the words, so that it runs at memory speed. */
static int intact(const uint64_t *words, uint64_t *seq)
{
	uint64_t s = words[0] >> 9, bad = 0;
	for (uint64_t i = 0; i < WORDS; i++)
		bad |= words[i] ^ (s << 9 | i);
	*seq = s;
	return bad == 0;
}

static int reader(uint64_t blocks)
{
	size_t cap = 1 << 20;
	char *buf = aligned_alloc(BLOCK, cap + BLOCK);
	size_t have = 0; /* bytes of a partial block kept at the start of buf */
	uint64_t delivered = 0, torn = 0, reordered = 0, last_seq = 0;
	long long last = 0;
	int warm = 0, done = 0;

	if (!buf)
		die("aligned_alloc");
	enlarge_pipe(0);
	while (!done) {
		ssize_t r = read(0, buf + have, cap - have);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die("read");
		}
		if (r == 0)
			break;
		long long now = now_ns();
		have += (size_t)r;
		size_t off = 0;
		for (; off + BLOCK <= have && !done; off += BLOCK) {
			uint64_t seq;
			if (!intact((const uint64_t *)(buf + off), &seq)) {
				torn++;
			} else if (!warm) {
				/* Before the go signal only the warm-up can come. */
				if (seq != 0) {
					torn++;
					continue;
				}
				warm = 1;
				printf("ready\n");
				fflush(stdout);
			} else if (seq <= last_seq || seq > blocks) {
				reordered++;
			} else {
				delivered++;
				last_seq = seq;
				last = now;
				done = seq == blocks;
			}
		}
		memmove(buf, buf + off, have - off);
		have -= off;
	}
	if (have > 0 && !done)
		torn++;
	printf("delivered\t%llu\nmissing\t%llu\ntorn\t%llu\nreordered\t%llu\n"
	       "bytes\t%llu\nlast\t%lld\n",
	       (unsigned long long)delivered, (unsigned long long)(blocks - delivered),
	       (unsigned long long)torn, (unsigned long long)reordered,
	       (unsigned long long)delivered * BLOCK, last);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3 || argc > 4 || (strcmp(argv[1], "write") && strcmp(argv[1], "read")) ||
	    (argc == 4 && strcmp(argv[1], "write"))) {
		fprintf(stderr, "usage: firehose write BLOCKS [MB_PER_S] | read BLOCKS\n");
		return 2;
	}
	char *end;
	errno = 0;
	unsigned long long blocks = strtoull(argv[2], &end, 10);
	if (errno || *end || blocks == 0 || blocks > (1ULL << 54)) {
		fprintf(stderr, "firehose: BLOCKS must be a positive number\n");
		return 2;
	}
	unsigned long long rate = argc == 4 ? strtoull(argv[3], &end, 10) : 0;
	if (argc == 4 && (*end || !rate)) {
		fprintf(stderr, "firehose: not a rate: %s\n", argv[3]);
		return 2;
	}
	return strcmp(argv[1], "write") ? reader(blocks) : writer(blocks, rate);
}
