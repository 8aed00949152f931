//! Whether this machine may be given real split locks: a pure decision on CPUID values.
//!
//! A split lock makes the CPU lock the memory bus and stalls every core of the physical
//! machine. That stays true inside a virtual machine: under KVM, Hyper-V or any cloud
//! hypervisor the guest's locked instruction runs on the host's CPU and stalls the host,
//! other tenants included. The one place where a split lock is harmless is QEMU's TCG
//! emulator, which emulates atomics in software. So real split locks need TCG, or an
//! operator who says, with `--allow-real-host`, that the machine is theirs alone.

use std::fmt;

/// CPUID leaf 1 ECX bit 31: "running under a hypervisor".
pub(crate) const CPUID_1_ECX_HYPERVISOR_BIT: u32 = 31;
/// The hypervisor leaf; EBX, ECX, EDX hold the hypervisor's 12-byte vendor signature.
pub(crate) const CPUID_HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// QEMU TCG's signature in the hypervisor leaf.
const TCG_SIGNATURE: &[u8; 12] = b"TCGTCGTCGTCG";

/// The CPUID registers the decision looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuidFacts {
    /// ECX of leaf 1.
    pub(crate) leaf_1_ecx: u32,
    /// EBX, ECX, EDX of [`CPUID_HYPERVISOR_LEAF`]; read only when the hypervisor bit is set,
    /// because on bare metal that leaf returns unrelated data.
    pub(crate) hypervisor_leaf: Option<[u32; 3]>,
}

/// Whether leaf 1 ECX says a hypervisor is present.
pub(crate) const fn hypervisor_present(leaf_1_ecx: u32) -> bool {
    leaf_1_ecx & (1 << CPUID_1_ECX_HYPERVISOR_BIT) != 0
}

impl CpuidFacts {
    /// The hypervisor's vendor signature, if there is a hypervisor.
    fn hypervisor_signature(&self) -> Option<[u8; 12]> {
        if !hypervisor_present(self.leaf_1_ecx) {
            return None;
        }
        let [ebx, ecx, edx] = self.hypervisor_leaf?;
        let mut signature = [0u8; 12];
        for (bytes, register) in signature.chunks_exact_mut(4).zip([ebx, ecx, edx]) {
            bytes.copy_from_slice(&register.to_le_bytes());
        }
        Some(signature)
    }
}

/// Why real split locks may run here. Only [`decide`] makes one, so holding a `Permit` is
/// proof that the decision was taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Permit {
    reason: PermitReason,
}

/// What allowed real split locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PermitReason {
    /// The CPU is QEMU's TCG emulator: nothing real is locked.
    QemuTcg,
    /// The operator passed `--allow-real-host`.
    OperatorAllowed,
}

impl Permit {
    pub(crate) fn reason(&self) -> PermitReason {
        self.reason
    }
}

/// Why real split locks are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No hypervisor: the split locks would stall this physical machine.
    BareMetal,
    /// A hypervisor other than TCG (its signature, printable): a guest's split locks stall
    /// the physical host underneath.
    VirtualMachine { signature: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refusing to generate real split locks: ")?;
        match self {
            Refusal::BareMetal => f.write_str(
                "this is not QEMU's TCG emulator but real hardware (CPUID reports no \
                 hypervisor). Each split lock locks the memory bus of this machine and stalls \
                 every core on it, including everyone else's work.",
            )?,
            Refusal::VirtualMachine { signature } => write!(
                f,
                "this is a virtual machine (hypervisor \"{signature}\"), not QEMU's TCG \
                 emulator. A guest's split lock runs on the physical CPU: it locks the bus of \
                 the physical host and stalls every core on it, other tenants' included. That \
                 is exactly the incident amd_sld exists to stop."
            )?,
        }
        f.write_str(
            "\nRun it in the project's test VM (QEMU TCG), or pass --allow-real-host on a \
             machine that is yours alone.",
        )
    }
}

/// The hypervisor signature for a message: NULs dropped, anything unprintable escaped.
fn printable(signature: &[u8; 12]) -> String {
    signature
        .iter()
        .filter(|&&byte| byte != 0)
        .map(|&byte| {
            if byte.is_ascii_graphic() || byte == b' ' {
                char::from(byte).to_string()
            } else {
                format!("\\x{byte:02x}")
            }
        })
        .collect()
}

/// Real split locks only under QEMU TCG (hypervisor bit set and the TCG signature), or when
/// the operator explicitly allows them.
pub(crate) fn decide(facts: &CpuidFacts, allow_real_host: bool) -> Result<Permit, Refusal> {
    let signature = facts.hypervisor_signature();
    if signature.as_ref() == Some(TCG_SIGNATURE) {
        return Ok(Permit {
            reason: PermitReason::QemuTcg,
        });
    }
    if allow_real_host {
        return Ok(Permit {
            reason: PermitReason::OperatorAllowed,
        });
    }
    Err(match signature {
        None => Refusal::BareMetal,
        Some(signature) => Refusal::VirtualMachine {
            signature: printable(&signature),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hypervisor leaf's registers for a 12-byte signature, as the CPU returns them.
    fn leaf(signature: &[u8; 12]) -> Option<[u32; 3]> {
        let word = |i: usize| u32::from_le_bytes(signature[i..i + 4].try_into().unwrap());
        Some([word(0), word(4), word(8)])
    }

    const HYPERVISOR: u32 = 1 << 31;
    /// Some other leaf 1 ECX bits (SSE3, SSSE3, SSE4.1/2, POPCNT), none of them bit 31.
    const OTHER_FEATURES: u32 = 0x0098_0201;

    #[test]
    fn qemu_tcg_is_allowed() {
        let tcg = CpuidFacts {
            leaf_1_ecx: HYPERVISOR | OTHER_FEATURES,
            hypervisor_leaf: leaf(b"TCGTCGTCGTCG"),
        };
        assert_eq!(decide(&tcg, false).unwrap().reason(), PermitReason::QemuTcg);
        assert_eq!(decide(&tcg, true).unwrap().reason(), PermitReason::QemuTcg);
    }

    #[test]
    fn bare_metal_is_refused_and_says_why() {
        let metal = CpuidFacts {
            leaf_1_ecx: OTHER_FEATURES,
            hypervisor_leaf: None,
        };
        let refusal = decide(&metal, false).unwrap_err();
        assert_eq!(refusal, Refusal::BareMetal);
        let message = refusal.to_string();
        assert!(message.contains("stalls every core"), "{message}");
        assert!(message.contains("--allow-real-host"), "{message}");
    }

    #[test]
    fn the_tcg_signature_without_the_hypervisor_bit_is_not_tcg() {
        // Bare metal returns unrelated data for leaf 0x40000000: it must not be trusted.
        let spoofed = CpuidFacts {
            leaf_1_ecx: OTHER_FEATURES,
            hypervisor_leaf: leaf(b"TCGTCGTCGTCG"),
        };
        assert_eq!(decide(&spoofed, false).unwrap_err(), Refusal::BareMetal);
    }

    #[test]
    fn kvm_and_cloud_guests_are_refused_too() {
        for (signature, shown) in [
            (b"KVMKVMKVM\0\0\0", "KVMKVMKVM"),
            (b"Microsoft Hv", "Microsoft Hv"),
            (b"VMwareVMware", "VMwareVMware"),
            (b"TCGTCGTCGTCX", "TCGTCGTCGTCX"),
            (b"\x01\x02TCGTCGTCGT", "\\x01\\x02TCGTCGTCGT"),
        ] {
            let guest = CpuidFacts {
                leaf_1_ecx: HYPERVISOR,
                hypervisor_leaf: leaf(signature),
            };
            let refusal = decide(&guest, false).unwrap_err();
            assert_eq!(
                refusal,
                Refusal::VirtualMachine {
                    signature: shown.to_owned()
                }
            );
            assert!(refusal.to_string().contains("physical host"));
        }
    }

    #[test]
    fn the_operator_may_allow_a_machine_of_their_own() {
        let metal = CpuidFacts {
            leaf_1_ecx: 0,
            hypervisor_leaf: None,
        };
        assert_eq!(
            decide(&metal, true).unwrap().reason(),
            PermitReason::OperatorAllowed
        );
    }
}
