// SPDX-License-Identifier: GPL-2.0

//! The hardware edge: what the CPU says it has, DEBUGCTL, and the PMU event.

use core::sync::atomic::{AtomicBool, Ordering};

use kernel::error::Result;

use crate::capability::Facts;
use crate::ffi::{CounterSpec, MsrUpdate};
use crate::x86;

/// The module KVM on AMD runs guests with, as the kernel names it.
pub(crate) const KVM_AMD: &core::ffi::CStr = c"kvm_amd";

/// `kvm_amd` is loaded (or loading, or built in), as far as amd_sld has seen: looked up
/// at load, then followed on the module notifier chain. Kept only where this kernel's KVM
/// runs guests with the host's DEBUGCTL; elsewhere it does not matter and stays false.
static KVM_AMD_LOADED: AtomicBool = AtomicBool::new(false);

/// Notes what the look-up at load found. Or'ed in: a COMING seen on the chain meanwhile
/// stands (a stale look-up can only err towards "loaded", the safe side).
pub(crate) fn note_kvm_amd_found(found: bool) {
    KVM_AMD_LOADED.fetch_or(found, Ordering::AcqRel);
}

/// Whether `kvm_amd` is loaded, as far as amd_sld has seen.
pub(crate) fn kvm_amd_loaded() -> bool {
    KVM_AMD_LOADED.load(Ordering::Acquire)
}

/// Notes that `kvm_amd` came (its COMING was let pass) or went.
pub(crate) fn set_kvm_amd_loaded(loaded: bool) {
    KVM_AMD_LOADED.store(loaded, Ordering::Release);
}

/// What amd_sld needs to know about the machine before touching it.
pub(crate) fn facts() -> Facts {
    let (vendor, cpuid_7_ecx) = crate::ffi::boot_cpu_identity();
    Facts {
        amd: vendor == x86::VENDOR_AMD,
        bus_lock_detect: x86::has_bus_lock_detect(cpuid_7_ecx),
        kernel_arms_amd_bus_lock: crate::ffi::KERNEL_ARMS_AMD_BUS_LOCK,
        kvm_keeps_host_debugctl_out_of_guests: crate::ffi::KVM_KEEPS_HOST_DEBUGCTL_OUT_OF_GUESTS,
        kvm_amd_loaded: kvm_amd_loaded(),
    }
}

/// Read-modify-write of DEBUGCTL on `cpu`, with the value read back.
pub(crate) fn update_debugctl(cpu: u32, update: fn(u64) -> u64) -> Result<MsrUpdate> {
    crate::ffi::msr_update_on(cpu, x86::MSR_DEBUGCTL, update)
}

/// What the PMU source counts: `ls_locks.bus_lock`.
pub(crate) fn pmu_counter_spec() -> CounterSpec {
    CounterSpec {
        raw_config: crate::pmu::BUS_LOCK_CONFIG,
        sample_freq: crate::pmu::SAMPLE_FREQ_HZ,
    }
}
