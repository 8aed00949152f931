// SPDX-License-Identifier: GPL-2.0
/*
 * stepcheck: debugger-style single-stepping must behave exactly as without amd_sld.
 *
 * 1. self: the process sets EFLAGS.TF and must get exactly one SIGTRAP (TRAP_TRACE) per
 *    stepped instruction, as the kernel delivers for an unhandled step.
 * 2. ptrace: a parent single-steps a child STEPS times with PTRACE_SINGLESTEP; every stop
 *    must be a SIGTRAP and the child's RIP must move.
 *
 * Prints "self=N ptrace=N" and exits 0 when both are exact, 1 otherwise.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

#define STEPS 200
#define EFLAGS_TF 0x100

static volatile sig_atomic_t traps, bad_code;

static void on_sigtrap(int sig, siginfo_t *info, void *context)
{
	ucontext_t *uc = context;

	(void)sig;
	if (info->si_code != TRAP_TRACE)
		bad_code++;
	if (++traps >= 3)
		uc->uc_mcontext.gregs[REG_EFL] &= ~EFLAGS_TF;
}

static int self_step(void)
{
	struct sigaction sa = { .sa_sigaction = on_sigtrap, .sa_flags = SA_SIGINFO };

	sigaction(SIGTRAP, &sa, NULL);
	/* TF set by popf: the trap comes after each following instruction until cleared. */
	asm volatile("pushfq\n\t"
		     "orq $0x100, (%%rsp)\n\t"
		     "popfq\n\t"
		     "nop\n\t"
		     "nop\n\t"
		     "nop\n\t"
		     "nop\n\t" ::: "memory", "cc");
	return bad_code ? -1 : traps;
}

static int ptrace_steps(void)
{
	pid_t child = fork();
	unsigned long long last_ip = 0;
	int status, moved = 0;

	if (child == 0) {
		ptrace(PTRACE_TRACEME, 0, NULL, NULL);
		raise(SIGSTOP);
		for (volatile int i = 0;; i++)
			;
	}
	waitpid(child, &status, 0);
	for (int i = 0; i < STEPS; i++) {
		struct user_regs_struct regs;

		if (ptrace(PTRACE_SINGLESTEP, child, NULL, NULL) != 0)
			return -1;
		waitpid(child, &status, 0);
		if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGTRAP)
			return -1;
		ptrace(PTRACE_GETREGS, child, NULL, &regs);
		moved += regs.rip != last_ip;
		last_ip = regs.rip;
	}
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	return moved == STEPS ? STEPS : -1;
}

int main(void)
{
	int self = self_step();
	int traced = ptrace_steps();

	printf("self=%d ptrace=%d\n", self, traced);
	return self == 3 && traced == STEPS ? 0 : 1;
}
