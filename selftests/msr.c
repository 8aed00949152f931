// SPDX-License-Identifier: GPL-2.0
/*
 * msr: reads or writes a model-specific register of one CPU through /dev/cpu/N/msr
 * (CONFIG_X86_MSR), for the selftests to see DEBUGCTL as the CPU holds it.
 *
 *   msr CPU REG          prints the value, in decimal
 *   msr CPU REG VALUE    writes VALUE
 *
 * REG and VALUE take C notation (0x1d9). Exit 1 if the CPU refuses (#GP: EIO), 2 on misuse.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char path[64];
	uint64_t value;
	off_t reg;
	int fd;

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: msr CPU REG [VALUE]\n");
		return 2;
	}
	snprintf(path, sizeof(path), "/dev/cpu/%s/msr", argv[1]);
	reg = (off_t)strtoull(argv[2], NULL, 0);
	fd = open(path, argc == 4 ? O_WRONLY : O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "msr: %s: %s\n", path, strerror(errno));
		return 2;
	}
	if (argc == 4) {
		value = strtoull(argv[3], NULL, 0);
		if (pwrite(fd, &value, sizeof(value), reg) != sizeof(value)) {
			fprintf(stderr, "msr: write of %#" PRIx64 " to %#llx on CPU %s: %s\n", value,
				(unsigned long long)reg, argv[1], strerror(errno));
			return 1;
		}
		return 0;
	}
	if (pread(fd, &value, sizeof(value), reg) != sizeof(value)) {
		fprintf(stderr, "msr: read of %#llx on CPU %s: %s\n", (unsigned long long)reg, argv[1],
			strerror(errno));
		return 1;
	}
	printf("%" PRIu64 "\n", value);
	return 0;
}
