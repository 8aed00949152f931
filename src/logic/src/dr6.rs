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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_clears_only_the_bus_lock_bit() {
        let mut dr6 = DR_BUS_LOCK | DR_STEP | DR_TRAP_BITS;
        assert!(take_bus_lock(&mut dr6));
        assert_eq!(dr6, DR_STEP | DR_TRAP_BITS);
        assert!(!take_bus_lock(&mut dr6));
        assert_eq!(dr6, DR_STEP | DR_TRAP_BITS);
    }
}
