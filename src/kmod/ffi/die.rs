// SPDX-License-Identifier: GPL-2.0

//! The die notifier chain, for `DIE_DEBUG`: every #DB.

use kernel::bindings;
use kernel::error::Result;
use kernel::ffi::{c_char, c_int, c_long, c_ulong, c_void};

use super::notifier::NotifierSlot;

// Kernel interfaces that `kernel::bindings` does not carry in 6.12.
extern "C" {
    fn register_die_notifier(block: *mut bindings::notifier_block) -> c_int;
    fn unregister_die_notifier(block: *mut bindings::notifier_block) -> c_int;
    fn amd_sld_current_virtual_dr6() -> c_ulong;
}

/// `DIE_DEBUG` of `enum die_val` (asm/kdebug.h); checked in glue.c.
const DIE_DEBUG: c_ulong = 3;
/// `NOTIFY_DONE`: let the other die notifiers and the kernel see the exception too.
const NOTIFY_DONE: c_int = bindings::NOTIFY_DONE as c_int;
/// `NOTIFY_STOP`: the rest of the chain and `exc_debug_user()` after it are skipped.
const NOTIFY_STOP: c_int = bindings::NOTIFY_STOP as c_int;

const _: () = assert!(core::mem::size_of::<c_ulong>() == core::mem::size_of::<u64>());

/// `struct die_args` (linux/kdebug.h); layout checked in glue.c.
#[repr(C)]
struct DieArgs {
    regs: *mut bindings::pt_regs,
    description: *const c_char,
    err: c_long,
    trap_number: c_int,
    signal_number: c_int,
}

/// A user-mode debug exception, as the `DIE_DEBUG` notifier chain sees it.
pub(crate) struct DebugTrap<'a> {
    regs: &'a mut bindings::pt_regs,
    dr6: &'a mut u64,
}

impl DebugTrap<'_> {
    /// DR6 as the kernel will act on it after the notifiers (positive polarity); clearing a
    /// bit consumes that cause.
    pub(crate) fn dr6(&mut self) -> &mut u64 {
        self.dr6
    }

    /// The user instruction pointer: for a trap-like #DB, the instruction after the lock.
    pub(crate) fn user_ip(&self) -> u64 {
        self.regs.ip as u64
    }
}

/// What to do with the user-mode #DB exceptions that the die notifier chain passes on.
pub(crate) trait DieNotifier {
    /// A user-mode `DIE_DEBUG`, in `exc_debug_user()` with interrupts off: may not sleep.
    fn user_debug_trap(trap: &mut DebugTrap<'_>);
}

/// # Safety
///
/// Called by `notify_die()` only, with `data` pointing to a `struct die_args`.
unsafe extern "C" fn on_die<N: DieNotifier>(
    _block: *mut bindings::notifier_block,
    action: c_ulong,
    data: *mut c_void,
) -> c_int {
    if action != DIE_DEBUG {
        return NOTIFY_DONE;
    }
    // SAFETY: for every die action, `data` is the `struct die_args` of `notify_die()`.
    let args = unsafe { &*data.cast::<DieArgs>() };
    // SAFETY: for DIE_DEBUG, `regs` is the trapped context on the exception stack, which
    // nothing else touches while the notifier chain runs on this CPU.
    let regs = unsafe { &mut *args.regs };
    // Kernel-mode #DB runs in NMI-like context, where amd_sld does nothing.
    if !super::user_mode(regs) {
        return NOTIFY_DONE;
    }
    // SAFETY: `exc_debug_user()` passes `&dr6` of its own frame as `err` (`notify_debug()`),
    // and reads it back after the chain; nothing else holds a reference meanwhile.
    // `unsigned long` is a u64 on x86_64, the only architecture this module builds for.
    let dr6 = unsafe { &mut *(args.err as *mut u64) };
    let causes = *dr6;
    N::user_debug_trap(&mut DebugTrap { regs, dr6 });
    // SAFETY: `current` is the trapped task, running this notifier; a plain read.
    let signals = unsafe { amd_sld_current_virtual_dr6() };
    if causes != 0 && *dr6 == 0 && signals == 0 {
        // The handler consumed every cause this #DB had, and no notifier before it asked
        // for a signal: what follows the chain in exc_debug_user() (5.10 to 6.12) would do
        // nothing (no bus-lock bit for handle_bus_lock(), no DR_STEP or breakpoint bit nor
        // icebp for send_sigtrap()), and the notifiers after this one act only on causes
        // this #DB does not have (uprobes on DR_STEP, ftrace on DIE_OOPS). Stopping here
        // saves the user-mode trap their cost, a fifth of the kernel's own.
        return NOTIFY_STOP;
    }
    NOTIFY_DONE
}

/// The module's one die notifier block, at the chain's highest priority: after the
/// hardware-breakpoint and kprobes notifiers (same priority, registered at boot, so ahead
/// of it), before every other (uprobes, ftrace, kgdb, later modules at their default 0).
static DIE_NOTIFIER: NotifierSlot = NotifierSlot::with_priority(c_int::MAX);

/// amd_sld's place on the die notifier chain, which sees every #DB.
///
/// # Invariants
///
/// `DIE_NOTIFIER` is linked into the die chain from `register()` until drop.
pub(crate) struct DebugTrapHook(());

impl DebugTrapHook {
    /// Starts passing user-mode #DB exceptions to `N`. One hook at a time: `-EBUSY` while
    /// another lives.
    pub(crate) fn register<N: DieNotifier>() -> Result<Self> {
        // SAFETY: `on_die::<N>` has the die chain's callback contract and is module text,
        // which outlives the hook.
        unsafe { DIE_NOTIFIER.link(on_die::<N>, register_die_notifier)? };
        Ok(DebugTrapHook(()))
    }
}

impl Drop for DebugTrapHook {
    fn drop(&mut self) {
        // SAFETY: linked by the type invariant. The chain is RCU-protected and the
        // unregistration waits for a grace period: no CPU runs `on_die` after this returns.
        unsafe { DIE_NOTIFIER.unlink(unregister_die_notifier) };
    }
}
