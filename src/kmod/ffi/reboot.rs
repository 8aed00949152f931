// SPDX-License-Identifier: GPL-2.0

//! The reboot notifier chain: reboot, halt, power-off and kexec.

use kernel::bindings;
use kernel::error::Result;
use kernel::ffi::{c_int, c_ulong, c_void};

use super::notifier::NotifierSlot;

// Kernel interfaces that `kernel::bindings` does not carry in 6.12 (linux/reboot.h).
extern "C" {
    fn register_reboot_notifier(block: *mut bindings::notifier_block) -> c_int;
    fn unregister_reboot_notifier(block: *mut bindings::notifier_block) -> c_int;
}

/// `NOTIFY_DONE`: let the other reboot notifiers run too.
const NOTIFY_DONE: c_int = bindings::NOTIFY_DONE as c_int;

/// What to do before the machine restarts, halts, powers off or kexecs into a new kernel.
pub(crate) trait RebootHandler {
    /// Called by `kernel_restart_prepare()` (also `kernel_kexec()`'s), `kernel_halt()` and
    /// `kernel_power_off()` through the blocking `reboot_notifier_list`: process context,
    /// every CPU still online. May sleep.
    fn on_reboot();
}

/// # Safety
///
/// Called by the reboot notifier chain only.
unsafe extern "C" fn on_reboot<R: RebootHandler>(
    _block: *mut bindings::notifier_block,
    _action: c_ulong,
    _data: *mut c_void,
) -> c_int {
    R::on_reboot();
    NOTIFY_DONE
}

/// The module's one reboot notifier block.
static REBOOT_NOTIFIER: NotifierSlot = NotifierSlot::new();

/// amd_sld's place on the reboot notifier chain.
///
/// # Invariants
///
/// `REBOOT_NOTIFIER` is linked into the reboot chain from `register()` until drop.
pub(crate) struct RebootHook(());

impl RebootHook {
    /// Starts calling `R::on_reboot` before a reboot or kexec. One hook at a time.
    pub(crate) fn register<R: RebootHandler>() -> Result<Self> {
        // SAFETY: `on_reboot::<R>` has the reboot chain's callback contract and is module
        // text, which outlives the hook.
        unsafe { REBOOT_NOTIFIER.link(on_reboot::<R>, register_reboot_notifier)? };
        Ok(RebootHook(()))
    }
}

impl Drop for RebootHook {
    fn drop(&mut self) {
        // SAFETY: linked by the type invariant. The chain is a blocking notifier head:
        // unregistering takes its rwsem for writing, so no call is running when it returns.
        unsafe { REBOOT_NOTIFIER.unlink(unregister_reboot_notifier) };
    }
}
