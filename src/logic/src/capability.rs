//! Whether amd_sld may take charge of bus-lock detection on this machine, and why not.

use core::fmt;

use crate::record::Source;

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

/// The detector asked for with the `source` parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Requested {
    /// The Bus Lock Detect trap where the CPU has it (and the kernel leaves it to us), else
    /// the PMU.
    #[default]
    Auto,
    /// The trap only.
    Bld,
    /// The PMU event only.
    Pmu,
}

/// Why a `source` value was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadSource;

impl fmt::Display for BadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected auto, bld or pmu (lower case)")
    }
}

impl Requested {
    /// Parses a `source` parameter write; one trailing newline is ignored, as `echo` writes it.
    pub fn parse(input: &[u8]) -> Result<Requested, BadSource> {
        match input.strip_suffix(b"\n").unwrap_or(input) {
            b"auto" => Ok(Requested::Auto),
            b"bld" => Ok(Requested::Bld),
            b"pmu" => Ok(Requested::Pmu),
            _ => Err(BadSource),
        }
    }

    /// Packs the request into a byte for an atomic.
    pub const fn to_bits(self) -> u8 {
        match self {
            Requested::Auto => 0,
            Requested::Bld => 1,
            Requested::Pmu => 2,
        }
    }

    /// Unpacks [`Requested::to_bits`]; `None` for a byte it never produces.
    pub const fn from_bits(bits: u8) -> Option<Requested> {
        match bits {
            0 => Some(Requested::Auto),
            1 => Some(Requested::Bld),
            2 => Some(Requested::Pmu),
            _ => None,
        }
    }
}

impl fmt::Display for Requested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Requested::Auto => "auto",
            Requested::Bld => "bld",
            Requested::Pmu => "pmu",
        })
    }
}

/// Why amd_sld refuses to load, or to switch to a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an AMD CPU.
    NotAmd,
    /// `source=bld` on an AMD CPU without the Bus Lock Detect trap (Zen 4 and older, or a VM
    /// that hides it).
    NoBusLockDetect,
    /// `source=bld` on a kernel that supports bus-lock detection on AMD itself.
    KernelHandlesIt,
    /// DEBUGCTL[2] was already set on a CPU when amd_sld armed it: someone else arms it.
    AlreadyArmed {
        /// The first CPU found armed.
        cpu: u32,
    },
    /// The PMU cannot count `ls_locks.bus_lock` (no core PMU, as under QEMU TCG and in most
    /// VMs, or the counters are all taken).
    PmuUnavailable {
        /// What `perf_event_create_kernel_counter()` said, a negative errno.
        errno: i32,
        /// Whether the trap was not an option either (`source=auto` on a CPU without it).
        no_trap: bool,
    },
}

impl Refusal {
    /// Whether this refusal is the machine lacking the feature (`-ENODEV`), as opposed to
    /// another agent owning it (`-EBUSY`).
    pub const fn is_missing_feature(self) -> bool {
        matches!(
            self,
            Refusal::NotAmd | Refusal::NoBusLockDetect | Refusal::PmuUnavailable { .. }
        )
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
                 split_lock_detect= boot option for the trap (source=pmu still works here)",
            ),
            Refusal::AlreadyArmed { cpu } => write!(
                f,
                "DEBUGCTL bit 2 is already set on CPU {cpu}: the kernel or another module \
                 arms bus-lock detection; refusing to fight it"
            ),
            Refusal::PmuUnavailable { errno, no_trap } => {
                if *no_trap {
                    f.write_str(
                        "this AMD CPU has no Bus Lock Detect (CPUID 0x7 ECX[24] is clear) and ",
                    )?;
                } else {
                    f.write_str("source=pmu: ")?;
                }
                write!(
                    f,
                    "the PMU cannot count ls_locks.bus_lock here (error {errno}; QEMU TCG and \
                     most VMs expose no core PMU)"
                )
            }
        }
    }
}

/// Decides from the machine's [`Facts`] which source serves `requested`: the trap, the PMU
/// (whose availability only creating the counters can tell), or a refusal.
pub fn decide(facts: &Facts, requested: Requested) -> Result<Source, Refusal> {
    let trap_usable = facts.bus_lock_detect && !facts.kernel_arms_amd_bus_lock;
    if !facts.amd {
        Err(Refusal::NotAmd)
    } else {
        match requested {
            Requested::Bld if facts.kernel_arms_amd_bus_lock => Err(Refusal::KernelHandlesIt),
            Requested::Bld if !facts.bus_lock_detect => Err(Refusal::NoBusLockDetect),
            Requested::Bld => Ok(Source::Bld),
            Requested::Auto if trap_usable => Ok(Source::Bld),
            Requested::Auto | Requested::Pmu => Ok(Source::Pmu),
        }
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
    const ZEN4_ON_612: Facts = Facts {
        bus_lock_detect: false,
        ..ZEN5_ON_612
    };
    const ZEN5_ON_613: Facts = Facts {
        kernel_arms_amd_bus_lock: true,
        ..ZEN5_ON_612
    };

    #[test]
    fn auto_takes_the_trap_where_it_is_ours_and_the_pmu_elsewhere() {
        assert_eq!(decide(&ZEN5_ON_612, Requested::Auto), Ok(Source::Bld));
        assert_eq!(decide(&ZEN4_ON_612, Requested::Auto), Ok(Source::Pmu));
        assert_eq!(decide(&ZEN5_ON_613, Requested::Auto), Ok(Source::Pmu));
    }

    #[test]
    fn explicit_requests_are_honoured_or_refused_with_the_reason() {
        assert_eq!(decide(&ZEN5_ON_612, Requested::Pmu), Ok(Source::Pmu));
        assert_eq!(
            decide(&ZEN4_ON_612, Requested::Bld),
            Err(Refusal::NoBusLockDetect)
        );
        assert_eq!(
            decide(&ZEN5_ON_613, Requested::Bld),
            Err(Refusal::KernelHandlesIt)
        );
        // A new kernel on Zen 4 still says the kernel handles the trap: upgrading the CPU
        // would not make the trap source usable there.
        let both = Facts {
            bus_lock_detect: false,
            ..ZEN5_ON_613
        };
        assert_eq!(decide(&both, Requested::Bld), Err(Refusal::KernelHandlesIt));
        let intel = Facts {
            amd: false,
            ..ZEN5_ON_612
        };
        for requested in [Requested::Auto, Requested::Bld, Requested::Pmu] {
            assert_eq!(decide(&intel, requested), Err(Refusal::NotAmd));
        }
    }

    #[test]
    fn source_parameter_parses_like_the_policy() {
        for (text, want) in [
            (&b"auto"[..], Ok(Requested::Auto)),
            (b"bld\n", Ok(Requested::Bld)),
            (b"pmu", Ok(Requested::Pmu)),
            (b"PMU", Err(BadSource)),
            (b"", Err(BadSource)),
            (b"pmu\n\n", Err(BadSource)),
            (b"pm", Err(BadSource)),
        ] {
            assert_eq!(Requested::parse(text), want);
        }
        for requested in [Requested::Auto, Requested::Bld, Requested::Pmu] {
            assert_eq!(Requested::from_bits(requested.to_bits()), Some(requested));
        }
        assert_eq!(Requested::from_bits(3), None);
    }

    #[test]
    fn errno_classes() {
        assert!(Refusal::NotAmd.is_missing_feature());
        assert!(Refusal::NoBusLockDetect.is_missing_feature());
        assert!(Refusal::PmuUnavailable {
            errno: -2,
            no_trap: true
        }
        .is_missing_feature());
        assert!(!Refusal::KernelHandlesIt.is_missing_feature());
        assert!(!Refusal::AlreadyArmed { cpu: 3 }.is_missing_feature());
    }
}
