// SPDX-License-Identifier: GPL-2.0
/*
 * cpuid: prints one CPUID leaf as the CPU it runs on reports it, whatever the kernel names
 * in /proc/cpuinfo (5.10 names no Bus Lock Detect flag, for instance).
 *
 *   cpuid LEAF [SUBLEAF]   prints 'eax=0x... ebx=0x... ecx=0x... edx=0x...'
 */
#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	unsigned int eax, ebx, ecx, edx, leaf, subleaf;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: cpuid LEAF [SUBLEAF]\n");
		return 2;
	}
	leaf = strtoul(argv[1], NULL, 0);
	subleaf = argc == 3 ? strtoul(argv[2], NULL, 0) : 0;
	if (__get_cpuid_max(leaf & 0x80000000, NULL) < leaf) {
		fprintf(stderr, "cpuid: leaf %#x is above the maximum\n", leaf);
		return 1;
	}
	__cpuid_count(leaf, subleaf, eax, ebx, ecx, edx);
	printf("eax=%#x ebx=%#x ecx=%#x edx=%#x\n", eax, ebx, ecx, edx);
	return 0;
}
