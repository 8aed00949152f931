// SPDX-License-Identifier: GPL-2.0

//! CPUs: the boot CPU's identity, this CPU, the online CPUs and the CPU hotplug lock.

use core::ptr;

use kernel::bindings;
use kernel::ffi::{c_uint, c_ulong};

extern "C" {
    fn amd_sld_this_cpu() -> c_uint;
    fn amd_sld_boot_cpu_identity(vendor: *mut u8, cpuid_7_ecx: *mut u32);
    fn amd_sld_preempt_disable();
    fn amd_sld_preempt_enable();
}

/// Whether the kernel we are built for arms AMD bus-lock detection itself (6.13+): Kbuild
/// sets the cfg where the kernel's asm/cpu.h declares `bus_lock_init()`.
pub(crate) const KERNEL_ARMS_AMD_BUS_LOCK: bool = cfg!(amd_sld_kernel_arms_amd_bus_lock);

/// Whether the kernel we are built for has a KVM that keeps the host's DEBUGCTL out of its
/// guests on AMD: SVM loads the guest's DEBUGCTL before VMRUN and the host's after #VMEXIT
/// (433265870ab3, the host value snapshotted with IRQs off per entry, 189ecdb3e112). Kbuild
/// sets the cfg from the kernel version (6.12.19 and later 6.12, 6.14 and later): the fix
/// lives in arch/x86/kvm/svm/svm.c, which no headers package ships, and the headers that
/// are shipped cannot tell (Debian's 6.1.192 has the x86.c half, `host_debugctl` and
/// `KVM_RUN_LOAD_DEBUGCTL` in asm/kvm_host.h, but not the SVM half).
pub(crate) const KVM_KEEPS_HOST_DEBUGCTL_OUT_OF_GUESTS: bool =
    cfg!(amd_sld_kvm_keeps_host_debugctl_out_of_guests);

/// The boot CPU's vendor and its `CPUID_7_ECX` capability word, as the kernel recorded them.
pub(crate) fn boot_cpu_identity() -> (u8, u32) {
    let (mut vendor, mut word) = (0, 0);
    // SAFETY: glue.c reads `boot_cpu_data`, written during early boot and only read
    // afterwards, into the two locals. (In C: bindgen's view of `struct cpuinfo_x86` moves
    // its fields between anonymous unions from one kernel to the next.)
    unsafe { amd_sld_boot_cpu_identity(&mut vendor, &mut word) };
    (vendor, word)
}

/// The CPU this code runs on. Only meaningful where the caller cannot migrate (the #DB
/// notifier and the PMU overflow handler run with interrupts off).
pub(crate) fn this_cpu() -> u32 {
    // SAFETY: reading the per-CPU CPU number has no preconditions.
    unsafe { amd_sld_this_cpu() }
}

/// Runs `work` on this CPU without being preempted: a per-CPU structure that its own CPU's
/// interrupt and NMI handlers read under a sequence word must not be left half written
/// while its writer sleeps on a run queue (those readers would miss until it ran again).
pub(crate) fn without_preemption<R>(work: impl FnOnce() -> R) -> R {
    // SAFETY: balanced by the enable below; `work` cannot sleep (it is a closure the caller
    // keeps to plain stores), and a panic aborts in the kernel, so no unwind skips it.
    unsafe { amd_sld_preempt_disable() };
    let result = work();
    // SAFETY: pairs with the disable above, on the same CPU (no migration in between).
    unsafe { amd_sld_preempt_enable() };
    result
}

/// Upper bound (exclusive) of CPU numbers on this boot.
pub(crate) fn nr_cpu_ids() -> u32 {
    // SAFETY: `nr_cpu_ids` is set during early boot and only read afterwards.
    unsafe { bindings::nr_cpu_ids }
}

/// Holds the CPU hotplug lock for reading: no CPU comes or goes while it lives.
///
/// # Invariants
///
/// `cpus_read_lock()` is held from `lock()` until drop.
pub(crate) struct CpusReadLocked(());

impl CpusReadLocked {
    /// Takes the CPU hotplug lock for reading; may sleep.
    pub(crate) fn lock() -> Self {
        // SAFETY: process context, which every caller (parameter store, init, exit) is.
        unsafe { bindings::cpus_read_lock() };
        CpusReadLocked(())
    }

    /// The online CPUs, which cannot change while the lock is held.
    pub(crate) fn online(&self) -> impl Iterator<Item = u32> + '_ {
        (0..nr_cpu_ids()).filter(|&cpu| cpu_is_online(cpu))
    }
}

impl Drop for CpusReadLocked {
    fn drop(&mut self) {
        // SAFETY: by the type invariant, we hold the lock.
        unsafe { bindings::cpus_read_unlock() };
    }
}

fn cpu_is_online(cpu: u32) -> bool {
    let bits = c_ulong::BITS;
    let word = (cpu / bits) as usize;
    // SAFETY: `__cpu_online_mask` is a static bitmap of `NR_CPUS` bits and `cpu` is below
    // `nr_cpu_ids <= NR_CPUS`; a racy read is what `cpu_online()` does too.
    let value =
        unsafe { ptr::read_volatile(ptr::addr_of!(bindings::__cpu_online_mask.bits[word])) };
    value & (1 << (cpu % bits)) != 0
}
