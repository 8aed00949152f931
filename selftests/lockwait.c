// SPDX-License-Identifier: GPL-2.0
/*
 * lockwait: the incident amd-sld exists for, as a program.
 *
 * A Python UDF freed a jemalloc chunk through glibc's free_atfork, which computed its arena
 * from a bogus address and then waited for that arena's lock: __lll_lock_wait_private spun
 * on an `xchg` of a lock word that straddled a cache line. The word read as locked and
 * nobody would ever release it; FUTEX_WAIT on a misaligned word fails with EINVAL at once,
 * so the wait never slept: every turn of the loop was a bus lock.
 *
 * This program places a lock word across a 64-byte line (or, with -a, aligned), marks it
 * held by an owner that is gone, and waits for it:
 *
 *   default  the wait loop of glibc releases whose futex wait ignored errors (2.28's
 *            __lll_lock_wait_private around lll_futex_wait), which is what spins, bounded to
 *            N exchanges so that counts can be checked exactly;
 *   --glibc  this system's glibc's own __lll_lock_wait_private, unmodified (the binary links
 *            libc.a). glibc 2.34 and later check the futex result: on a split word the first
 *            FUTEX_WAIT fails with EINVAL and __libc_fatal aborts the process, after exactly
 *            one bus lock. Aligned (-a), the wait sleeps until a timer after -t ms releases
 *            the word, as an owner would. The function's address is printed first, so that
 *            a test can check the trap's IP against it.
 *
 * Prints "xchgs=N futex_einval=N fn=0x.. pid=N" (default) or "glibc_fn=0x.. pid=N
 * glibc_fn_offset=0x.." (--glibc, before the call: the function's address and its offset in
 * the file mapped there). With --linger ms, glibc's abort() finds a SIGABRT handler that
 * prints "aborted, lingering" and waits that long (or until SIGTERM) before abort() goes on
 * and kills the process: a test can look at the live process after its bus lock. Real split locks stall every core of a real host, so the split word is refused
 * outside QEMU TCG unless AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1 is set.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tcg.h"

/* glibc's own, GLIBC_PRIVATE in libc.so.6 and plain in libc.a. */
extern void __lll_lock_wait_private(int *futex);

static int *lock_word;
static unsigned long long futex_einval;
static unsigned long long linger_ms;
static volatile sig_atomic_t terminated;

/* The offset of addr into the file mapped there, from /proc/self/maps; 0 if none. */
static unsigned long file_offset(unsigned long addr)
{
	unsigned long start, end, offset, found = 0;
	FILE *maps = fopen("/proc/self/maps", "r");
	char line[512];

	if (!maps)
		return 0;
	while (fgets(line, sizeof(line), maps)) {
		if (sscanf(line, "%lx-%lx %*s %lx", &start, &end, &offset) == 3 && start <= addr &&
		    addr < end) {
			found = offset + (addr - start);
			break;
		}
	}
	fclose(maps);
	return found;
}

static void on_sigterm(int sig)
{
	(void)sig;
	terminated = 1;
}

/* abort()'s SIGABRT: stay alive for linger_ms, then return and let abort() kill us. */
static void on_sigabrt(int sig)
{
	static const char msg[] = "aborted, lingering\n";
	unsigned long long waited;
	struct timespec tick = { .tv_nsec = 10 * 1000 * 1000 };

	(void)sig;
	if (write(STDOUT_FILENO, msg, sizeof(msg) - 1) < 0)
		return;
	for (waited = 0; waited < linger_ms && !terminated; waited += 10)
		nanosleep(&tick, NULL);
}

static long futex_wait_private(int *futex, int expected)
{
	return syscall(SYS_futex, futex, FUTEX_WAIT_PRIVATE, expected, NULL);
}

/*
 * glibc 2.28's __lll_lock_wait_private (nptl/lowlevellock.c), whose lll_futex_wait result
 * nobody checks, with a bound on the exchanges:
 *
 *	if (*futex == 2)
 *	  lll_futex_wait (futex, 2, LLL_PRIVATE);
 *	while (atomic_exchange_acq (futex, 2) != 0)
 *	  lll_futex_wait (futex, 2, LLL_PRIVATE);
 */
__attribute__((noinline)) unsigned long long lll_lock_wait_private_bounded(int *futex,
									     unsigned long long max,
									     int wait)
{
	unsigned long long xchgs = 0;

	if (__atomic_load_n(futex, __ATOMIC_RELAXED) == 2)
		goto wait;
	while (xchgs < max) {
		xchgs++;
		if (__atomic_exchange_n(futex, 2, __ATOMIC_ACQUIRE) == 0)
			break;
wait:
		if (wait && futex_wait_private(futex, 2) != 0 && errno == EINVAL)
			futex_einval++;
	}
	return xchgs;
}

/* The owner comes back: the next exchange finds the word free and the wait ends. */
static void release(int sig)
{
	(void)sig;
	__atomic_store_n(lock_word, 0, __ATOMIC_RELEASE);
}

static void usage(void)
{
	fprintf(stderr, "usage: lockwait [-n exchanges] [-a] | --glibc -t ms [-a] [--linger ms]\n"
			"  -n N     exchanges of the bounded copy of glibc's loop (default 1000)\n"
			"  -a       aligned lock word: no bus lock (the control); the bounded loop then\n"
			"           skips the futex wait, which would really sleep there\n"
			"  --glibc  call glibc's own __lll_lock_wait_private; released after -t ms\n"
			"  --linger ms  when glibc aborts, stay alive that long (or until SIGTERM)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = { { "glibc", no_argument, NULL, 'g' },
						  { "linger", required_argument, NULL, 'l' },
						  { 0 } };
	unsigned long long max = 1000, limit_ms = 0;
	int aligned = 0, glibc = 0, opt;
	char *lines;

	while ((opt = getopt_long(argc, argv, "n:t:a", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n': max = strtoull(optarg, NULL, 10); break;
		case 't': limit_ms = strtoull(optarg, NULL, 10); break;
		case 'a': aligned = 1; break;
		case 'g': glibc = 1; break;
		case 'l': linger_ms = strtoull(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (glibc && !limit_ms)
		usage();
	if (!aligned && refuse_real_split_locks("lockwait"))
		return 3;

	/* Two cache lines; the word starts 2 bytes before the second, as the bogus arena's did. */
	lines = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (lines == MAP_FAILED)
		return 2;
	lock_word = (int *)(lines + (aligned ? 64 : 62));
	*lock_word = 1; /* locked; the owner is gone: the first exchange finds it taken */

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!glibc) {
		unsigned long long xchgs = lll_lock_wait_private_bounded(lock_word, max, !aligned);

		printf("xchgs=%llu futex_einval=%llu fn=%#lx pid=%d\n", xchgs, futex_einval,
		       (unsigned long)(uintptr_t)&lll_lock_wait_private_bounded, (int)getpid());
		return 0;
	}

	struct itimerval timer = { .it_value = { .tv_sec = limit_ms / 1000,
						  .tv_usec = (limit_ms % 1000) * 1000 } };

	printf("glibc_fn=%#lx pid=%d glibc_fn_offset=%#lx\n",
	       (unsigned long)(uintptr_t)&__lll_lock_wait_private, (int)getpid(),
	       file_offset((unsigned long)(uintptr_t)&__lll_lock_wait_private));
	if (linger_ms) {
		signal(SIGTERM, on_sigterm);
		signal(SIGABRT, on_sigabrt);
	}
	signal(SIGALRM, release);
	setitimer(ITIMER_REAL, &timer, NULL);
	__lll_lock_wait_private(lock_word);
	return 0;
}
