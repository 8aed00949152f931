//! Whether amd_sld may take charge of bus-lock detection on this machine, and why not.

use core::fmt;

/// The detectors in effect, as `/sys/kernel/amd_sld/source` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InEffect {
    /// The Bus Lock Detect trap alone: `bld`.
    Bld,
    /// PMU counters of every mode, host and guest: `pmu`.
    Pmu,
    /// The trap for the host's tasks and, beside it on every CPU, PMU counters of guest mode
    /// only (`perf_event_attr.exclude_host`, AMD's GuestOnly bit), so that each bus lock is
    /// counted by exactly one of them: `bld+pmu(guest)`.
    BldAndGuestPmu,
}

impl InEffect {
    /// The word of the `source` file and of the log.
    pub const fn as_str(self) -> &'static str {
        match self {
            InEffect::Bld => "bld",
            InEffect::Pmu => "pmu",
            InEffect::BldAndGuestPmu => "bld+pmu(guest)",
        }
    }

    /// Parses [`InEffect::as_str`]; one trailing newline is ignored, as sysfs has it.
    pub fn parse(input: &str) -> Option<InEffect> {
        match input.strip_suffix('\n').unwrap_or(input) {
            "bld" => Some(InEffect::Bld),
            "pmu" => Some(InEffect::Pmu),
            "bld+pmu(guest)" => Some(InEffect::BldAndGuestPmu),
            _ => None,
        }
    }

    /// Whether the trap is armed for host tasks.
    pub const fn traps(self) -> bool {
        matches!(self, InEffect::Bld | InEffect::BldAndGuestPmu)
    }

    /// Whether PMU counters run, and so count into `bus_locks`.
    pub const fn counts_with_pmu(self) -> bool {
        matches!(self, InEffect::Pmu | InEffect::BldAndGuestPmu)
    }

    /// Whether the PMU counters count guest mode only (the trap has the host).
    pub const fn guest_only_counters(self) -> bool {
        matches!(self, InEffect::BldAndGuestPmu)
    }

    /// What remains when the guest-only counters cannot start: the trap alone.
    pub const fn without_guest_pmu(self) -> InEffect {
        match self {
            InEffect::BldAndGuestPmu => InEffect::Bld,
            other => other,
        }
    }

    /// Packs the value into a byte for an atomic.
    pub const fn to_bits(self) -> u8 {
        match self {
            InEffect::Bld => 0,
            InEffect::Pmu => 1,
            InEffect::BldAndGuestPmu => 2,
        }
    }

    /// Unpacks [`InEffect::to_bits`]; `None` for a byte it never produces.
    pub const fn from_bits(bits: u8) -> Option<InEffect> {
        match bits {
            0 => Some(InEffect::Bld),
            1 => Some(InEffect::Pmu),
            2 => Some(InEffect::BldAndGuestPmu),
            _ => None,
        }
    }
}

impl fmt::Display for InEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `EOPNOTSUPP`: perf's answer to a counter of guest mode while VMs with a mediated vPMU
/// exist (Linux 7.0+).
pub const EOPNOTSUPP: i32 = 95;

/// What to do when a CPU's guest-only counter cannot start beside the trap
/// ([`InEffect::BldAndGuestPmu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestCounterFallback {
    /// Keep the trap and the other CPUs' counters; this CPU's guest mode goes uncounted
    /// (`guest_uncounted_cpus`).
    ThisCpuUncounted,
    /// Release every guest-only counter and run the trap alone: guests are not covered.
    TrapAlone,
}

/// Decides [`GuestCounterFallback`] from perf's error (a negative errno) and whether the
/// CPU is coming online by itself while running (a hotplug), as opposed to every CPU being
/// armed (load, a source or policy change). A mediated vPMU's refusal is per CPU and of the
/// moment; a lone CPU coming online must not take the others' counters down; otherwise the
/// PMU is not there for amd_sld (no core PMU, counters taken) and the trap goes alone.
pub const fn guest_counter_fallback(errno: i32, lone_cpu_online: bool) -> GuestCounterFallback {
    if errno == -EOPNOTSUPP || lone_cpu_online {
        GuestCounterFallback::ThisCpuUncounted
    } else {
        GuestCounterFallback::TrapAlone
    }
}

/// What the module learns about the machine before it touches any MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The boot CPU's vendor is AMD.
    pub amd: bool,
    /// CPUID 0x7 ECX[24], Bus Lock Detect, as the kernel recorded it at boot.
    pub bus_lock_detect: bool,
    /// The running kernel arms bus-lock detection on AMD itself (Linux 6.13 and later).
    pub kernel_arms_amd_bus_lock: bool,
    /// The running kernel's KVM keeps the host's DEBUGCTL out of its guests: SVM loads the
    /// guest's DEBUGCTL before VMRUN and the host's after #VMEXIT (433265870ab3, with the
    /// host value snapshotted with IRQs off, 189ecdb3e112; both in 6.12.19 and mainline
    /// 6.14). Without it a guest runs with the host's DEBUGCTL, so a host-armed bit 2 (Bus
    /// Lock Detect) raises #DB inside guests that never asked for it.
    pub kvm_keeps_host_debugctl_out_of_guests: bool,
    /// `kvm_amd` is loaded, loading or built in: guests can run.
    pub kvm_amd_loaded: bool,
}

impl Facts {
    /// Whether arming the trap now would arm it inside KVM guests too: `kvm_amd` is there
    /// and this kernel's KVM runs guests with the host's DEBUGCTL.
    pub const fn guests_would_run_under_trap(&self) -> bool {
        self.kvm_amd_loaded && !self.kvm_keeps_host_debugctl_out_of_guests
    }
}

/// The detector asked for with the `source` parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Requested {
    /// The Bus Lock Detect trap where the CPU has it (and the kernel leaves it to us), with
    /// guest-only PMU counters beside it for KVM guests; else the PMU.
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
    /// `source=bld` while `kvm_amd` is loaded on a kernel whose KVM runs guests with the
    /// host's DEBUGCTL: the trap would fire inside guests.
    KvmGuestsUnderTrap,
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
        /// Why the PMU was the source to start: asked for, or why `auto` did not take the trap.
        why: Why,
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
            Refusal::KvmGuestsUnderTrap => f.write_str(
                "kvm_amd is loaded and this kernel's KVM runs guests with the \
                 host's DEBUGCTL (fixed in 6.12.19 by 433265870ab3), so Bus Lock Detect would \
                 raise #DB inside guests; use source=pmu or auto, or unload kvm_amd first",
            ),
            Refusal::AlreadyArmed { cpu } => write!(
                f,
                "DEBUGCTL bit 2 is already set on CPU {cpu}: the kernel or another module \
                 arms bus-lock detection; refusing to fight it"
            ),
            Refusal::PmuUnavailable { errno, why } => {
                match why {
                    Why::Requested => f.write_str("source=pmu: ")?,
                    _ => write!(f, "{why} and ")?,
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

/// Why [`decide`] chose the source it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// That source was asked for (`source=bld` or `source=pmu`).
    Requested,
    /// `auto`: the CPU has the trap and it is amd_sld's to arm.
    TrapAvailable,
    /// `auto`: the CPU has no Bus Lock Detect.
    NoTrap,
    /// `auto`: the kernel arms Bus Lock Detect itself.
    KernelArmsTrap,
    /// `auto`: `kvm_amd` is loaded on a kernel whose KVM would run its guests under the
    /// armed trap ([`Facts::guests_would_run_under_trap`]).
    KvmGuestsUnderTrap,
}

impl fmt::Display for Why {
    /// One clause, no newline: it completes a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::Requested => "asked for with the source parameter",
            Why::TrapAvailable => {
                "this CPU has Bus Lock Detect and the kernel leaves it to amd_sld"
            }
            Why::NoTrap => "this AMD CPU has no Bus Lock Detect (CPUID 0x7 ECX[24] is clear)",
            Why::KernelArmsTrap => "this kernel (6.13 or later) arms AMD bus-lock detection itself",
            Why::KvmGuestsUnderTrap => {
                "kvm_amd is loaded and this kernel's KVM runs guests with the host's DEBUGCTL \
                 (fixed in 6.12.19 by 433265870ab3), so Bus Lock Detect would raise #DB inside \
                 guests"
            }
        })
    }
}

/// The source [`decide`] chose, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The detectors to run.
    pub source: InEffect,
    /// Why that one.
    pub why: Why,
}

/// Decides from the machine's [`Facts`] which source serves `requested`: the trap, the PMU
/// (whose availability only creating the counters can tell), or a refusal.
pub fn decide(facts: &Facts, requested: Requested) -> Result<Decision, Refusal> {
    let decision = |source, why| Ok(Decision { source, why });
    if !facts.amd {
        return Err(Refusal::NotAmd);
    }
    match requested {
        Requested::Bld if facts.kernel_arms_amd_bus_lock => Err(Refusal::KernelHandlesIt),
        Requested::Bld if !facts.bus_lock_detect => Err(Refusal::NoBusLockDetect),
        Requested::Bld if facts.guests_would_run_under_trap() => Err(Refusal::KvmGuestsUnderTrap),
        Requested::Bld => decision(InEffect::Bld, Why::Requested),
        Requested::Pmu => decision(InEffect::Pmu, Why::Requested),
        Requested::Auto if facts.kernel_arms_amd_bus_lock => {
            decision(InEffect::Pmu, Why::KernelArmsTrap)
        }
        Requested::Auto if !facts.bus_lock_detect => decision(InEffect::Pmu, Why::NoTrap),
        Requested::Auto if facts.guests_would_run_under_trap() => {
            decision(InEffect::Pmu, Why::KvmGuestsUnderTrap)
        }
        // The trap cannot see guest mode (KVM swaps DEBUGCTL around VMRUN, or, on a kernel
        // whose KVM does not, kvm_amd is not loaded and no guest runs), and a guest-only
        // counter cannot see host mode: both at once count every bus lock once.
        Requested::Auto => decision(InEffect::BldAndGuestPmu, Why::TrapAvailable),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::ToString;

    const ZEN5_ON_612: Facts = Facts {
        amd: true,
        bus_lock_detect: true,
        kernel_arms_amd_bus_lock: false,
        kvm_keeps_host_debugctl_out_of_guests: true,
        kvm_amd_loaded: false,
    };
    const ZEN4_ON_612: Facts = Facts {
        bus_lock_detect: false,
        ..ZEN5_ON_612
    };
    const ZEN5_ON_613: Facts = Facts {
        kernel_arms_amd_bus_lock: true,
        ..ZEN5_ON_612
    };
    /// Zen 5 on Debian's 5.10.262 or 6.1.192: KVM runs guests with the host's DEBUGCTL.
    const ZEN5_ON_61: Facts = Facts {
        kvm_keeps_host_debugctl_out_of_guests: false,
        ..ZEN5_ON_612
    };
    const ZEN5_ON_61_WITH_KVM: Facts = Facts {
        kvm_amd_loaded: true,
        ..ZEN5_ON_61
    };

    fn source(facts: &Facts, requested: Requested) -> Result<InEffect, Refusal> {
        decide(facts, requested).map(|decision| decision.source)
    }

    #[test]
    fn auto_takes_the_trap_where_it_is_ours_and_the_pmu_elsewhere() {
        assert_eq!(
            decide(&ZEN5_ON_612, Requested::Auto),
            Ok(Decision {
                source: InEffect::BldAndGuestPmu,
                why: Why::TrapAvailable
            })
        );
        assert_eq!(
            decide(&ZEN4_ON_612, Requested::Auto),
            Ok(Decision {
                source: InEffect::Pmu,
                why: Why::NoTrap
            })
        );
        assert_eq!(
            decide(&ZEN5_ON_613, Requested::Auto),
            Ok(Decision {
                source: InEffect::Pmu,
                why: Why::KernelArmsTrap
            })
        );
    }

    #[test]
    fn explicit_requests_are_honoured_or_refused_with_the_reason() {
        assert_eq!(
            decide(&ZEN5_ON_612, Requested::Pmu),
            Ok(Decision {
                source: InEffect::Pmu,
                why: Why::Requested
            })
        );
        assert_eq!(source(&ZEN5_ON_612, Requested::Bld), Ok(InEffect::Bld));
        assert_eq!(
            source(&ZEN4_ON_612, Requested::Bld),
            Err(Refusal::NoBusLockDetect)
        );
        assert_eq!(
            source(&ZEN5_ON_613, Requested::Bld),
            Err(Refusal::KernelHandlesIt)
        );
        // A new kernel on Zen 4 still says the kernel handles the trap: upgrading the CPU
        // would not make the trap source usable there.
        let both = Facts {
            bus_lock_detect: false,
            ..ZEN5_ON_613
        };
        assert_eq!(source(&both, Requested::Bld), Err(Refusal::KernelHandlesIt));
        let intel = Facts {
            amd: false,
            ..ZEN5_ON_612
        };
        for requested in [Requested::Auto, Requested::Bld, Requested::Pmu] {
            assert_eq!(source(&intel, requested), Err(Refusal::NotAmd));
        }
    }

    #[test]
    fn kvm_on_an_unsafe_kernel_keeps_the_trap_away_from_guests() {
        // No kvm_amd: the trap, as on a fixed kernel.
        assert_eq!(
            source(&ZEN5_ON_61, Requested::Auto),
            Ok(InEffect::BldAndGuestPmu)
        );
        assert_eq!(source(&ZEN5_ON_61, Requested::Bld), Ok(InEffect::Bld));
        // kvm_amd loaded: auto takes the PMU and says why; bld is refused.
        assert_eq!(
            decide(&ZEN5_ON_61_WITH_KVM, Requested::Auto),
            Ok(Decision {
                source: InEffect::Pmu,
                why: Why::KvmGuestsUnderTrap
            })
        );
        assert_eq!(
            decide(&ZEN5_ON_61_WITH_KVM, Requested::Bld),
            Err(Refusal::KvmGuestsUnderTrap)
        );
        assert_eq!(
            source(&ZEN5_ON_61_WITH_KVM, Requested::Pmu),
            Ok(InEffect::Pmu)
        );
        // A fixed kernel with kvm_amd loaded: the trap, guests do not see it.
        let safe_with_kvm = Facts {
            kvm_amd_loaded: true,
            ..ZEN5_ON_612
        };
        assert!(!safe_with_kvm.guests_would_run_under_trap());
        assert_eq!(
            source(&safe_with_kvm, Requested::Auto),
            Ok(InEffect::BldAndGuestPmu)
        );
        assert_eq!(source(&safe_with_kvm, Requested::Bld), Ok(InEffect::Bld));
        // The more fundamental refusals come first.
        let zen4_with_kvm = Facts {
            bus_lock_detect: false,
            ..ZEN5_ON_61_WITH_KVM
        };
        assert_eq!(
            source(&zen4_with_kvm, Requested::Bld),
            Err(Refusal::NoBusLockDetect)
        );
        assert_eq!(
            decide(&zen4_with_kvm, Requested::Auto).map(|d| d.why),
            Ok(Why::NoTrap)
        );
    }

    /// Every combination of facts and request, against the rule written out case by case.
    #[test]
    fn every_combination() {
        for bits in 0u32..32 {
            let facts = Facts {
                amd: bits & 1 != 0,
                bus_lock_detect: bits & 2 != 0,
                kernel_arms_amd_bus_lock: bits & 4 != 0,
                kvm_keeps_host_debugctl_out_of_guests: bits & 8 != 0,
                kvm_amd_loaded: bits & 16 != 0,
            };
            let unsafe_kvm = facts.kvm_amd_loaded && !facts.kvm_keeps_host_debugctl_out_of_guests;
            assert_eq!(facts.guests_would_run_under_trap(), unsafe_kvm);
            let trap_ours = facts.bus_lock_detect && !facts.kernel_arms_amd_bus_lock;
            for requested in [Requested::Auto, Requested::Bld, Requested::Pmu] {
                let got = decide(&facts, requested);
                if !facts.amd {
                    assert_eq!(got, Err(Refusal::NotAmd), "{facts:?} {requested}");
                    continue;
                }
                match (requested, got) {
                    (Requested::Pmu, Ok(d)) => assert_eq!(d.source, InEffect::Pmu),
                    (Requested::Bld, Ok(d)) => {
                        assert!(trap_ours && !unsafe_kvm && d.source == InEffect::Bld)
                    }
                    (Requested::Bld, Err(Refusal::KvmGuestsUnderTrap)) => {
                        assert!(trap_ours && unsafe_kvm)
                    }
                    (Requested::Bld, Err(Refusal::KernelHandlesIt)) => {
                        assert!(facts.kernel_arms_amd_bus_lock)
                    }
                    (Requested::Bld, Err(Refusal::NoBusLockDetect)) => {
                        assert!(!facts.bus_lock_detect && !facts.kernel_arms_amd_bus_lock)
                    }
                    (Requested::Auto, Ok(d)) => {
                        // The trap exactly where it is ours and no guest would run under it.
                        assert_eq!(
                            d.source == InEffect::BldAndGuestPmu,
                            trap_ours && !unsafe_kvm
                        );
                        assert_eq!(
                            d.why == Why::KvmGuestsUnderTrap,
                            trap_ours && unsafe_kvm,
                            "{facts:?}"
                        );
                    }
                    (requested, got) => panic!("{facts:?} {requested}: {got:?}"),
                }
            }
        }
    }

    #[test]
    fn reasons_fit_on_one_line() {
        for why in [
            Why::Requested,
            Why::TrapAvailable,
            Why::NoTrap,
            Why::KernelArmsTrap,
            Why::KvmGuestsUnderTrap,
        ] {
            let text = why.to_string();
            assert!(!text.contains('\n') && text.len() < 200, "{text}");
        }
        let refusal = Refusal::KvmGuestsUnderTrap.to_string();
        assert!(!refusal.contains('\n'));
        assert!(refusal.contains("source=pmu"));
        // The texts selftests match.
        assert_eq!(
            Refusal::PmuUnavailable {
                errno: -2,
                why: Why::NoTrap
            }
            .to_string(),
            "this AMD CPU has no Bus Lock Detect (CPUID 0x7 ECX[24] is clear) and the PMU \
             cannot count ls_locks.bus_lock here (error -2; QEMU TCG and most VMs expose no \
             core PMU)"
        );
        assert!(Refusal::PmuUnavailable {
            errno: -2,
            why: Why::Requested
        }
        .to_string()
        .starts_with("source=pmu: the PMU cannot count ls_locks.bus_lock here"));
        assert!(Refusal::PmuUnavailable {
            errno: -19,
            why: Why::KvmGuestsUnderTrap
        }
        .to_string()
        .starts_with("kvm_amd is loaded"));
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
    fn in_effect_names_which_detector_sees_what() {
        for (value, word, traps, counts, guest_only) in [
            (InEffect::Bld, "bld", true, false, false),
            (InEffect::Pmu, "pmu", false, true, false),
            (InEffect::BldAndGuestPmu, "bld+pmu(guest)", true, true, true),
        ] {
            assert_eq!(value.as_str(), word);
            assert_eq!(value.to_string(), word);
            assert_eq!(InEffect::parse(word), Some(value));
            assert_eq!(InEffect::parse(&std::format!("{word}\n")), Some(value));
            assert_eq!(InEffect::from_bits(value.to_bits()), Some(value));
            assert_eq!(value.traps(), traps);
            assert_eq!(value.counts_with_pmu(), counts);
            assert_eq!(value.guest_only_counters(), guest_only);
            // Never the guest-only counters without the trap that has the host.
            assert!(!value.guest_only_counters() || value.traps());
        }
        assert_eq!(InEffect::BldAndGuestPmu.without_guest_pmu(), InEffect::Bld);
        assert_eq!(InEffect::Pmu.without_guest_pmu(), InEffect::Pmu);
        assert_eq!(InEffect::Bld.without_guest_pmu(), InEffect::Bld);
        assert_eq!(InEffect::from_bits(3), None);
        for bad in ["", "bld+pmu", "BLD", "pmu(guest)", "bld+pmu(guest)\n\n"] {
            assert_eq!(InEffect::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn auto_never_counts_a_bus_lock_twice() {
        // Wherever auto arms the trap, any counter beside it counts guest mode only; where it
        // counts every mode, the trap is not armed.
        for bits in 0u32..32 {
            let facts = Facts {
                amd: true,
                bus_lock_detect: bits & 2 != 0,
                kernel_arms_amd_bus_lock: bits & 4 != 0,
                kvm_keeps_host_debugctl_out_of_guests: bits & 8 != 0,
                kvm_amd_loaded: bits & 16 != 0,
            };
            let d = decide(&facts, Requested::Auto).unwrap();
            assert!(
                !(d.source.traps() && d.source.counts_with_pmu()) || d.source.guest_only_counters()
            );
            // The PMU is never left out of auto where the trap is not taken.
            assert!(d.source.counts_with_pmu(), "{facts:?}");
        }
    }

    #[test]
    fn a_guest_counter_that_cannot_start() {
        use GuestCounterFallback::*;
        // No PMU (ENOENT, ENODEV) or counters taken (EBUSY), every CPU armed: the trap alone.
        for errno in [-2, -19, -16, -22] {
            assert_eq!(guest_counter_fallback(errno, false), TrapAlone);
            // A lone CPU coming online keeps the others' counters.
            assert_eq!(guest_counter_fallback(errno, true), ThisCpuUncounted);
        }
        // A mediated vPMU refuses guest-mode counters for now: that CPU goes uncounted.
        assert_eq!(guest_counter_fallback(-EOPNOTSUPP, false), ThisCpuUncounted);
        assert_eq!(guest_counter_fallback(-EOPNOTSUPP, true), ThisCpuUncounted);
    }

    #[test]
    fn errno_classes() {
        assert!(Refusal::NotAmd.is_missing_feature());
        assert!(Refusal::NoBusLockDetect.is_missing_feature());
        assert!(Refusal::PmuUnavailable {
            errno: -2,
            why: Why::NoTrap
        }
        .is_missing_feature());
        assert!(!Refusal::KernelHandlesIt.is_missing_feature());
        assert!(!Refusal::KvmGuestsUnderTrap.is_missing_feature());
        assert!(!Refusal::AlreadyArmed { cpu: 3 }.is_missing_feature());
    }
}
