// SPDX-License-Identifier: GPL-2.0
/*
 * Guest side of scripts/qemu/selftest: checks the patched QEMU's model of AMD Bus Lock
 * Detect and of the core PMU from a Linux 6.12 guest, without the amd_sld module.
 * Built with `gcc -static -O2`; runs as root in a busybox initramfs.
 *
 *   selftest full    BLD + PMU      (-cpu EPYC,+bus-lock-detect,+perfctr-core,pmu=on)
 *   selftest legacy  BLD + the 4 legacy counters only (-cpu EPYC,+bus-lock-detect,pmu=on)
 *   selftest nopmu   BLD, no PMU    (-cpu EPYC,+bus-lock-detect)
 *   selftest nobld   PMU, no BLD    (-cpu EPYC,+perfctr-core,pmu=on)
 *   selftest ignore  BLD enumerated, DEBUGCTL writes dropped
 *                                   (-cpu EPYC,+bus-lock-detect,x-debugctl-ignore-writes=on)
 *   selftest v2      BLD + PMU with PerfMonV2 (full's -cpu plus x-amd-perfmon-v2=on)
 *
 * What the guest kernel does with a bus-lock #DB on AMD (6.12): BLD enumerates, so
 * sld_state_setup() picks sld_warn, but only init_intel() ever sets DEBUGCTL[2]; this
 * program sets it through /dev/cpu/N/msr. exc_debug_user() flips DR6's polarity, sees
 * DR_BUS_LOCK, calls handle_bus_lock() (a kprobe counts those calls exactly), which
 * prints "#DB: comm/pid took a bus_lock trap at address: 0x<ip>" (rate limited) and
 * sends no signal. Prints TAP; exits 1 if any check failed.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
#include <time.h>
#include <unistd.h>

#define MSR_DEBUGCTL 0x1d9
#define DEBUGCTL_BLD 0x4
#define FLAGS_MASK 0xcd5 /* CF PF AF ZF SF DF OF */
#define TF 0x100

static int tests, failures;
static bool perfmon_v2; /* the v2 mode: a counter counts only with its PerfCntrGlobalCtl bit */
static int ncpus;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("%sok %d - ", ok ? "" : "not ", ++tests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	failures += !ok;
}

/* 0 or the errno of the access to MSR of CPU. */
static int msr_access(int cpu, uint32_t msr, uint64_t *val, bool write)
{
	char path[64];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "/dev/cpu/%d/msr", cpu);
	fd = open(path, write ? O_WRONLY : O_RDONLY);
	if (fd < 0)
		return errno;
	if ((write ? pwrite(fd, val, 8, msr) : pread(fd, val, 8, msr)) != 8)
		ret = errno ? errno : EIO;
	close(fd);
	return ret;
}

static int wrmsr(int cpu, uint32_t msr, uint64_t val) { return msr_access(cpu, msr, &val, true); }

static uint64_t rdmsr(int cpu, uint32_t msr)
{
	uint64_t val = ~0ULL;

	if (msr_access(cpu, msr, &val, false))
		return ~0ULL;
	return val;
}

static bool set_debugctl_all(uint64_t val)
{
	bool ok = true;

	for (int cpu = 0; cpu < ncpus; cpu++)
		ok &= !wrmsr(cpu, MSR_DEBUGCTL, val);
	return ok;
}

/* --- the locked instructions, at CPL 3; each label marks the next instruction. --- */
void split_add(void *p);
void split_xchg(void *p);
extern char split_add_next[];
__asm__(".text\n"
	".globl split_add\nsplit_add:\n\tlock addl $1, (%rdi)\n"
	".globl split_add_next\nsplit_add_next:\n\tret\n"
	".globl split_xchg\nsplit_xchg:\n\tmovl $7, %eax\n\txchgl %eax, (%rdi)\n\tret\n");

static void op_add(void *p) { split_add(p); }
static void op_xchg(void *p) { split_xchg(p); }
static void op_inc(void *p) { __asm__ volatile("lock incl %0" : "+m"(*(int *)p)); }
static void op_dec(void *p) { __asm__ volatile("lock decl %0" : "+m"(*(int *)p)); }
static void op_not(void *p) { __asm__ volatile("lock notl %0" : "+m"(*(int *)p)); }
static void op_neg(void *p) { __asm__ volatile("lock negl %0" : "+m"(*(int *)p)); }
static void op_or(void *p) { __asm__ volatile("lock orq $1, %0" : "+m"(*(long *)p)); }
static void op_xadd(void *p)
{
	int v = 1;

	__asm__ volatile("lock xaddl %1, %0" : "+m"(*(int *)p), "+r"(v));
}
static void op_cmpxchg(void *p)
{
	int old = *(volatile int *)p;

	__asm__ volatile("lock cmpxchgl %2, %0" : "+m"(*(int *)p), "+a"(old) : "r"(old + 1));
}
static void op_cmpxchg8b(void *p)
{
	uint32_t lo = ((volatile uint32_t *)p)[0], hi = ((volatile uint32_t *)p)[1];

	__asm__ volatile("lock cmpxchg8b %0"
			 : "+m"(*(uint64_t *)p), "+a"(lo), "+d"(hi)
			 : "b"(lo + 1), "c"(hi));
}
static void op_bts(void *p) { __asm__ volatile("lock btsl $31, %0" : "+m"(*(int *)p)); }
static void op_btc(void *p) { __asm__ volatile("lock btcl $31, %0" : "+m"(*(int *)p)); }

static const struct {
	const char *name;
	void (*fn)(void *);
	int size;
} ops[] = {
	{ "lock add", op_add, 4 },   { "xchg", op_xchg, 4 },	  { "lock inc", op_inc, 4 },
	{ "lock dec", op_dec, 4 },   { "lock not", op_not, 4 },	  { "lock neg", op_neg, 4 },
	{ "lock or", op_or, 8 },     { "lock xadd", op_xadd, 4 }, { "lock cmpxchg", op_cmpxchg, 4 },
	{ "lock cmpxchg8b", op_cmpxchg8b, 8 }, { "lock bts", op_bts, 4 }, { "lock btc", op_btc, 4 },
};
#define NOPS (int)(sizeof(ops) / sizeof(ops[0]))

static char *line; /* 64-byte aligned; line + 64 is the next cache line */

/* --- handle_bus_lock() calls, counted by a kprobe --- */
#define TRACING "/sys/kernel/tracing/"

static bool write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_APPEND);
	bool ok;

	if (fd < 0)
		return false;
	ok = write(fd, s, strlen(s)) == (ssize_t)strlen(s);
	close(fd);
	return ok;
}

static bool kprobe_setup(void)
{
	return write_file(TRACING "kprobe_events", "p:qst_bus_lock handle_bus_lock\n") &&
	       write_file(TRACING "events/kprobes/qst_bus_lock/enable", "1\n");
}

static long bus_lock_calls(void)
{
	char buf[4096], name[64];
	long hits, misses;
	FILE *f = fopen(TRACING "kprobe_profile", "r");

	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f))
		if (sscanf(buf, "%63s %ld %ld", name, &hits, &misses) == 3 &&
		    !strcmp(name, "qst_bus_lock")) {
			fclose(f);
			return hits;
		}
	fclose(f);
	return -1;
}

static char klog[1 << 20];

static const char *kernel_log(void)
{
	int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, klog, sizeof(klog) - 1);

	klog[n > 0 ? n : 0] = 0;
	return klog;
}

static volatile sig_atomic_t sigtraps;
static volatile sig_atomic_t step_budget;

static void on_sigtrap(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;

	(void)sig, (void)si;
	sigtraps++;
	if (--step_budget <= 0)
		uc->uc_mcontext.gregs[REG_EFL] &= ~TF;
}

/* --- flags around a trapped (or faulting) split lock --- */
static unsigned long dec_flags(void *p)
{
	unsigned long flags;

	__asm__ volatile("stc\n\tstd\n\tlock decl %1\n\tpushf\n\tpop %0\n\tcld"
			 : "=r"(flags), "+m"(*(int *)p) : : "cc", "memory");
	return flags & FLAGS_MASK;
}

static unsigned long xchg_flags(void *p)
{
	unsigned long flags;
	int v = 5;

	/* ZF=1 CF=1 DF=1 going in; XCHG leaves all flags alone */
	__asm__ volatile("xorl %%eax, %%eax\n\tstc\n\tstd\n\txchgl %2, %1\n\tpushf\n\tpop %0\n\tcld"
			 : "=r"(flags), "+m"(*(int *)p), "+r"(v) : : "eax", "cc", "memory");
	return flags & FLAGS_MASK;
}

static atomic_bool stop_busy;

static void *busy(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&stop_busy, memory_order_relaxed))
		;
	return NULL;
}

static void check_flags(const char *what)
{
	char *split = line + 62, *aligned = line + 128;
	unsigned long want, got;
	int bad = 0;

	for (int i = 0; i < 200; i++) {
		*(volatile int *)aligned = 1;
		*(volatile int *)split = 1;
		want = dec_flags(aligned);
		got = dec_flags(split);
		if (got != want || *(volatile int *)split != 0)
			bad++;
	}
	check(!bad && (want & 0x441) == 0x441,
	      "%s: split 'stc; std; lock dec' to 0 keeps ZF, CF, DF (%d/200 bad, flags %#lx want %#lx)",
	      what, bad, got, want);
	bad = 0;
	for (int i = 0; i < 200; i++) {
		want = xchg_flags(aligned);
		got = xchg_flags(split);
		if (got != want || *(volatile int *)split != 5)
			bad++;
	}
	check(!bad && (want & 0x441) == 0x441,
	      "%s: split 'std; xchg' keeps DF, ZF, CF (%d/200 bad, flags %#lx want %#lx)", what, bad,
	      got, want);
}

/* A split lock whose second page is not present: the #PF must keep the flags. */
static void check_flags_pf(void)
{
	long page = sysconf(_SC_PAGESIZE);
	int bad = 0, unmapped = 0;
	unsigned long got = 0;

	for (int i = 0; i < 200; i++) {
		char *base = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		char *p = base + page - 2;
		unsigned char vec[2];

		p[0] = 1, p[1] = 0; /* first page present, second one not yet */
		unmapped += mincore(base, 2 * page, vec) == 0 && vec[0] && !vec[1];
		got = dec_flags(p);
		if (got != 0x445 /* ZF PF CF DF */ || *(volatile int *)p != 0)
			bad++;
		munmap(base, 2 * page);
	}
	check(!bad && unmapped == 200,
	      "split lock dec faulting on its second page keeps CF, DF (%d/200 bad, flags %#lx, "
	      "%d/200 second page absent before)", bad, got, unmapped);
}

/* --- flags around cmpxchg8b/16b --- */
/*
 * CMPXCHG8B/16B change ZF and leave the other flags alone. QEMU 7.2 translates them to
 * helpers that compute the old flags from env->cc_op, which the translator had not
 * synced: after 'popf' (env->cc_op = EFLAGS) and 'add' in the same TB, the helper took
 * the add's source operand (CC_SRC) for EFLAGS and kept it, garbage bits and TF
 * included, until an exit from the CPU loop, an interrupt or a syscall folded it into
 * the real EFLAGS (the kernel-mode single-step #DB seen on Debian 6.12's SLUB fast path).
 * Wanted: 0 + 0x980 gives CF PF AF ZF SF OF all 0 (PF: the low byte 0x80 has one bit set),
 * then ZF=1 from the successful compare; TF stays 0.
 */
#define CX_OPERAND 0x980UL /* OF, TF and SF as an add's source operand */
#define CX_WANT 0x40UL     /* ZF */

static unsigned long cx_flags(unsigned __int128 *m, int kind, bool syscall_after)
{
	uint64_t lo = (uint64_t)*m, hi = (uint64_t)(*m >> 64), t;
	unsigned long f;

	/* lea, not sub, around the pushes: keep gcc's red zone and the flags intact. */
#define CX_ASM(insn)                                                                       \
	__asm__ volatile("lea -128(%%rsp), %%rsp\n\tpushq $0x202\n\tpopfq\n\tjmp 1f\n1:\n\t"  \
			 "xorl %k[t], %k[t]\n\taddq %[v], %[t]\n\t" insn " %[m]\n\t"           \
			 "pushfq\n\tpopq %[f]\n\tlea 128(%%rsp), %%rsp"                         \
			 : [f] "=r"(f), [t] "=&r"(t), [m] "+m"(*m), "+a"(lo), "+d"(hi)          \
			 : [v] "r"(CX_OPERAND), "b"(lo + 1), "c"(hi)                            \
			 : "cc", "memory")
	switch (kind) {
	case 0: CX_ASM("cmpxchg16b"); break;
	case 1: CX_ASM("lock cmpxchg16b"); break;
	case 2: lo = (uint32_t)*m, hi = (uint32_t)(*m >> 32); CX_ASM("cmpxchg8b"); break;
	default: lo = (uint32_t)*m, hi = (uint32_t)(*m >> 32); CX_ASM("lock cmpxchg8b"); break;
	}
#undef CX_ASM
	if (syscall_after) {
		/* The syscall saves EFLAGS in R11 and SYSRET/IRET restores it: a leaked TF traps. */
		uint64_t a = (uint64_t)*m, d = (uint64_t)(*m >> 64), c = d;

		__asm__ volatile("lea -128(%%rsp), %%rsp\n\tpushq $0x202\n\tpopfq\n\tjmp 1f\n1:\n\t"
				 "xorl %k[t], %k[t]\n\taddq %[v], %[t]\n\tcmpxchg16b %[m]\n\t"
				 "movl %[nr], %%eax\n\tsyscall\n\tlea 128(%%rsp), %%rsp"
				 : [t] "=&r"(t), [m] "+m"(*m), "+a"(a), "+d"(d), "+c"(c)
				 : [v] "r"(CX_OPERAND), "b"(a + 1), [nr] "i"(SYS_getppid)
				 : "r11", "cc", "memory");
	}
	return f & (FLAGS_MASK | TF);
}

static void check_cmpxchg_flags(void)
{
	static const char *const names[] = { "cmpxchg16b", "lock cmpxchg16b", "cmpxchg8b",
					     "lock cmpxchg8b" };
	static unsigned __int128 m __attribute__((aligned(64)));
	unsigned long got = 0;
	int traps;

	for (int kind = 0; kind < 4; kind++) {
		int bad = 0;

		for (int i = 0; i < 100; i++) {
			got = cx_flags(&m, kind, false);
			bad += got != CX_WANT;
		}
		check(!bad, "'popf; add; %s' (success) keeps CF..OF of the add, ZF=1, no TF "
		      "(%d/100 bad, flags %#lx want %#lx)", names[kind], bad, got, CX_WANT);
	}
	traps = sigtraps;
	step_budget = 1; /* the SIGTRAP handler clears a leaked TF at once */
	for (int i = 0; i < 100; i++)
		cx_flags(&m, 0, true);
	check(sigtraps == traps, "'add; cmpxchg16b; syscall': no single-step SIGTRAP (%d in 100)",
	      (int)(sigtraps - traps));
}

/* --- perf --- */
static int perf_open(uint64_t config, bool excl_user, bool excl_kernel, int hg, uint64_t period)
{
	struct perf_event_attr a = {
		.type = PERF_TYPE_RAW,
		.size = sizeof(a),
		.config = config,
		.pinned = 1,
		.exclude_user = excl_user,
		.exclude_kernel = excl_kernel,
		.exclude_host = hg == 1,
		.exclude_guest = hg == 2,
		.sample_period = period,
		.sample_type = period ? PERF_SAMPLE_IP : 0,
		.wakeup_events = 1,
	};

	return syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
}

static long long perf_read(int fd)
{
	long long v = -1;

	if (read(fd, &v, sizeof(v)) != sizeof(v))
		return -1;
	return v;
}

static void run_split(int n, int off, int size)
{
	for (int i = 0; i < n; i++)
		(size == 8 ? op_or : op_add)(line + off);
}

static long long count_split(uint64_t config, bool eu, bool ek, int hg, int n, int off)
{
	int fd = perf_open(config, eu, ek, hg, 0);
	long long v;

	if (fd < 0)
		return -2;
	run_split(n, off, 4);
	v = perf_read(fd);
	close(fd);
	return v;
}

static long pmi_total(void)
{
	char buf[4096];
	long total = -1;
	FILE *f = fopen("/proc/interrupts", "r");

	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f)) {
		char *s = buf;

		while (*s == ' ')
			s++;
		if (strncmp(s, "PMI:", 4))
			continue;
		total = 0;
		s += 4;
		for (int i = 0; i < ncpus; i++)
			total += strtol(s, &s, 10);
	}
	fclose(f);
	return total;
}

static void check_pmu(int ncounters)
{
	long long v;
	int fd, fds[8];
	uint64_t val;

	/* Counter MSRs: 48 bits; the legacy MSRs alias counters 0-3. Nothing uses them now. */
	if (ncounters == 6) {
		int e1 = wrmsr(0, 0xc0010005, 0xabcdULL | 1ULL << 48), e2;

		val = rdmsr(0, 0xc0010203);
		e2 = wrmsr(0, 0xc001020b, 0x123456789abcULL);
		check(!e1 && !e2 && val == 0xabcd && rdmsr(0, 0xc001020b) == 0x123456789abcULL &&
			      rdmsr(0, 0xc0010202) == 0,
		      "PerfCtr1 (0xc0010005) aliases PERF_CTR1 (0xc0010203), 48 bits: %#llx",
		      (unsigned long long)val);
		wrmsr(0, 0xc0010005, 0);
		wrmsr(0, 0xc001020b, 0);
	} else {
		check(wrmsr(0, 0xc0010004, 0x42) == 0 && rdmsr(0, 0xc0010004) == 0x42 &&
			      rdmsr(0, 0xc0010201) == 0,
		      "legacy PerfCtr0 reads back; PERF_CTR0 (0xc0010201) absent without perfctr-core");
		wrmsr(0, 0xc0010004, 0);
	}

	/* Host-Only/Guest-Only programmed directly (Linux never sets HostOnly without SVM). */
	{
		static const struct { uint64_t hg; long want; const char *what; } hg[] = {
			{ 0, 10, "neither" }, { 1ULL << 41, 0, "HostOnly" },
			{ 1ULL << 40, 0, "GuestOnly" }, { 3ULL << 40, 0, "both" },
		};
		int ctl = ncounters == 6 ? 0xc001020a : 0xc0010003;
		int ctr = ncounters == 6 ? 0xc001020b : 0xc0010007;
		cpu_set_t one, all;
		uint64_t global = perfmon_v2 ? rdmsr(0, 0xc0000301) : 0;

		sched_getaffinity(0, sizeof(all), &all);
		CPU_ZERO(&one);
		CPU_SET(0, &one);
		sched_setaffinity(0, sizeof(one), &one);
		/* PerfMonV2: the counter's GlobalCtl bit too (Linux leaves it clear while idle). */
		if (perfmon_v2)
			wrmsr(0, 0xc0000301, global | 1ULL << 5);
		for (unsigned int i = 0; i < sizeof(hg) / sizeof(hg[0]); i++) {
			wrmsr(0, ctr, 0);
			wrmsr(0, ctl, 0x0125 | 3ULL << 16 | 1ULL << 22 | hg[i].hg);
			run_split(10, 62, 4);
			wrmsr(0, ctl, 0);
			val = rdmsr(0, ctr);
			check((long)val == hg[i].want,
			      "EFER.SVME=0, %s of HostOnly/GuestOnly set in the event select: %lld counted (want %ld)",
			      hg[i].what, (long long)val, hg[i].want);
		}
		wrmsr(0, ctr, 0);
		if (perfmon_v2)
			wrmsr(0, 0xc0000301, global);
		sched_setaffinity(0, sizeof(all), &all);
	}

	/* All counters at once (pinned: an event that does not fit reads 0). */
	for (int i = 0; i < ncounters + 1; i++)
		fds[i] = perf_open(0x0125, false, false, 0, 0);
	run_split(10, 62, 4);
	{
		int good = 0;
		long long extra = perf_read(fds[ncounters]);

		for (int i = 0; i < ncounters; i++)
			good += perf_read(fds[i]) == 10;
		check(good == ncounters && extra <= 0,
		      "%d counters count 10 split locks at once (%d did), event %d does not fit (%lld)",
		      ncounters, good, ncounters + 1, extra);
		for (int i = 0; i < ncounters + 1; i++)
			if (fds[i] >= 0)
				close(fds[i]);
	}

	for (int off = 58; off <= 64; off++) { /* 4 bytes split a line at offsets 61..63 */
		int want = off % 64 + 4 > 64 ? 20 : 0;

		v = count_split(0x0125, false, false, 0, 20, off);
		check(v == want, "ls_locks.bus_lock, 20 lock adds at line offset %d: %lld (want %d)",
		      off % 64, v, want);
	}
	v = count_split(0x0125, false, false, 0, 40, 62);
	check(v == 40, "40 split lock adds count 40: %lld", v);
	v = count_split(0x0125, false, false, 0, 40, 128 + 60); /* 60 + 4 = 64: not split */
	check(v == 0, "40 lock adds ending at a line end count 0: %lld", v);
	/* Faulting on the second page (read, then write fault) and retried: counted once. */
	fd = perf_open(0x0125, false, false, 0, 0);
	for (int i = 0; i < 50; i++) {
		long page = sysconf(_SC_PAGESIZE);
		char *base = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		base[page - 2] = 1;
		op_dec(base + page - 2);
		munmap(base, 2 * page);
	}
	v = perf_read(fd);
	close(fd);
	check(v == 50, "50 split locks that first fault on their second page count 50: %lld", v);
	v = count_split(0x0125, false, true, 0, 30, 62);
	check(v == 30, "USR only (exclude_kernel) counts the user split locks: %lld", v);
	v = count_split(0x0125, true, false, 0, 30, 62);
	check(v == 0, "OS only (exclude_user) does not count user split locks: %lld", v);
	v = count_split(0x0225, false, false, 0, 30, 62);
	check(v == 0, "event 0x25 umask 0x02 does not count bus locks: %lld", v);
	v = count_split(0x0076, false, false, 0, 30, 62);
	check(v == 0, "another event (0x76) counts nothing: %lld", v);
	v = count_split(0x0125, false, false, 2, 30, 62);
	check(v == 30, "HostOnly (exclude_guest; Linux clears it with SVM off) counts: %lld", v);
	v = count_split(0x0125, false, false, 1, 30, 62);
	check(v == 0, "GuestOnly (exclude_host) with EFER.SVME=0 counts nothing: %lld", v);

	fd = perf_open(0x0125, false, false, 0, 0);
	{
		struct perf_event_mmap_page *pg =
			fd < 0 ? MAP_FAILED : mmap(NULL, sysconf(_SC_PAGESIZE), PROT_READ, MAP_SHARED, fd, 0);
		long long direct = -1, via_read;

		run_split(25, 62, 4);
		if (pg != MAP_FAILED && pg->cap_user_rdpmc && pg->index) {
			uint32_t lo, hi, seq;
			long long pmc;

			do {
				seq = pg->lock;
				__asm__ volatile("" ::: "memory");
				__asm__ volatile("rdpmc" : "=a"(lo), "=d"(hi) : "c"(pg->index - 1));
				pmc = (long long)((uint64_t)hi << 32 | lo) << (64 - pg->pmc_width) >>
				      (64 - pg->pmc_width);
				direct = pg->offset + pmc;
				__asm__ volatile("" ::: "memory");
			} while (pg->lock != seq);
		}
		via_read = perf_read(fd);
		check(direct == 25 && via_read == 25,
		      "user RDPMC through the perf mmap page and read() agree: %lld, %lld (want 25)",
		      direct, via_read);
		if (pg != MAP_FAILED)
			munmap(pg, sysconf(_SC_PAGESIZE));
		if (fd >= 0)
			close(fd);
	}

	/* Sampling: an overflow every 10 split locks raises a PMI through LVTPC (NMI). */
	{
		long page = sysconf(_SC_PAGESIZE), before = pmi_total(), after;
		int samples = 0;
		struct perf_event_mmap_page *pg;

		fd = perf_open(0x0125, false, false, 0, 10);
		pg = fd < 0 ? MAP_FAILED : mmap(NULL, 9 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		run_split(1000, 62, 4);
		if (pg != MAP_FAILED) {
			uint64_t head = pg->data_head, tail = pg->data_tail;
			char *data = (char *)pg + pg->data_offset;

			__sync_synchronize();
			while (tail < head) {
				struct perf_event_header *h = (void *)(data + tail % pg->data_size);

				samples += h->type == PERF_RECORD_SAMPLE;
				tail += h->size;
			}
		}
		v = perf_read(fd);
		after = pmi_total();
		check(v == 1000 && samples >= 98 && samples <= 100 && after - before >= samples,
		      "sample_period 10: 1000 counted (%lld), ~100 samples (%d), PMIs %ld", v,
		      samples, after - before);
		if (pg != MAP_FAILED)
			munmap(pg, 9 * page);
		if (fd >= 0)
			close(fd);
	}
}

static void check_no_pmu(void)
{
	int fd = perf_open(0x0125, false, false, 0, 0);

	check(fd < 0 && access("/sys/bus/event_source/devices/cpu", F_OK) != 0,
	      "no core PMU: perf_event_open(raw 0x0125) fails (%d, %s) and there is no 'cpu' PMU",
	      fd, fd < 0 ? strerror(errno) : "opened");
	if (fd >= 0)
		close(fd);
}

/* --- bus lock #DB --- */
static void check_bus_lock_db(bool expect)
{
	long before, after, total = 0;
	bool effects = true;
	char want_ip[64];

	/* The first bus-lock #DB (split_add) is logged before the printk ratelimit kicks in. */
	klogctl(5 /* SYSLOG_ACTION_CLEAR */, NULL, 0);
	for (int i = 0; i < NOPS; i++) {
		char *p = line + 64 - ops[i].size / 2;
		uint64_t old;

		memset(line, 0x22, 192);
		memcpy(&old, p, 8);
		before = bus_lock_calls();
		ops[i].fn(p);
		after = bus_lock_calls();
		total += after - before;
		effects &= memcmp(&old, p, 8) != 0;
		check(after - before == (expect ? 1 : 0), "%s split across a line: %ld bus-lock #DB", ops[i].name,
		      after - before);
		before = bus_lock_calls();
		ops[i].fn(line + 128); /* aligned */
		ops[i].fn(line + 64 - ops[i].size); /* ends at the line end */
		after = bus_lock_calls();
		check(after - before == 0, "%s within a line: %ld bus-lock #DB", ops[i].name,
		      after - before);
	}
	check(effects, "the trapped instructions completed (memory changed)");
	check(sigtraps == 0, "no SIGTRAP for bus-lock #DBs (DR6 had no B0-3/BS): %d",
	      (int)sigtraps);
	if (expect) {
		snprintf(want_ip, sizeof(want_ip), "bus_lock trap at address: 0x%lx",
			 (unsigned long)split_add_next);
		check(strstr(kernel_log(), want_ip) != NULL,
		      "the #DB is a trap: reported RIP is the next instruction (%s)", want_ip);
	}
}

/* Other #DB causes leave DR6[11] alone: single-step is SIGTRAP, not a bus lock. */
static void check_single_step(bool bld)
{
	long before = bus_lock_calls(), after;
	int traps = sigtraps;

	step_budget = 3;
	__asm__ volatile("pushf\n\torl $0x100, (%%rsp)\n\tpopf\n\tnop\n\tnop\n\tnop\n\tnop\n\tnop"
			 ::: "memory", "cc");
	after = bus_lock_calls();
	check(sigtraps - traps == 3 && after == before,
	      "single-step: %d SIGTRAPs (want 3), %ld bus-lock #DBs (want 0)",
	      (int)sigtraps - traps, after - before);
	if (!bld)
		return;
	before = bus_lock_calls();
	traps = sigtraps;
	step_budget = 1;
	__asm__ volatile("pushf\n\torl $0x100, (%%rsp)\n\tpopf\n\tlock addl $1, (%0)\n\tnop"
			 : : "r"(line + 62) : "memory", "cc");
	after = bus_lock_calls();
	check(sigtraps - traps == 1 && after - before == 1,
	      "single-step over a split lock: one #DB with BS and BLD (%d SIGTRAP, %ld bus lock)",
	      (int)sigtraps - traps, after - before);
}

static void check_debugctl(const char *mode)
{
	bool ignore = !strcmp(mode, "ignore"), bld = strcmp(mode, "nobld") != 0;
	uint64_t v;
	int err;

	check(rdmsr(0, MSR_DEBUGCTL) == 0, "DEBUGCTL resets to 0");
	err = wrmsr(0, MSR_DEBUGCTL, DEBUGCTL_BLD);
	v = rdmsr(0, MSR_DEBUGCTL);
	if (ignore)
		check(!err && v == 0, "x-debugctl-ignore-writes: write 0x4 accepted (%d), reads %#llx",
		      err, (unsigned long long)v);
	else if (bld)
		check(!err && v == DEBUGCTL_BLD, "DEBUGCTL[2] writes and reads back: %#llx (err %d)",
		      (unsigned long long)v, err);
	else
		check(err == EIO && v == 0, "without BLD, DEBUGCTL[2] is reserved: #GP (err %d), reads %#llx",
		      err, (unsigned long long)v);
	err = wrmsr(0, MSR_DEBUGCTL, 0x3);
	v = rdmsr(0, MSR_DEBUGCTL);
	check(!err && v == (ignore ? 0 : 0x3), "DEBUGCTL LBR|BTF write: err %d, reads %#llx", err,
	      (unsigned long long)v);
	err = wrmsr(0, MSR_DEBUGCTL, 0x8);
	check(err == EIO, "DEBUGCTL reserved bit 3: #GP (err %d)", err);
	err = wrmsr(0, MSR_DEBUGCTL, 0);
	check(!err && rdmsr(0, MSR_DEBUGCTL) == 0, "DEBUGCTL cleared");
}

/*
 * textpoke: cross-modifying code under MTTCG (0006). A static key (sched_schedstats, used
 * by enqueue_task_fair() and its callers) flipped in a loop while a pair of threads per
 * vCPU ping-pongs over pipes, so every vCPU keeps waking tasks on the others (IPIs,
 * sched_ttwu_pending) through the code text_poke_bp() rewrites. A vCPU that keeps a
 * translation of a patch site made from the bytes before the last write executes the
 * int3 after the kernel dropped its handler: "Oops: int3" (the shell script sees it on the
 * console; this program does not come back).
 */
static atomic_bool tp_stop;

struct tp_pair {
	int cpu, to[2], from[2];
};

static void tp_pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static void *tp_ping(void *arg)
{
	struct tp_pair *p = arg;
	char c = 0;

	tp_pin(p->cpu);
	while (!atomic_load(&tp_stop))
		if (write(p->to[1], &c, 1) != 1 || read(p->from[0], &c, 1) != 1)
			break;
	close(p->to[1]);
	return NULL;
}

static void *tp_pong(void *arg)
{
	struct tp_pair *p = arg;
	char c;

	tp_pin((p->cpu + 1) % ncpus);
	while (read(p->to[0], &c, 1) == 1)
		if (write(p->from[1], &c, 1) != 1)
			break;
	close(p->from[1]);
	return NULL;
}

static int check_textpoke(int seconds)
{
	const char *key = "/proc/sys/kernel/sched_schedstats";
	struct tp_pair pairs[64];
	pthread_t threads[128];
	int n = ncpus < 64 ? ncpus : 64;
	long flips = 0;
	time_t end;

	if (access(key, W_OK) != 0) {
		check(false, "%s is writable (a kernel with CONFIG_SCHEDSTATS and jump labels)", key);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		pairs[i].cpu = i;
		if (pipe(pairs[i].to) || pipe(pairs[i].from))
			return 1;
		pthread_create(&threads[2 * i], NULL, tp_ping, &pairs[i]);
		pthread_create(&threads[2 * i + 1], NULL, tp_pong, &pairs[i]);
	}
	end = time(NULL) + seconds;
	while (time(NULL) < end) {
		if (!write_file(key, "1\n") || !write_file(key, "0\n"))
			break;
		flips += 2;
		if (flips % 200 == 0)
			printf("# %ld flips of sched_schedstats\n", flips);
	}
	atomic_store(&tp_stop, true);
	for (int i = 0; i < 2 * n; i++)
		pthread_join(threads[i], NULL);
	check(flips >= 2 * seconds, "%ld flips of sched_schedstats in %d s while %d vCPUs wake each other",
	      flips, seconds, ncpus);
	printf("1..%d\n# qemu-selftest: %d passed, %d failed\n", tests, tests - failures, failures);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "full";
	bool v2 = perfmon_v2 = !strcmp(mode, "v2");
	bool core = !strcmp(mode, "full") || !strcmp(mode, "nobld") || v2;
	bool pmu = core || !strcmp(mode, "legacy");
	bool bld = strcmp(mode, "nobld") != 0;
	bool traps = bld && strcmp(mode, "ignore") != 0;
	unsigned int a, b, c, d;
	struct sigaction sa = { .sa_sigaction = on_sigtrap, .sa_flags = SA_SIGINFO };
	pthread_t thread;

	setvbuf(stdout, NULL, _IOLBF, 0);
	ncpus = sysconf(_SC_NPROCESSORS_ONLN);
	line = aligned_alloc(4096, 4096);
	sigaction(SIGTRAP, &sa, NULL);
	printf("TAP version 13\n# qemu-selftest mode %s, %d CPUs\n", mode, ncpus);
	if (!strncmp(mode, "textpoke", 8))
		return check_textpoke(mode[8] == ':' ? atoi(mode + 9) : 60);

	__cpuid_count(7, 0, a, b, c, d);
	check(!!(c & (1u << 24)) == bld, "CPUID 7.ECX[24] bus-lock-detect = %d", !!(c & (1u << 24)));
	__cpuid(0x80000001, a, b, c, d);
	check(!!(c & (1u << 23)) == core, "CPUID 0x80000001.ECX[23] perfctr-core = %d",
	      !!(c & (1u << 23)));
	{
		unsigned int max = __get_cpuid_max(0x80000000, NULL);
		uint64_t ctl = rdmsr(0, 0xc0000301), status = rdmsr(0, 0xc0000300);

		a = b = 0;
		if (max >= 0x80000022)
			__cpuid(0x80000022, a, b, c, d);
		check((a & 1) == v2 && (b & 0xf) == (v2 ? 6 : 0),
		      "CPUID 0x80000022 PerfMonV2 = %u, NumPerfCtrCore = %u (max extended leaf %#x)",
		      a & 1, b & 0xf, max);
		/* PerfMonV2: readable, one bit per core counter (Linux clears GlobalCtl at CPU
		 * bring-up and sets it only while events run); without it they read 0. */
		check(v2 ? !(ctl & ~0x3fULL) && !(status & ~0x3fULL) : ctl == 0 && status == 0,
		      "PerfCntrGlobalCtl %#llx, PerfCntrGlobalStatus %#llx",
		      (unsigned long long)ctl, (unsigned long long)status);
	}
	check(kprobe_setup() && bus_lock_calls() == 0, "kprobe on handle_bus_lock");
	{
		const char *log = kernel_log();
		bool accepted = strstr(log, "AMD PMU driver") && !strstr(log, "Broken PMU") &&
				!strstr(log, "PMU not available");

		check(accepted == pmu, "the kernel %s the AMD core PMU (check_hw_exists)",
		      accepted ? "accepted" : "did not accept");
	}
	/* Under TCG the PMI handler is slow: keep perf from throttling the sampling test. */
	write_file("/proc/sys/kernel/perf_cpu_time_max_percent", "0\n");

	check_debugctl(mode);

	check(set_debugctl_all(DEBUGCTL_BLD) || !bld, "DEBUGCTL[2] set on all %d CPUs", ncpus);
	pthread_create(&thread, NULL, busy, NULL); /* another vCPU busy: MTTCG's parallel path */
	check_bus_lock_db(traps);
	check_flags("with DEBUGCTL[2]=1");
	check_single_step(traps);
	set_debugctl_all(0);
	{
		long before = bus_lock_calls();

		for (int i = 0; i < NOPS; i++)
			ops[i].fn(line + 64 - ops[i].size / 2);
		check(bus_lock_calls() == before, "DEBUGCTL[2]=0: split locks take no #DB");
	}
	check_flags("with DEBUGCTL[2]=0");
	check_flags_pf();
	check_cmpxchg_flags();
	atomic_store(&stop_busy, true);
	pthread_join(thread, NULL);

	if (pmu)
		check_pmu(core ? 6 : 4);
	else
		check_no_pmu();

	printf("1..%d\n# qemu-selftest: %d passed, %d failed\n", tests, tests - failures, failures);
	return failures ? 1 : 0;
}
