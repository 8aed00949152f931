// SPDX-License-Identifier: GPL-2.0
/*
 * guestlock: a minimal KVM VMM whose guest takes split locks in guest user mode.
 *
 * The guest runs in 32-bit protected mode set up directly with KVM_SET_SREGS: flat
 * segments with DPL 3 for CS, SS and DS (so CPL 3), CR0.PE=1, no paging, EFLAGS.IOPL=3
 * (so `out` works at CPL 3); it never needs ring 0. It loops on `xchg` with a 4-byte
 * operand across a 64-byte line (GPA 0x203e..0x2041) and reports its progress with `out`
 * every -p iterations; the main thread of this process is the vCPU thread.
 *
 *   guestlock [-n N] [-t MS] [-w MS] [-p K] [-H]
 *     -n N   iterations (split locks) in all; 0: until -t ends it
 *     -t MS  stop at the first progress report after MS ms
 *     -w MS  also report the iterations and time from the first progress report after MS
 *            ms to the end (window_iterations, window_ms): a rate without the start-up
 *     -p K   a progress report (port 0x11, the iterations so far) every K iterations but
 *            the last (port 0x10 ends the run: -n N -p N makes no exit before it)
 *     -H     then, with no exit to the VMM in between, halt the vCPU: `int $0x80` through an
 *            interrupt gate (DPL 3, to ring 0 with IF=0; the GDT, IDT and TSS are in guest
 *            memory for it) to `hlt`; the vCPU blocks in KVM (kvm_vcpu_block()) until killed
 *
 * Prints 'guestlock: pid=P iterations=N elapsed_ms=T io_exits=X intr_exits=Y' at the end,
 * with -w 'window_iterations=N window_ms=T' after it; with -H nothing until killed, but a line
 * for each KVM_RUN that returns with EINTR (a signal, or task work queued with TWA_SIGNAL),
 * which it runs again. Exit status: 0 done, 1 the guest failed (a
 * shutdown or an exit it should not make), 2 no VM (KVM missing or refused).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE 0x10000
#define CODE_GPA 0x1000
#define HALT_GPA 0x1800
#define GDT_GPA 0x500
#define TSS_GPA 0x600
#define IDT_GPA 0x700
#define PORT_DONE 0x10
#define PORT_PROGRESS 0x11

/* Guest code, 32-bit: ebx = iterations in all, esi = iterations per report, edi = done. */
extern const unsigned char guest_code[], guest_code_end[], guest_halt[], guest_halt_end[];
asm(".pushsection .rodata\n"
    ".code32\n"
    "guest_code:\n"
    "1:	mov %esi, %ecx\n"
    "2:	xchg %eax, 0x203e\n" /* across the line at 0x2040: a split lock */
    "	inc %edi\n"
    "	dec %ecx\n"
    "	jnz 2b\n"
    "	mov %edi, %eax\n"
    "	cmp %ebx, %edi\n"
    "	je 5f\n"
    "	out %eax, $0x11\n"
    "	jmp 1b\n"
    "5:	test %edx, %edx\n" /* -H: to ring 0 through the IDT, and halt */
    "	jz 4f\n"
    "	int $0x80\n"
    "4:	out %eax, $0x10\n"
    "	jmp .\n"
    "guest_code_end:\n"
    "guest_halt:\n"
    "	cli\n"
    "3:	hlt\n"
    "	jmp 3b\n"
    "guest_halt_end:\n"
    ".code64\n"
    ".popsection\n");

static int vcpu;
static struct kvm_run *run;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void flat(struct kvm_segment *seg, uint16_t selector, uint8_t type, uint8_t dpl)
{
	memset(seg, 0, sizeof(*seg));
	seg->base = 0;
	seg->limit = 0xffffffff;
	seg->selector = selector | dpl;
	seg->type = type;
	seg->present = 1;
	seg->dpl = dpl;
	seg->db = 1;
	seg->s = 1;
	seg->g = 1;
}

/*
 * The descriptors int $0x80 needs: a GDT (flat code and data of ring 0 at 0x08 and 0x10, of
 * ring 3 at 0x18 and 0x20, a TSS at 0x28), the TSS (ring 0's stack) and an IDT whose vector
 * 0x80 is an interrupt gate of DPL 3 to the halt code in ring 0.
 */
static void descriptors(uint8_t *mem)
{
	uint64_t gdt[6] = {
		0,
		0x00cf9a000000ffffull, 0x00cf92000000ffffull,
		0x00cffa000000ffffull, 0x00cff2000000ffffull,
		0x0000890000000067ull | ((uint64_t)TSS_GPA << 16),
	};
	uint32_t esp0 = 0x9000, ss0 = 0x10;
	uint64_t gate = (HALT_GPA & 0xffff) | (0x08ull << 16) | (0xeeull << 40) |
			((uint64_t)(HALT_GPA >> 16) << 48);

	memcpy(mem + GDT_GPA, gdt, sizeof(gdt));
	memcpy(mem + TSS_GPA + 4, &esp0, 4);
	memcpy(mem + TSS_GPA + 8, &ss0, 4);
	memcpy(mem + IDT_GPA + 0x80 * 8, &gate, 8);
}

static int set_mode(uint8_t dpl, uint64_t rip, uint64_t rflags, struct kvm_regs *regs)
{
	struct kvm_sregs sregs;

	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return -1;
	flat(&sregs.cs, dpl ? 0x18 : 0x08, 0xb, dpl);
	flat(&sregs.ds, dpl ? 0x20 : 0x10, 0x3, dpl);
	memset(&sregs.tr, 0, sizeof(sregs.tr));
	sregs.tr.base = TSS_GPA;
	sregs.tr.limit = 0x67;
	sregs.tr.selector = 0x28;
	/*
	 * An available 32-bit TSS (9), not the busy one (11) that ltr leaves: QEMU 7.2's TCG
	 * takes a ring switch through a TR whose type & 7 is not 1 for a fatal error of its own
	 * (cpu_abort "invalid tss type", target/i386/tcg/seg_helper.c), whoever the guest is.
	 */
	sregs.tr.type = 9;
	sregs.tr.present = 1;
	sregs.gdt.base = GDT_GPA;
	sregs.gdt.limit = 6 * 8 - 1;
	sregs.idt.base = IDT_GPA;
	sregs.idt.limit = 0x81 * 8 - 1;
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 = 0x11; /* PE, ET; no paging */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return -1;
	regs->rip = rip;
	regs->rflags = rflags;
	regs->rsp = 0x8000;
	return ioctl(vcpu, KVM_SET_REGS, regs);
}

int main(int argc, char **argv)
{
	unsigned long long iterations = 1000, per_report = 100, done = 0, io_exits = 0, intr_exits = 0;
	unsigned long long window_start = 0;
	double limit_ms = 0, warmup_ms = 0, window_at = 0, start, end;
	int opt, halt = 0, kvm, vm;
	struct kvm_userspace_memory_region region;
	struct kvm_regs regs;
	uint8_t *mem;
	long run_size;

	while ((opt = getopt(argc, argv, "n:t:w:p:H")) != -1) {
		switch (opt) {
		case 'n': iterations = strtoull(optarg, NULL, 0); break;
		case 't': limit_ms = strtod(optarg, NULL); break;
		case 'w': warmup_ms = strtod(optarg, NULL); break;
		case 'p': per_report = strtoull(optarg, NULL, 0); break;
		case 'H': halt = 1; break;
		default:
			fprintf(stderr, "usage: guestlock [-n N] [-t MS] [-w MS] [-p K] [-H]\n");
			return 2;
		}
	}
	if (per_report == 0 || (iterations && iterations % per_report))
		per_report = iterations ? iterations : 100;
	if (!iterations && !limit_ms) {
		fprintf(stderr, "guestlock: -n 0 needs -t\n");
		return 2;
	}

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		printf("guestlock: kvm_errno=%d (%s)\n", errno, strerror(errno));
		return 2;
	}
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0 || ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) {
		printf("guestlock: vm_errno=%d (%s)\n", errno, strerror(errno));
		return 2;
	}
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 2;
	memcpy(mem + CODE_GPA, guest_code, guest_code_end - guest_code);
	memcpy(mem + HALT_GPA, guest_halt, guest_halt_end - guest_halt);
	descriptors(mem);
	region = (struct kvm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
		.userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
		printf("guestlock: memory_errno=%d (%s)\n", errno, strerror(errno));
		return 2;
	}
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vcpu < 0 || run_size <= 0) {
		printf("guestlock: vcpu_errno=%d (%s)\n", errno, strerror(errno));
		return 2;
	}
	run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return 2;
	memset(&regs, 0, sizeof(regs));
	regs.rbx = (uint32_t)iterations;
	regs.rsi = per_report;
	regs.rax = 1;
	regs.rdx = halt;
	/* CPL 3 (DPL 3 CS and SS), IOPL 3, IF clear, bit 1 set. */
	if (set_mode(3, CODE_GPA, 0x3002, &regs) < 0) {
		printf("guestlock: sregs_errno=%d (%s)\n", errno, strerror(errno));
		return 2;
	}
	printf("guestlock: pid=%d running\n", getpid());
	fflush(stdout);

	start = now_ms();
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				intr_exits++;
				printf("guestlock: KVM_RUN returned %s (%llu) after %llu iterations\n",
				       errno == EINTR ? "EINTR" : "EAGAIN", intr_exits, done);
				fflush(stdout);
				continue;
			}
			printf("guestlock: run_errno=%d (%s)\n", errno, strerror(errno));
			return 1;
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT &&
		    run->io.size == 4) {
			uint32_t value;

			memcpy(&value, (uint8_t *)run + run->io.data_offset, 4);
			io_exits++;
			done = value;
			if (run->io.port == PORT_DONE)
				break;
			if (run->io.port == PORT_PROGRESS) {
				double t = now_ms() - start;

				if (warmup_ms && !window_at && t >= warmup_ms) {
					window_at = t;
					window_start = done;
				}
				if (limit_ms && t >= limit_ms)
					break;
				continue;
			}
		}
		ioctl(vcpu, KVM_GET_REGS, &regs);
		printf("guestlock: unexpected exit_reason=%u rip=0x%llx (io port 0x%x)\n",
		       run->exit_reason, (unsigned long long)regs.rip,
		       run->exit_reason == KVM_EXIT_IO ? run->io.port : 0);
		return 1;
	}
	end = now_ms() - start;
	printf("guestlock: pid=%d iterations=%llu elapsed_ms=%.0f io_exits=%llu intr_exits=%llu",
	       getpid(), done, end, io_exits, intr_exits);
	if (window_at)
		printf(" window_iterations=%llu window_ms=%.0f", done - window_start, end - window_at);
	printf("\n");
	fflush(stdout);
	return 0;
}
