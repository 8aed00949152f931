// SPDX-License-Identifier: GPL-2.0
/*
 * buslock: the offender of the amd_sld selftests.
 *
 * Each event is a LOCK-prefixed add executed with EFLAGS.TF set, so that a single-step #DB
 * follows it exactly where a Bus Lock Detect trap would. The test build of amd_sld (SIM=1)
 * turns that step into a bus-lock trap for opted-in processes (selftests/README.md).
 *
 * By default the locked operand is aligned: no real bus lock happens, so the program is
 * harmless on any machine. --split instead runs a real split lock (an operand straddling a
 * cache line, no TF), for the real Bus Lock Detect trap of a Zen 5 host: it stalls every
 * core of a real host, so it is refused unless the CPU is QEMU's TCG emulator (where atomics
 * are emulated) or AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1 is set.
 *
 * Prints one line: events=N in_window=N sigtrap=N sigbus=N elapsed_ms=N pid=N, summed over
 * its processes (pid is the first process's); with -p, first a line "processI pid=N events=N
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

#include "sim.h"

#define SIM_PMU_ADDR "/sys/kernel/debug/amd_sld/sim_pmu_addr"

struct tally {
	unsigned long long events, in_window, sigtrap, sigbus;
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

static int is_tcg(void)
{
	unsigned int eax, ebx, ecx, edx;
	char vendor[13] = { 0 };

	__cpuid(1, eax, ebx, ecx, edx);
	if (!(ecx & (1u << 31)))
		return 0;
	__cpuid(0x40000000, eax, ebx, ecx, edx);
	memcpy(vendor, &ebx, 4);
	memcpy(vendor + 4, &ecx, 4);
	memcpy(vendor + 8, &edx, 4);
	return strcmp(vendor, "TCGTCGTCGTCG") == 0;
}

/* The simulated PMU counts writes to the address the module names: map the operand there. */
static int *pmu_operand(void)
{
	unsigned long long addr = 0;
	FILE *f = fopen(SIM_PMU_ADDR, "r");
	char *page;

	if (!f || fscanf(f, "%llx", &addr) != 1) {
		fprintf(stderr, "buslock: cannot read %s: %s\n", SIM_PMU_ADDR, strerror(errno));
		exit(2);
	}
	fclose(f);
	page = mmap((void *)(uintptr_t)(addr & ~4095ULL), 4096, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (page == MAP_FAILED) {
		fprintf(stderr, "buslock: cannot map 0x%llx: %s\n", addr, strerror(errno));
		exit(2);
	}
	return (int *)(page + (addr & 4095));
}

static inline void split_lock(int *operand)
{
	asm volatile("lock addl $1, (%0)" : : "r"(operand) : "memory", "cc");
}

static int pmu_mode;

/* All processes share start, so that -t is one window [start, start + -t) for all of them. */
static struct tally run(int *operand, int split, unsigned long long count,
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
		if (split)
			split_lock(operand);
		else if (pmu_mode)
			locked_add(operand);
		else
			locked_add_then_trap(operand);
		t.events++;
		/*
		 * A bus lock that a rate limit held back across the deadline completes after it:
		 * real, but outside the [0, -t) window a rate is measured over.
		 */
		if (!limit_ms || now_ms() - start < limit_ms)
			t.in_window++;
	}
	t.sigtrap = sigtraps;
	t.sigbus = sigbus_count;
	t.pid = getpid();
	return t;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: buslock [-n events] [-t ms] [-r events_per_s] [-p processes] [-o] [-B|-I] [--split]\n"
		"  -n N    stop after N events (default 1; 0: only -t stops)\n"
		"  -t MS   stop after MS milliseconds\n"
		"  -r R    at most R events per second\n"
		"  -p N    run N processes in a new process group (default 1)\n"
		"  -o      opt this process (with -p: its process group) in to the simulation\n"
		"  -P      simulated PMU: lock-add at the address the test build counts, no TF\n"
		"  -c      handle SIGBUS (count it and go on) instead of dying of it\n"
		"  -B, -I  block / ignore SIGBUS first (a fatal policy must kill anyway)\n"
		"  --split real split locks, no TF: refused outside TCG unless AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = { { "split", no_argument, NULL, 'S' }, { 0 } };
	unsigned long long count = 1, limit_ms = 0;
	int processes = 1, optin = 0, split = 0, catch_sigbus = 0, block = 0, ignore = 0, opt;
	double rate = 0;
	struct sigaction sa = { 0 };
	struct tally total = { 0 };
	unsigned long long start;
	char *line;
	int pipefd[2];

	while ((opt = getopt_long(argc, argv, "n:t:r:p:ocBIP", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n': count = strtoull(optarg, NULL, 10); break;
		case 't': limit_ms = strtoull(optarg, NULL, 10); break;
		case 'r': rate = atof(optarg); break;
		case 'p': processes = atoi(optarg); break;
		case 'o': optin = 1; break;
		case 'c': catch_sigbus = 1; break;
		case 'B': block = 1; break;
		case 'I': ignore = 1; break;
		case 'S': split = 1; break;
		case 'P': pmu_mode = 1; break;
		default: usage();
		}
	}
	if (processes < 1 || (!count && !limit_ms))
		usage();
	if (split && !is_tcg() && !getenv("AMD_SLD_ALLOW_REAL_SPLIT_LOCKS")) {
		fprintf(stderr,
			"buslock: refusing --split: this is not QEMU TCG, so the split lock would be a real\n"
			"bus lock that slows every core of this host. Set AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1 on a\n"
			"machine that is yours alone to do it anyway.\n");
		return 3;
	}

	/* The operand: aligned, or straddling a 64-byte line for a real split lock. */
	char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return 2;
	int *operand = pmu_mode ? pmu_operand() : (int *)(page + (split ? 62 : 64));

	sa.sa_sigaction = on_sigtrap;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGTRAP, &sa, NULL);
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
	if (optin && sim_opt_in(getpid())) {
		fprintf(stderr, "buslock: cannot opt in through %s: %s\n", SIM_TGID, strerror(errno));
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	start = now_ms();

	if (processes == 1) {
		total = run(operand, split, count, start, limit_ms, rate);
	} else {
		if (pipe(pipefd) != 0)
			return 2;
		for (int i = 0; i < processes; i++) {
			if (fork() == 0) {
				struct tally t = run(operand, split, count, start, limit_ms, rate);

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
				total.sigtrap += t.sigtrap;
				total.sigbus += t.sigbus;
				printf("process%d pid=%d events=%llu in_window=%llu\n", i, (int)t.pid, t.events,
				       t.in_window);
			}
			wait(&status);
		}
	}
	if (asprintf(&line, "events=%llu in_window=%llu sigtrap=%llu sigbus=%llu elapsed_ms=%llu pid=%d",
		     total.events, total.in_window, total.sigtrap, total.sigbus, now_ms() - start, (int)getpid()) < 0)
		return 2;
	puts(line);
	return 0;
}
