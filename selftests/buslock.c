// SPDX-License-Identifier: GPL-2.0
/*
 * buslock: the offender of the amd_sld selftests.
 *
 * Each event is a `lock addl` on an int that straddles a 64-byte cache line: a real split
 * lock, which the emulated CPU of the test VM (scripts/qemu) turns into a bus lock, counted
 * by its PMU and trapped when DEBUGCTL[2] is set, as AMD documents for Zen 5. With -a the
 * operand is aligned: the same instruction, no bus lock (the control).
 *
 * A real split lock stalls every core of a real host, so it is refused unless the CPU is
 * QEMU's TCG emulator (where atomics are emulated) or AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1 is set.
 *
 * Prints one line: events=N in_window=N sigbus=N elapsed_ms=N pid=N, summed over its
 * processes (pid is the first process's); with -p, first a line "processI pid=N events=N
 * in_window=N" for each. in_window counts the events completed before the -t deadline: a rate
 * limit can hold the last one back past it.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "tcg.h"

struct tally {
	unsigned long long events, in_window, sigbus;
	pid_t pid;
};

static volatile sig_atomic_t sigbus_count;

static void on_sigbus(int sig)
{
	(void)sig;
	sigbus_count++;
}

static unsigned long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void locked_add(int *operand)
{
	asm volatile("lock addl $1, (%0)" : : "r"(operand) : "memory", "cc");
}

/* All processes share start, so that -t is one window [start, start + -t) for all of them. */
static struct tally run(int *operand, unsigned long long count,
			unsigned long long start, unsigned long long limit_ms, double rate)
{
	struct tally t = { 0 };

	while (!count || t.events < count) {
		unsigned long long elapsed = now_ms() - start;

		if (limit_ms && elapsed >= limit_ms)
			break;
		if (rate > 0 && t.events >= (unsigned long long)(rate * elapsed / 1000.0) + 1) {
			usleep(1000);
			continue;
		}
		locked_add(operand);
		t.events++;
		/*
		 * A bus lock that a rate limit held back across the deadline completes after it:
		 * real, but outside the [0, -t) window a rate is measured over.
		 */
		if (!limit_ms || now_ms() - start < limit_ms)
			t.in_window++;
	}
	t.sigbus = sigbus_count;
	t.pid = getpid();
	return t;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: buslock [-n events] [-t ms] [-r events_per_s] [-p processes] [-a] [-c] [-B|-I]\n"
		"  -n N    stop after N events (default 1; 0: only -t stops)\n"
		"  -t MS   stop after MS milliseconds\n"
		"  -r R    at most R events per second\n"
		"  -p N    run N processes in a new process group (default 1)\n"
		"  -a      aligned operand: no bus lock (the control)\n"
		"  -c      handle SIGBUS (count it and go on) instead of dying of it\n"
		"  -B, -I  block / ignore SIGBUS first (a fatal policy must kill anyway)\n"
		"Split locks are refused outside QEMU TCG unless AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1.\n");
	exit(2);
}

int main(int argc, char **argv)
{
	unsigned long long count = 1, limit_ms = 0;
	int processes = 1, aligned = 0, catch_sigbus = 0, block = 0, ignore = 0, opt;
	double rate = 0;
	struct tally total = { 0 };
	unsigned long long start;
	char *line;
	int pipefd[2];

	while ((opt = getopt(argc, argv, "n:t:r:p:acBI")) != -1) {
		switch (opt) {
		case 'n': count = strtoull(optarg, NULL, 10); break;
		case 't': limit_ms = strtoull(optarg, NULL, 10); break;
		case 'r': rate = atof(optarg); break;
		case 'p': processes = atoi(optarg); break;
		case 'a': aligned = 1; break;
		case 'c': catch_sigbus = 1; break;
		case 'B': block = 1; break;
		case 'I': ignore = 1; break;
		default: usage();
		}
	}
	if (processes < 1 || (!count && !limit_ms))
		usage();
	if (!aligned && refuse_real_split_locks("buslock"))
		return 3;

	/* The operand: aligned, or straddling a 64-byte line for a real split lock. */
	char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return 2;
	int *operand = (int *)(page + (aligned ? 64 : 62));

	if (catch_sigbus)
		signal(SIGBUS, on_sigbus);
	if (ignore)
		signal(SIGBUS, SIG_IGN);
	if (block) {
		sigset_t set;

		sigemptyset(&set);
		sigaddset(&set, SIGBUS);
		sigprocmask(SIG_BLOCK, &set, NULL);
	}

	if (processes > 1 && setpgid(0, 0) != 0)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	start = now_ms();

	if (processes == 1) {
		total = run(operand, count, start, limit_ms, rate);
	} else {
		if (pipe(pipefd) != 0)
			return 2;
		for (int i = 0; i < processes; i++) {
			if (fork() == 0) {
				struct tally t = run(operand, count, start, limit_ms, rate);

				if (write(pipefd[1], &t, sizeof(t)) != sizeof(t))
					_exit(2);
				_exit(0);
			}
		}
		close(pipefd[1]);
		for (int i = 0; i < processes; i++) {
			struct tally t;
			int status;

			if (read(pipefd[0], &t, sizeof(t)) == sizeof(t)) {
				total.events += t.events;
				total.in_window += t.in_window;
				total.sigbus += t.sigbus;
				printf("process%d pid=%d events=%llu in_window=%llu\n", i, (int)t.pid, t.events,
				       t.in_window);
			}
			wait(&status);
		}
	}
	if (asprintf(&line, "events=%llu in_window=%llu sigbus=%llu elapsed_ms=%llu pid=%d",
		     total.events, total.in_window, total.sigbus, now_ms() - start, (int)getpid()) < 0)
		return 2;
	puts(line);
	return 0;
}
