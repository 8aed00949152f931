//! Decoding DR6 as the kernel's #DB handler hands it to die notifiers.
//!
//! `exc_debug()` reads DR6 through `debug_read_clear_dr6()`, which XORs it with
//! `DR6_RESERVED`: the active-low bus-lock bit 11 therefore arrives active-high, as
//! `DR_BUS_LOCK`. `exc_debug_user()` then passes a pointer to that value to the
//! `DIE_DEBUG` notifiers, and a notifier that clears a bit consumes that cause.

/// `DR_TRAP_BITS`: one bit per hardware breakpoint, DR0 to DR3.
pub const DR_TRAP_BITS: u64 = 0xf;
/// `DR_BUS_LOCK`, bit 11 after the kernel's polarity flip.
pub const DR_BUS_LOCK: u64 = 1 << 11;
/// `DR_STEP`: single-step (EFLAGS.TF) trap.
pub const DR_STEP: u64 = 1 << 14;

/// Consumes the bus-lock cause of a #DB: clears [`DR_BUS_LOCK`] and reports whether it was set.
///
/// Every other cause (single-step, breakpoints) is left for the kernel and the other
/// notifiers, so that debuggers behave exactly as without amd_sld.
pub fn take_bus_lock(dr6: &mut u64) -> bool {
    let was_set = *dr6 & DR_BUS_LOCK != 0;
    *dr6 &= !DR_BUS_LOCK;
    was_set
}

/// What the simulated hardware does with a single-step #DB taken by an opted-in process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simulated {
    /// Not a plain single-step: leave the exception alone.
    NotSimulated,
    /// The step stands for a bus lock on a CPU that is not armed: swallow it, no trap.
    Swallowed,
    /// The step stands for a bus lock on an armed CPU: it now reads as a bus-lock trap.
    BusLockTrap,
}

/// Rewrites a single-step DR6 into what Bus Lock Detect hardware would have reported.
///
/// Used only by the test build (SIM=1), whose test programs set EFLAGS.TF right before a
/// locked instruction: the step trap then arrives exactly where a bus-lock trap would,
/// after the instruction. A step combined with breakpoint hits is left alone.
pub fn simulate_bus_lock(dr6: &mut u64, cpu_armed: bool) -> Simulated {
    if *dr6 & DR_STEP == 0 || *dr6 & DR_TRAP_BITS != 0 {
        return Simulated::NotSimulated;
    }
    *dr6 &= !DR_STEP;
    if cpu_armed {
        *dr6 |= DR_BUS_LOCK;
        Simulated::BusLockTrap
    } else {
        Simulated::Swallowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_clears_only_the_bus_lock_bit() {
        let mut dr6 = DR_BUS_LOCK | DR_STEP | 0x1;
        assert!(take_bus_lock(&mut dr6));
        assert_eq!(dr6, DR_STEP | 0x1);
        assert!(!take_bus_lock(&mut dr6));
        assert_eq!(dr6, DR_STEP | 0x1);
    }

    #[test]
    fn simulation_turns_a_plain_step_into_a_trap_only_when_armed() {
        let mut dr6 = DR_STEP;
        assert_eq!(simulate_bus_lock(&mut dr6, true), Simulated::BusLockTrap);
        assert_eq!(dr6, DR_BUS_LOCK);
        let mut dr6 = DR_STEP;
        assert_eq!(simulate_bus_lock(&mut dr6, false), Simulated::Swallowed);
        assert_eq!(dr6, 0);
    }

    #[test]
    fn simulation_leaves_breakpoints_and_non_steps_alone() {
        for original in [0, DR_BUS_LOCK, DR_STEP | 0x2, 0x8] {
            let mut dr6 = original;
            assert_eq!(simulate_bus_lock(&mut dr6, true), Simulated::NotSimulated);
            assert_eq!(dr6, original);
        }
    }
}
