// SPDX-License-Identifier: GPL-2.0

//! The current task: its name and IDs, its signals, what is mapped at a user address.

use kernel::bindings;
use kernel::ffi::c_int;

use crate::mapcache::Vma;
use crate::record::MAP_NAME_LEN;

extern "C" {
    fn amd_sld_fatal_signal_pending() -> bool;
    /// glue.c: the file mapped at `ip` in current's mm (its base name, NUL-terminated, in
    /// `len` bytes), the mapping's range and the file offset at its start; 0, or a
    /// negative errno.
    fn amd_sld_current_ip_mapping(
        ip: u64,
        name: *mut u8,
        len: usize,
        start: *mut u64,
        end: *mut u64,
        file_offset: *mut u64,
    ) -> c_int;
    fn amd_sld_current_cgroup_id() -> u64;
    fn amd_sld_current_mm_id() -> u64;
}

/// The file mapping at user address `ip` in the current task's address space: its range,
/// the file offset at its start and the file's base name; `None` for an anonymous mapping,
/// none at all, a task without user memory, or an address space that a writer holds at
/// this instant (the lock is only tried). Process context only: it takes the mmap lock for
/// reading.
pub(crate) fn current_ip_vma(ip: u64) -> Option<Vma> {
    let mut name = [0u8; MAP_NAME_LEN];
    let (mut start, mut end, mut file_offset) = (0u64, 0u64, 0u64);
    // SAFETY: the buffers are live locals of the sizes passed; the caller is in process
    // context (task work), where the mmap lock may be taken.
    let status = unsafe {
        amd_sld_current_ip_mapping(
            ip,
            name.as_mut_ptr(),
            name.len(),
            &mut start,
            &mut end,
            &mut file_offset,
        )
    };
    if status != 0 || name[0] == 0 {
        return None;
    }
    let (_, tgid) = current_ids();
    Some(Vma {
        mm: current_mm(),
        tgid,
        start,
        end,
        file_offset,
        name,
    })
}

/// The current task's address space, as an identity never reused while the system runs:
/// x86's `mm->context.ctx_id` (asm/mmu.h, since 4.15), not the `mm_struct` pointer, which
/// the slab hands to the next address space (an exec's, even in the same process); 0 for a
/// kernel thread. Lock-free: safe in any context, NMI included.
pub(crate) fn current_mm() -> u64 {
    // SAFETY: reads the current task's own mm, which lives while the task runs.
    unsafe { amd_sld_current_mm_id() }
}

/// Length of `task_struct::comm` (`TASK_COMM_LEN`).
pub(crate) const COMM_LEN: usize = 16;

/// The current task's name, the 16 bytes as read, as `get_task_comm()` reads it since Linux
/// 6.13 (include/linux/sched.h): a copy without the task lock. `__set_task_comm()` writes
/// the name with `strscpy_pad()`, so it is always terminated; a rename racing with the copy
/// can mix two names (and leave bytes after the first NUL), which upstream accepts ("User
/// space can randomly change their names anyway, so locking for readers doesn't make
/// sense"): callers cut at the first NUL (`Comm::from_raw`, `until_nul`). Lock-free, hence
/// safe in any context, NMI included, and the same on every kernel.
pub(crate) fn current_comm() -> [u8; COMM_LEN] {
    // SAFETY: `current` is valid while it runs; `comm` is a fixed array of `COMM_LEN` bytes.
    unsafe { (*bindings::get_current()).comm }
}

/// The current task's thread ID and thread-group ID.
pub(crate) fn current_ids() -> (i32, i32) {
    // SAFETY: `current` is valid while it runs, and so is its group leader (which only
    // the task itself changes, in exec); `pid` and `tgid` never change.
    unsafe {
        let task = bindings::get_current();
        ((*task).pid, (*(*task).group_leader).pid)
    }
}

/// The current task's cgroup v2 ID (glue.c: `cgroup_id(task_dfl_cgroup(current))` under
/// RCU), or 0 on a kernel without cgroups. Lock-free: safe with interrupts off and in NMI.
pub(crate) fn current_cgroup_id() -> u64 {
    // SAFETY: reads the current task's css_set under RCU, which any context may do.
    unsafe { amd_sld_current_cgroup_id() }
}

/// Whether the current task has `CAP_SYS_ADMIN` in the initial user namespace. No audit
/// record: a denial here only picks the cached value of a counter.
pub(crate) fn current_is_admin() -> bool {
    // SAFETY: `init_user_ns` is a static that lives forever; process context.
    unsafe {
        bindings::ns_capable_noaudit(
            core::ptr::addr_of_mut!(bindings::init_user_ns),
            bindings::CAP_SYS_ADMIN as c_int,
        )
    }
}

/// Sends the current task a SIGBUS that it cannot block or ignore (`force_sig()`).
///
/// `force_sig_fault()`, which would set `si_code = BUS_ADRALN` as the kernel's own fatal
/// mode does, is not exported in 6.12; `force_sig()` sets `SI_KERNEL`.
pub(crate) fn force_sigbus_current() {
    // SAFETY: `force_sig()` acts on `current` and may be called in atomic context.
    unsafe { bindings::force_sig(bindings::SIGBUS as c_int) };
}

/// Whether the current task has been killed (SIGKILL pending).
pub(crate) fn fatal_signal_pending() -> bool {
    // SAFETY: reads the current task's pending signals, which is always allowed.
    unsafe { amd_sld_fatal_signal_pending() }
}
