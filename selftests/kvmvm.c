// SPDX-License-Identifier: GPL-2.0
/*
 * kvmvm: the least a VMM does before a guest runs: a KVM VM with the in-kernel irqchip and
 * one vCPU (on 7.0+ with kvm_amd enable_mediated_pmu=1, creating the vCPU is what gives the
 * VM a mediated vPMU: perf_create_mediated_pmu()). No guest code runs.
 *
 *   kvmvm          creates them, prints 'vcpu=ok' or 'vcpu_errno=N (text)', and exits
 *   kvmvm -h       on success prints 'vcpu=ok' and holds the VM until killed
 *
 * Exit status: 0 the vCPU was created, 1 it was refused, 2 no VM at all.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int hold = argc == 2 && !strcmp(argv[1], "-h");
	int kvm, vm, vcpu;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		printf("kvm_errno=%d (%s)\n", errno, strerror(errno));
		return 2;
	}
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		printf("vm_errno=%d (%s)\n", errno, strerror(errno));
		return 2;
	}
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) {
		printf("irqchip_errno=%d (%s)\n", errno, strerror(errno));
		return 2;
	}
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0) {
		printf("vcpu_errno=%d (%s)\n", errno, strerror(errno));
		return 1;
	}
	printf("vcpu=ok\n");
	fflush(stdout);
	while (hold)
		pause();
	return 0;
}
