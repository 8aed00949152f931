// SPDX-License-Identifier: GPL-2.0
/*
 * paramfuzz: writes a corpus of values to the split_lock_detect parameter at run time and
 * checks the kernel's answer to each against an oracle of its own (not the module's
 * parser): a valid value is accepted and becomes the policy; any other is refused with
 * EINVAL and leaves the policy as it was.
 *
 *   paramfuzz PARAM FIRST COUNT SEED
 *
 * Writes inputs FIRST .. FIRST+COUNT-1 of the corpus of SEED (the same seed, the same
 * corpus) and prints one line: writes=N valid=N invalid=N wrong=N. Each wrong answer is
 * printed before it, with the input escaped. Exit status 0 only if wrong=0.
 *
 * The corpus mixes ten kinds of input, by input number modulo 10: random bytes, random
 * printable text, overlong values (up to 5000 bytes), out-of-range, negative, signed and
 * overflowing numbers, whitespace around valid values, case variants, one-byte mutations
 * of valid values, valid values, embedded NULs and truncated prefixes.
 *
 * The oracle, from the parameter's documented grammar (docs/ABI): the kernel passes the
 * written bytes up to the first NUL and at most PAGE_SIZE of them; one trailing newline is
 * ignored; the rest must be 1 to 19 bytes and exactly off, warn, fatal or ratelimit:
 * followed by decimal digits whose value is 1 to 1000.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_VALUE_LEN 19
#define PAGE 4096
#define MAX_INPUT 5000

static uint64_t rng;

static uint64_t next(void)
{
	/* xorshift64*: deterministic for a seed, good enough for a corpus. */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ULL;
}

static unsigned int below(unsigned int n)
{
	return (unsigned int)(next() % n);
}

static const char *const tokens[] = { "off", "warn", "fatal", "ratelimit:1", "ratelimit:10",
				      "ratelimit:100", "ratelimit:1000", "ratelimit:007" };
#define NTOKENS (sizeof(tokens) / sizeof(tokens[0]))

/* Fills buf with input number i of the corpus; returns its length. */
static size_t generate(unsigned long long i, char *buf)
{
	static const char *const numbers[] = { "0", "1001", "-1", "+5", "-0", "4294967296",
		"4294967297", "18446744073709551616", "99999999999", "000000000001", "1e3",
		"0x10", " 5", "5 ", "١٠", "10.0", "2147483648", "-2147483648", "1,000", "" };
	static const char *const spaces[] = { " ", "\t", "\r", "\n\n", "\v", "\f", "\r\n" };
	static const char *const prefixes[] = { "ratelimit", "ratelimit:", "rate", "r", "o", "of",
		"war", "fata", "ratelimit;10", "ratelimit=10", "ratelimit 10", "RATELIMIT:10" };
	const char *token = tokens[below(NTOKENS)];
	size_t len = 0, n;

	switch (i % 10) {
	case 0: /* random bytes */
		len = 1 + below(40);
		for (n = 0; n < len; n++)
			buf[n] = (char)below(256);
		break;
	case 1: /* random printable text */
		len = 1 + below(40);
		for (n = 0; n < len; n++)
			buf[n] = (char)(' ' + below(95));
		break;
	case 2: /* overlong: a valid value padded, or a long run */
		len = 20 + below(MAX_INPUT - 20);
		memset(buf, "w9 a:"[below(5)], len);
		if (below(2))
			memcpy(buf, token, strlen(token));
		break;
	case 3: /* numbers the rate must refuse */
		len = (size_t)sprintf(buf, "ratelimit:%s", numbers[below(sizeof(numbers) / sizeof(numbers[0]))]);
		break;
	case 4: /* whitespace around a valid value */
		n = below(3);
		if (n != 1)
			len += (size_t)sprintf(buf, "%s", spaces[below(7)]);
		len += (size_t)sprintf(buf + len, "%s", token);
		if (n != 0)
			len += (size_t)sprintf(buf + len, "%s", spaces[below(7)]);
		break;
	case 5: /* case variants: at least one letter flipped */
		len = (size_t)sprintf(buf, "%s", token);
		for (n = 0; n < len; n++)
			if (buf[n] >= 'a' && buf[n] <= 'z' && below(2))
				buf[n] -= 32;
		buf[0] = buf[0] >= 'a' && buf[0] <= 'z' ? buf[0] - 32 : buf[0];
		break;
	case 6: /* one byte deleted, inserted or replaced */
		len = (size_t)sprintf(buf, "%s", token);
		n = below(len);
		switch (below(3)) {
		case 0:
			memmove(buf + n, buf + n + 1, len - n);
			len--;
			break;
		case 1:
			memmove(buf + n + 1, buf + n, len - n + 1);
			buf[n] = (char)below(256);
			len++;
			break;
		default:
			buf[n] = (char)below(256);
		}
		break;
	case 7: /* valid values, with or without a newline, rates with leading zeros */
		if (below(2))
			len = (size_t)sprintf(buf, "%s", token);
		else
			len = (size_t)sprintf(buf, "ratelimit:%0*u", (int)below(6), 1 + below(1000));
		if (below(2))
			buf[len++] = '\n';
		break;
	case 8: /* embedded NULs */
		len = (size_t)sprintf(buf, "%s", token);
		if (below(2)) {
			buf[len++] = '\0';
			len += (size_t)sprintf(buf + len, "junk%u", below(100));
		} else {
			memmove(buf + 1, buf, len + 1);
			buf[0] = '\0';
			len++;
		}
		break;
	default: /* truncated and look-alike prefixes */
		len = (size_t)sprintf(buf, "%s", prefixes[below(sizeof(prefixes) / sizeof(prefixes[0]))]);
		break;
	}
	return len;
}

/* The canonical policy the kernel must adopt for buf, or 0 if it must refuse it. */
static int oracle(const char *buf, size_t len, char *canonical)
{
	char value[PAGE + 1];
	unsigned long rate = 0;
	size_t n;

	if (len > PAGE)
		len = PAGE;
	memcpy(value, buf, len);
	value[len] = '\0';
	len = strlen(value);
	if (len && value[len - 1] == '\n')
		value[--len] = '\0';
	if (len == 0 || len > MAX_VALUE_LEN)
		return 0;
	if (!strcmp(value, "off") || !strcmp(value, "warn") || !strcmp(value, "fatal")) {
		strcpy(canonical, value);
		return 1;
	}
	if (strncmp(value, "ratelimit:", 10) || len == 10)
		return 0;
	for (n = 10; n < len; n++) {
		if (value[n] < '0' || value[n] > '9')
			return 0;
		rate = rate * 10 + (unsigned long)(value[n] - '0');
	}
	if (rate < 1 || rate > 1000)
		return 0;
	sprintf(canonical, "ratelimit:%lu", rate);
	return 1;
}

static void read_policy(const char *param, char *out)
{
	int fd = open(param, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, out, 63);

	if (n <= 0) {
		fprintf(stderr, "paramfuzz: cannot read %s: %s\n", param, strerror(errno));
		exit(2);
	}
	close(fd);
	out[n] = '\0';
	if (out[n - 1] == '\n')
		out[n - 1] = '\0';
}

static void print_escaped(const char *buf, size_t len)
{
	for (size_t n = 0; n < len && n < 64; n++) {
		unsigned char c = (unsigned char)buf[n];

		if (c >= ' ' && c < 127 && c != '\\')
			putchar(c);
		else
			printf("\\x%02x", c);
	}
	if (len > 64)
		printf("...(%zu bytes)", len);
}

int main(int argc, char **argv)
{
	static char buf[MAX_INPUT + 64];
	unsigned long long first, count, valid = 0, invalid = 0, wrong = 0;
	char before[64], after[64], canonical[64];

	if (argc != 5) {
		fprintf(stderr, "usage: paramfuzz PARAM FIRST COUNT SEED\n");
		return 2;
	}
	first = strtoull(argv[2], NULL, 10);
	count = strtoull(argv[3], NULL, 10);
	rng = strtoull(argv[4], NULL, 10) | 1;
	/* The corpus of a seed is one sequence: skip to input FIRST. */
	for (unsigned long long i = 0; i < first; i++)
		generate(i, buf);
	setvbuf(stdout, NULL, _IOLBF, 0);

	for (unsigned long long i = first; i < first + count; i++) {
		size_t len = generate(i, buf);
		int expect_valid = oracle(buf, len, canonical);
		int fd = open(argv[1], O_WRONLY);
		ssize_t written;
		int error;

		if (fd < 0) {
			fprintf(stderr, "paramfuzz: cannot open %s: %s\n", argv[1], strerror(errno));
			return 2;
		}
		read_policy(argv[1], before);
		written = write(fd, buf, len);
		error = written < 0 ? errno : 0;
		close(fd);
		read_policy(argv[1], after);
		expect_valid ? valid++ : invalid++;
		if (expect_valid ? (written != (ssize_t)len || strcmp(after, canonical))
				 : (written >= 0 || error != EINVAL || strcmp(after, before))) {
			wrong++;
			printf("wrong: input %llu '", i);
			print_escaped(buf, len);
			printf("': expected %s, got write=%zd (%s), policy '%s' -> '%s'\n",
			       expect_valid ? canonical : "EINVAL", written, error ? strerror(error) : "ok",
			       before, after);
		}
	}
	printf("writes=%llu valid=%llu invalid=%llu wrong=%llu\n", count, valid, invalid, wrong);
	return wrong ? 1 : 0;
}
