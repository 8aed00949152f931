// SPDX-License-Identifier: GPL-2.0

//! The one module of amd_sld that uses `unsafe`: every call into C and every C layout.
//!
//! Each item here turns one kernel interface into a safe Rust one, and states once, next to
//! the `unsafe` block, why the kernel's contract holds. The rest of the module is safe Rust.
//! Preference order for what it calls: the `kernel` crate, then `kernel::bindings`, then
//! declarations of our own (below, pinned by `static_assert`s in `glue.c`), then the
//! forwarding functions of `glue.c` for kernel static inlines and macros.

use core::cell::UnsafeCell;
use kernel::bindings;
use kernel::error::Result;
use kernel::ffi::c_int;

mod cmdline;
mod cpu;
mod die;
mod hotplug;
mod modules;
mod msr;
mod notifier;
mod param;
mod percpu;
mod perf;
mod print;
mod reboot;
mod sysfs;
mod task;
mod task_work;
mod time;

pub(crate) use cmdline::read_boot_command_line;
pub(crate) use cpu::{
    boot_cpu_identity, nr_cpu_ids, this_cpu, without_preemption, CpusReadLocked,
    KERNEL_ARMS_AMD_BUS_LOCK, KVM_KEEPS_HOST_DEBUGCTL_OUT_OF_GUESTS,
};
pub(crate) use die::{DebugTrap, DebugTrapHook, DieNotifier};
pub(crate) use hotplug::{CpuHotplug, HotplugHandler};
pub(crate) use modules::{module_present, ModuleHandler, ModuleWatch};
pub(crate) use msr::{msr_update_on, MsrUpdate};
pub(crate) use param::{ParamHandlers, ParamLock};
pub(crate) use percpu::{ConstInit, PerCpu, PerCpuStorage};
pub(crate) use perf::{
    defer_from_nmi, read_counters, start_counter, stop_counter, CounterSpec, CountersLocked,
    Counting, NmiWork, PmuHandler, Sample,
};
pub(crate) use print::{
    pr_err, pr_info, pr_warn, pr_warn_as, print, print_as, Level, KERNEL_SLD_PREFIX,
};
pub(crate) use reboot::{RebootHandler, RebootHook};
pub(crate) use sysfs::{StatFile, SysfsDir};
pub(crate) use task::{
    current_cgroup_id, current_comm, current_ids, current_ip_vma, current_is_admin, current_mm,
    fatal_signal_pending, force_sigbus_current,
};
pub(crate) use task_work::{defer_to_user_return, wait_for_deferred_work};
pub(crate) use time::{coarse_ms, now_ms, now_ns, now_us, sleep_killable_until_us};

/// CPU numbers this module keeps state for.
const MAX_CPUS: usize = bindings::CONFIG_NR_CPUS as usize;

/// A value the kernel links into its own lists, so it lives in a static that C may write.
#[repr(transparent)]
pub(super) struct KernelOwned<T>(UnsafeCell<T>);

// SAFETY: Rust code writes the contents only before handing them to the kernel (under a
// guard that makes it the only writer) and never reads them; the kernel serialises its own
// accesses (notifier chain lock, sysfs core).
unsafe impl<T> Sync for KernelOwned<T> {}

impl<T> KernelOwned<T> {
    pub(super) const fn new(value: T) -> Self {
        KernelOwned(UnsafeCell::new(value))
    }

    pub(super) const fn get(&self) -> *mut T {
        self.0.get()
    }
}

extern "C" {
    fn amd_sld_user_mode(regs: *const bindings::pt_regs) -> bool;
}

/// Whether `regs` were interrupted in user mode: `user_mode()`, which reads `cs` from a
/// field whose shape changed with FRED (6.9).
fn user_mode(regs: &bindings::pt_regs) -> bool {
    // SAFETY: `regs` is a live reference; `user_mode()` only reads it.
    unsafe { amd_sld_user_mode(regs) }
}

fn errno_of(result: Result) -> c_int {
    match result {
        Ok(()) => 0,
        Err(error) => error.to_errno(),
    }
}
