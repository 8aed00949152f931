//! Architectural numbers amd_sld depends on: the one place each is written down.
//!
//! Sources: arch/x86/include/asm/msr-index.h, arch/x86/include/asm/cpufeatures.h and
//! arch/x86/include/uapi/asm/debugreg.h in Linux 6.12; AMD64 APM vol. 2 for DEBUGCTL;
//! the AMD PPR for family 19h/1Ah for the `ls_locks.bus_lock` PMU event.

/// `MSR_IA32_DEBUGCTLMSR`: the debug-control MSR, architectural on AMD and Intel.
pub const MSR_DEBUGCTL: u32 = 0x1d9;

/// DEBUGCTL bit 2, `DEBUGCTLMSR_BUS_LOCK_DETECT`: raise a trap-like #DB after a user-mode bus lock.
pub const DEBUGCTL_BUS_LOCK_DETECT: u64 = 1 << 2;

/// Index of CPUID leaf 0x7 subleaf 0 ECX in `cpuinfo_x86::x86_capability` (`CPUID_7_ECX`).
pub const CAPABILITY_WORD_CPUID_7_ECX: usize = 16;

/// Bit of CPUID 0x7 ECX that enumerates Bus Lock Detect (`X86_FEATURE_BUS_LOCK_DETECT`).
pub const CPUID_7_ECX_BUS_LOCK_DETECT_BIT: u32 = 24;

/// `X86_VENDOR_AMD` in `cpuinfo_x86::x86_vendor`.
pub const VENDOR_AMD: u8 = 2;

/// Returns whether the Bus Lock Detect bit is set in a `CPUID_7_ECX` capability word.
pub const fn has_bus_lock_detect(cpuid_7_ecx: u32) -> bool {
    cpuid_7_ecx & (1 << CPUID_7_ECX_BUS_LOCK_DETECT_BIT) != 0
}
