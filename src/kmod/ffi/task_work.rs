// SPDX-License-Identifier: GPL-2.0

//! Work deferred from the #DB notifier to the trapped task's return to user mode.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::alloc::{flags, KBox};
use kernel::bindings;
use kernel::error::{Error, Result};
use kernel::ffi::{c_int, c_uint, c_void};

use super::time::msleep;

extern "C" {
    // `task_struct` trips `improper_ctypes` (a zero-sized member): pass it untyped.
    fn task_work_add(task: *mut c_void, work: *mut bindings::callback_head, mode: c_uint) -> c_int;
    fn amd_sld_synchronize_rcu_tasks();
    fn amd_sld_task_work_from_nmi_sync();
}

/// `TWA_RESUME` of `enum task_work_notify_mode`; checked in glue.c.
const TWA_RESUME: c_uint = 1;

/// Deferred works queued and not yet finished. Module exit waits for zero.
pub(super) static DEFERRED_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

#[repr(C)]
struct DeferredWork {
    // Must stay first: the kernel hands back a pointer to it.
    head: bindings::callback_head,
    run: fn([u64; 3]),
    args: [u64; 3],
}

/// # Safety
///
/// Called by `task_work_run()` only, with the `head` queued by `defer_to_user_return`.
unsafe extern "C" fn run_deferred(head: *mut bindings::callback_head) {
    // SAFETY: `head` is the first field of a `DeferredWork` leaked by `defer_to_user_return`,
    // and the kernel runs each queued work exactly once.
    let work = unsafe { KBox::from_raw(head.cast::<DeferredWork>()) };
    let (run, args) = (work.run, work.args);
    drop(work);
    run(args);
    // Last touch of module data: `wait_for_deferred_work()` treats zero as "all done".
    DEFERRED_IN_FLIGHT.fetch_sub(1, Ordering::Release);
}

/// Arranges for `run(args)` to run in the current task, in process context with interrupts
/// on, before it returns to user mode. Atomic-safe.
pub(crate) fn defer_to_user_return(run: fn([u64; 3]), args: [u64; 3]) -> Result {
    let work = KBox::new(
        DeferredWork {
            head: bindings::callback_head {
                next: ptr::null_mut(),
                func: Some(run_deferred),
            },
            run,
            args,
        },
        flags::GFP_ATOMIC,
    )?;
    let raw = KBox::into_raw(work);
    DEFERRED_IN_FLIGHT.fetch_add(1, Ordering::Acquire);
    // SAFETY: `raw` is a valid, initialised work item that the kernel owns until it runs
    // `run_deferred`; `current` is valid. TWA_RESUME runs it on the way back to user mode.
    let status = unsafe {
        task_work_add(
            bindings::get_current().cast(),
            ptr::addr_of_mut!((*raw).head),
            TWA_RESUME,
        )
    };
    if status != 0 {
        // The task is exiting: the work was not queued and is still ours.
        // SAFETY: `raw` came from `KBox::into_raw` above and was not handed over.
        drop(unsafe { KBox::from_raw(raw) });
        DEFERRED_IN_FLIGHT.fetch_sub(1, Ordering::Release);
        return Err(Error::from_errno(status));
    }
    Ok(())
}

/// Waits until every deferred work has finished and no task can still be executing its last
/// instructions in this module's text. Call after the notifier is gone, before unloading.
pub(crate) fn wait_for_deferred_work() {
    // A task blocked in the kernel with a work pending would make this wait for as long as
    // it blocks: kicked, it runs its works now.
    let kicked = super::perf::kick_pending_works();
    if kicked != 0 {
        super::pr_info!(
            "unload: {} task(s) with pending work woken to run it\n",
            kicked
        );
    }
    while DEFERRED_IN_FLIGHT.load(Ordering::Acquire) != 0 {
        msleep(5);
    }
    // A task preempted between the decrement and the return of `run_deferred` is still in
    // our text: RCU Tasks waits for every task to pass a voluntary context switch.
    // SAFETY: process context, no locks held that RCU Tasks could need.
    unsafe { amd_sld_synchronize_rcu_tasks() };
    // Before 6.11, NMI work is announced by an irq_work of this module's (glue.c).
    // SAFETY: process context; the perf counters that queue them are released by now.
    unsafe { amd_sld_task_work_from_nmi_sync() };
}
