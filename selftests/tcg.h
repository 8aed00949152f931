/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the selftest programs that make real split locks share: the refusal to make them
 * anywhere but in QEMU's TCG emulator, where atomics are emulated and stall nothing else.
 */
#ifndef AMD_SLD_SELFTESTS_TCG_H
#define AMD_SLD_SELFTESTS_TCG_H

#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether this CPU is QEMU's TCG emulator (CPUID hypervisor leaf "TCGTCGTCGTCG"). */
static inline int is_tcg(void)
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

/*
 * Non-zero, having said why, unless real split locks are harmless here (TCG) or the
 * operator said AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1 on a machine that is theirs alone.
 */
static inline int refuse_real_split_locks(const char *program)
{
	if (is_tcg() || getenv("AMD_SLD_ALLOW_REAL_SPLIT_LOCKS"))
		return 0;
	fprintf(stderr,
		"%s: refusing to make split locks: this is not QEMU TCG, so each would be a real bus\n"
		"lock that slows every core of this host (and, in a VM, of the physical machine under\n"
		"it). Set AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1 on a machine that is yours alone to do it.\n",
		program);
	return 1;
}

#endif
