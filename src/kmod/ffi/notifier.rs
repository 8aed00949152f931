// SPDX-License-Identifier: GPL-2.0

//! A static notifier block that one hook at a time links into a kernel notifier chain.

use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use kernel::bindings;
use kernel::error::{code, to_result, Result};
use kernel::ffi::{c_int, c_ulong, c_void};

use super::KernelOwned;

/// A notifier chain's callback.
pub(super) type NotifierCall =
    unsafe extern "C" fn(*mut bindings::notifier_block, c_ulong, *mut c_void) -> c_int;

/// `register_*_notifier()` or `unregister_*_notifier()` of one chain.
pub(super) type ChainOp = unsafe extern "C" fn(*mut bindings::notifier_block) -> c_int;

/// A notifier block in a static, and whether a hook owns it.
///
/// # Invariants
///
/// While `taken` is false the block is on no chain, and only [`NotifierSlot::link`] writes
/// it, after setting `taken`.
pub(super) struct NotifierSlot {
    block: KernelOwned<bindings::notifier_block>,
    taken: AtomicBool,
}

impl NotifierSlot {
    pub(super) const fn new() -> Self {
        Self::with_priority(0)
    }

    /// A block that its chain calls before the blocks of lower `priority`, and after those
    /// of the same priority registered before it.
    pub(super) const fn with_priority(priority: c_int) -> Self {
        NotifierSlot {
            block: KernelOwned::new(bindings::notifier_block {
                notifier_call: None,
                next: ptr::null_mut(),
                priority,
            }),
            taken: AtomicBool::new(false),
        }
    }

    /// Sets the block's callback to `call` and links it with `register`; `-EBUSY` while a
    /// hook owns it.
    ///
    /// # Safety
    ///
    /// `register` must be the registration function of a notifier chain whose callbacks
    /// have `call`'s contract, and `call` must live until [`NotifierSlot::unlink`] returns.
    pub(super) unsafe fn link(&'static self, call: NotifierCall, register: ChainOp) -> Result {
        if self
            .taken
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(code::EBUSY);
        }
        let block = self.block.get();
        // SAFETY: we now own the block (`taken`) and, by the type invariant, it is on no
        // chain, so nothing else reads or writes it; it is static. The caller vouches for
        // `register` and `call`.
        let status = unsafe {
            (*block).notifier_call = Some(call);
            register(block)
        };
        to_result(status).inspect_err(|_| self.taken.store(false, Ordering::Release))
    }

    /// Takes the block off its chain with `unregister`, after which no CPU runs its callback.
    ///
    /// # Safety
    ///
    /// The block was linked by [`NotifierSlot::link`] and not unlinked since; `unregister`
    /// is the unregistration function of the same chain, and waits for running callbacks
    /// (RCU grace period for atomic chains, the rwsem for blocking ones).
    pub(super) unsafe fn unlink(&'static self, unregister: ChainOp) {
        // SAFETY: the caller's contract.
        unsafe { unregister(self.block.get()) };
        self.taken.store(false, Ordering::Release);
    }
}
