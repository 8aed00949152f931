//! Whether amd_sld may take charge of bus-lock detection on this machine, and why not.

use core::fmt;

/// What the module learns about the machine before it touches any MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The boot CPU's vendor is AMD.
    pub amd: bool,
    /// CPUID 0x7 ECX[24], Bus Lock Detect, as the kernel recorded it at boot.
    pub bus_lock_detect: bool,
    /// The running kernel arms bus-lock detection on AMD itself (Linux 6.13 and later).
    pub kernel_arms_amd_bus_lock: bool,
}

/// Why amd_sld refuses to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an AMD CPU.
    NotAmd,
    /// An AMD CPU without the Bus Lock Detect trap (Zen 4 and older, or a VM that hides it).
    NoBusLockDetect,
    /// The kernel already supports bus-lock detection on AMD.
    KernelHandlesIt,
    /// DEBUGCTL[2] was already set on a CPU when amd_sld loaded: someone else arms it.
    AlreadyArmed {
        /// The first CPU found armed.
        cpu: u32,
    },
}

impl Refusal {
    /// Whether this refusal is the machine lacking the feature (`-ENODEV`), as opposed to
    /// another agent owning it (`-EBUSY`).
    pub const fn is_missing_feature(self) -> bool {
        matches!(self, Refusal::NotAmd | Refusal::NoBusLockDetect)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotAmd => f.write_str(
                "not an AMD CPU: on Intel, the kernel's own split_lock_detect= boot option \
                 already does this",
            ),
            Refusal::NoBusLockDetect => f.write_str(
                "this AMD CPU has no Bus Lock Detect (CPUID 0x7 ECX[24] is clear; Zen 5 and \
                 later have it); Zen 2/3/4 hosts and KVM guests need the PMU mode, source=pmu",
            ),
            Refusal::KernelHandlesIt => f.write_str(
                "this kernel (6.13 or later) arms AMD bus-lock detection itself: use the \
                 split_lock_detect= boot option instead",
            ),
            Refusal::AlreadyArmed { cpu } => write!(
                f,
                "DEBUGCTL bit 2 is already set on CPU {cpu}: the kernel or another module \
                 arms bus-lock detection; refusing to fight it"
            ),
        }
    }
}

/// Decides from the machine's [`Facts`] whether amd_sld may arm Bus Lock Detect.
pub fn check(facts: &Facts) -> Result<(), Refusal> {
    if !facts.amd {
        Err(Refusal::NotAmd)
    } else if facts.kernel_arms_amd_bus_lock {
        Err(Refusal::KernelHandlesIt)
    } else if !facts.bus_lock_detect {
        Err(Refusal::NoBusLockDetect)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZEN5_ON_612: Facts = Facts {
        amd: true,
        bus_lock_detect: true,
        kernel_arms_amd_bus_lock: false,
    };

    #[test]
    fn zen5_on_612_is_accepted() {
        assert_eq!(check(&ZEN5_ON_612), Ok(()));
    }

    #[test]
    fn each_missing_fact_has_its_own_refusal() {
        let intel = Facts {
            amd: false,
            ..ZEN5_ON_612
        };
        assert_eq!(check(&intel), Err(Refusal::NotAmd));
        let zen4 = Facts {
            bus_lock_detect: false,
            ..ZEN5_ON_612
        };
        assert_eq!(check(&zen4), Err(Refusal::NoBusLockDetect));
        let new_kernel = Facts {
            kernel_arms_amd_bus_lock: true,
            ..ZEN5_ON_612
        };
        assert_eq!(check(&new_kernel), Err(Refusal::KernelHandlesIt));
        // A new kernel on Zen 4 still says the kernel handles it: upgrading the CPU would
        // not make amd_sld useful there.
        let both = Facts {
            bus_lock_detect: false,
            ..new_kernel
        };
        assert_eq!(check(&both), Err(Refusal::KernelHandlesIt));
    }

    #[test]
    fn errno_classes() {
        assert!(Refusal::NotAmd.is_missing_feature());
        assert!(Refusal::NoBusLockDetect.is_missing_feature());
        assert!(!Refusal::KernelHandlesIt.is_missing_feature());
        assert!(!Refusal::AlreadyArmed { cpu: 3 }.is_missing_feature());
    }
}
