// SPDX-License-Identifier: GPL-2.0

//! The reboot notifier chain: reboot, halt, power-off and kexec.

use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use kernel::bindings;
use kernel::error::{code, to_result, Result};
use kernel::ffi::{c_int, c_ulong, c_void};

use super::KernelOwned;

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

/// The module's one reboot notifier block; its callback is set by [`RebootHook::register`]
/// while the block is off the chain.
static REBOOT_NOTIFIER: KernelOwned<bindings::notifier_block> =
    KernelOwned::new(bindings::notifier_block {
        notifier_call: None,
        next: ptr::null_mut(),
        priority: 0,
    });

/// Whether a [`RebootHook`] owns `REBOOT_NOTIFIER`.
static REBOOT_NOTIFIER_TAKEN: AtomicBool = AtomicBool::new(false);

/// amd_sld's place on the reboot notifier chain.
///
/// # Invariants
///
/// `REBOOT_NOTIFIER` is registered from `register()` until drop, and this hook is its only
/// owner (`REBOOT_NOTIFIER_TAKEN`).
pub(crate) struct RebootHook(());

impl RebootHook {
    /// Starts calling `R::on_reboot` before a reboot or kexec. One hook at a time.
    pub(crate) fn register<R: RebootHandler>() -> Result<Self> {
        if REBOOT_NOTIFIER_TAKEN
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(code::EBUSY);
        }
        let block = REBOOT_NOTIFIER.get();
        // SAFETY: we own the block (`REBOOT_NOTIFIER_TAKEN`) and it is not on the chain, so
        // nothing else reads or writes it; it is static.
        let status = unsafe {
            (*block).notifier_call = Some(on_reboot::<R>);
            register_reboot_notifier(block)
        };
        if let Err(error) = to_result(status) {
            REBOOT_NOTIFIER_TAKEN.store(false, Ordering::Release);
            return Err(error);
        }
        Ok(RebootHook(()))
    }
}

impl Drop for RebootHook {
    fn drop(&mut self) {
        // SAFETY: registered by the type invariant. The chain is a blocking notifier head:
        // unregistering takes its rwsem for writing, so no call is running when it returns.
        unsafe { unregister_reboot_notifier(REBOOT_NOTIFIER.get()) };
        REBOOT_NOTIFIER_TAKEN.store(false, Ordering::Release);
    }
}
