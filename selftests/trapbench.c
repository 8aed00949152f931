// SPDX-License-Identifier: GPL-2.0
/*
 * trapbench: the micro-benchmarks of `make bench` (scripts/guest/bench). Each mode prints
 * one line of key=value pairs; times are nanoseconds of CLOCK_MONOTONIC.
 *
 *   trapbench loop N        N locked adds on an aligned operand: no bus lock, no trap
 *   trapbench split N       N locked adds on an operand across a cache line: N bus locks,
 *                           each a trap where Bus Lock Detect is armed (refused outside
 *                           QEMU TCG unless AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1)
 *   trapbench step N        N locked adds each followed by a single-step #DB and its
 *                           SIGTRAP: the cost of a #DB that the kernel delivers as a signal
 *   trapbench syscall N     N getppid() calls
 *   trapbench ctxsw N       N pipe round trips between two processes pinned to CPU 0
 *                           (two context switches each)
 *   trapbench probe MS      sleeps 1 ms at a time for MS ms and reports how late it woke
 *
 * Only `split` makes bus locks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "tcg.h"

#define EFLAGS_TF 0x100

static volatile sig_atomic_t sigtraps;

/* A single step arrived: count it and stop stepping. */
static void on_sigtrap(int sig, siginfo_t *info, void *context)
{
	ucontext_t *uc = context;

	(void)sig;
	(void)info;
	uc->uc_mcontext.gregs[REG_EFL] &= ~EFLAGS_TF;
	sigtraps++;
}

static inline void locked_add(int *operand)
{
	asm volatile("lock addl $1, (%0)" : : "r"(operand) : "memory", "cc");
}

/* A locked add with EFLAGS.TF set just before it: a single-step #DB follows it. */
static inline void locked_add_then_step(int *operand)
{
	asm volatile("pushfq\n\t"
		     "orq %1, (%%rsp)\n\t"
		     "popfq\n\t"
		     "lock addl $1, (%0)\n\t"
		     : : "r"(operand), "i"(EFLAGS_TF) : "memory", "cc");
}

static int operand[64] __attribute__((aligned(64)));

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "trapbench: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void pin_to_cpu0(void)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(0, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		die("sched_setaffinity");
}

static void report(const char *mode, unsigned long long n, unsigned long long ns)
{
	printf("mode=%s n=%llu total_ns=%llu ns_per_op=%.1f sigtrap=%d\n", mode, n, ns,
	       (double)ns / (double)n, (int)sigtraps);
}

static void bench_loop(const char *mode, unsigned long long n, int *target, int step)
{
	unsigned long long start = now_ns();

	for (unsigned long long i = 0; i < n; i++) {
		if (step)
			locked_add_then_step(target);
		else
			locked_add(target);
	}
	report(mode, n, now_ns() - start);
}

static void bench_syscall(unsigned long long n)
{
	unsigned long long start = now_ns();

	for (unsigned long long i = 0; i < n; i++)
		syscall(SYS_getppid);
	report("syscall", n, now_ns() - start);
}

static void bench_ctxsw(unsigned long long n)
{
	int ping[2], pong[2];
	unsigned long long start;
	char byte = 0;
	pid_t child;

	if (pipe(ping) || pipe(pong))
		die("pipe");
	pin_to_cpu0();
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		/* Only the parent's write end may keep ping open: its close ends this loop. */
		close(ping[1]);
		close(pong[0]);
		while (read(ping[0], &byte, 1) == 1)
			if (write(pong[1], &byte, 1) != 1)
				_exit(1);
		_exit(0);
	}
	close(ping[0]);
	close(pong[1]);
	start = now_ns();
	for (unsigned long long i = 0; i < n; i++)
		if (write(ping[1], &byte, 1) != 1 || read(pong[0], &byte, 1) != 1)
			die("pipe round trip");
	report("ctxsw", n, now_ns() - start);
	close(ping[1]);
	waitpid(child, NULL, 0);
}

static int compare(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;

	return x < y ? -1 : x > y;
}

static void bench_probe(unsigned long long ms)
{
	static unsigned long long late[100000];
	struct timespec one_ms = { 0, 1000000 };
	unsigned long long end = now_ns() + ms * 1000000ULL, n = 0;

	while (now_ns() < end && n < sizeof(late) / sizeof(late[0])) {
		unsigned long long before = now_ns();

		nanosleep(&one_ms, NULL);
		late[n++] = now_ns() - before - 1000000ULL;
	}
	if (!n)
		exit(2);
	qsort(late, n, sizeof(late[0]), compare);
	printf("mode=probe n=%llu late_p50_us=%llu late_p99_us=%llu late_max_us=%llu\n", n,
	       late[n / 2] / 1000, late[n * 99 / 100] / 1000, late[n - 1] / 1000);
}

int main(int argc, char **argv)
{
	struct sigaction sa = { 0 };
	unsigned long long n;

	if (argc < 3)
		goto usage;
	n = strtoull(argv[2], NULL, 10);
	if (!n)
		goto usage;
	sa.sa_sigaction = on_sigtrap;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGTRAP, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (!strcmp(argv[1], "loop")) {
		bench_loop("loop", n, &operand[16], 0);
	} else if (!strcmp(argv[1], "split")) {
		if (refuse_real_split_locks("trapbench"))
			return 3;
		/* 2 bytes before the line at operand[16]: the int straddles it. */
		bench_loop("split", n, (int *)((char *)&operand[16] - 2), 0);
	} else if (!strcmp(argv[1], "step")) {
		bench_loop("step", n, &operand[16], 1);
	} else if (!strcmp(argv[1], "syscall")) {
		bench_syscall(n);
	} else if (!strcmp(argv[1], "ctxsw")) {
		bench_ctxsw(n);
	} else if (!strcmp(argv[1], "probe")) {
		bench_probe(n);
	} else {
		goto usage;
	}
	return 0;
usage:
	fprintf(stderr, "usage: trapbench loop|split|step|syscall|ctxsw|probe N\n");
	return 2;
}
