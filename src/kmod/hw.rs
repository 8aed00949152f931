// SPDX-License-Identifier: GPL-2.0

//! The hardware edge: what the CPU says it has, DEBUGCTL, and the PMU event.

use kernel::error::Result;

use crate::capability::Facts;
use crate::ffi::{CounterSpec, MsrUpdate};
use crate::x86;

/// What amd_sld needs to know about the machine before touching it.
pub(crate) fn facts() -> Facts {
    let (vendor, cpuid_7_ecx) = crate::ffi::boot_cpu_identity();
    Facts {
        amd: vendor == x86::VENDOR_AMD,
        bus_lock_detect: x86::has_bus_lock_detect(cpuid_7_ecx),
        kernel_arms_amd_bus_lock: crate::ffi::KERNEL_ARMS_AMD_BUS_LOCK,
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
