/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What buslock and trapbench share about amd_sld's test build (selftests/README.md): how a
 * process opts in to the simulated trap, the instruction sequence that the simulation turns
 * into a bus-lock trap, and the SIGTRAP handler for the steps it does not turn.
 */
#ifndef AMD_SLD_SELFTESTS_SIM_H
#define AMD_SLD_SELFTESTS_SIM_H

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/types.h>
#include <ucontext.h>
#include <unistd.h>

#define SIM_TGID "/sys/kernel/debug/amd_sld/sim_tgid"
#define EFLAGS_TF 0x100

/* Single steps that arrived as SIGTRAP: amd_sld did not turn them into bus-lock traps. */
static volatile sig_atomic_t sigtraps;

/* A step that amd_sld did not turn into a bus-lock trap: count it and stop stepping. */
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

/*
 * A locked add with EFLAGS.TF set just before it: the single-step #DB that follows it is
 * where a Bus Lock Detect trap would be, and what the test build turns into one.
 */
static inline void locked_add_then_trap(int *operand)
{
	asm volatile("pushfq\n\t"
		     "orq %1, (%%rsp)\n\t"
		     "popfq\n\t"
		     "lock addl $1, (%0)\n\t"
		     : : "r"(operand), "i"(EFLAGS_TF) : "memory", "cc");
}

/* Opts process (or process group leader) pid in to the simulation: 0, or -1 with errno. */
static int sim_opt_in(pid_t pid)
{
	char text[32];
	int len = snprintf(text, sizeof(text), "%d\n", (int)pid);
	int fd = open(SIM_TGID, O_WRONLY);
	int written;

	if (fd < 0)
		return -1;
	written = write(fd, text, len);
	close(fd);
	return written == len ? 0 : -1;
}

#endif
