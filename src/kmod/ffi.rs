// SPDX-License-Identifier: GPL-2.0

//! The one module of amd_sld that uses `unsafe`: every call into C and every C layout.
//!
//! Each item here turns one kernel interface into a safe Rust one, and states once, next to
//! the `unsafe` block, why the kernel's contract holds. The rest of the module is safe Rust.
//! Preference order for what it calls: the `kernel` crate, then `kernel::bindings`, then
//! declarations of our own (below, pinned by `static_assert`s in `glue.c`), then the
//! forwarding functions of `glue.c` for kernel static inlines and macros.

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};

use kernel::alloc::{flags, KBox};
use kernel::bindings;
use kernel::error::{code, to_result, Error, Result};
use kernel::str::CStr;
use kernel::ThisModule;

use crate::fmtbuf::SliceWriter;

mod perf;
pub(crate) use perf::{
    defer_from_nmi, now_us, read_counters, start_counter, stop_counter, CounterSpec,
};

/// CPU numbers this module keeps state for.
const MAX_CPUS: usize = bindings::CONFIG_NR_CPUS as usize;

// Kernel interfaces that `kernel::bindings` does not carry in 6.12.
extern "C" {
    fn register_die_notifier(block: *mut bindings::notifier_block) -> c_int;
    fn unregister_die_notifier(block: *mut bindings::notifier_block) -> c_int;
    // `task_struct` trips `improper_ctypes` (a zero-sized member): pass it untyped.
    fn task_work_add(task: *mut c_void, work: *mut bindings::callback_head, mode: c_uint) -> c_int;
}

// Forwarders to kernel static inlines and macros, in glue.c.
extern "C" {
    fn amd_sld_rdmsrl_safe(msr: u32, value: *mut u64) -> c_int;
    fn amd_sld_wrmsrl_safe(msr: u32, value: u64) -> c_int;
    fn amd_sld_this_cpu() -> c_uint;
    fn amd_sld_fatal_signal_pending() -> bool;
    fn amd_sld_synchronize_rcu_tasks();
    fn amd_sld_sleep_killable_until(expires_ns: i64, slack_ns: u64) -> c_int;
}

/// `DIE_DEBUG` of `enum die_val` (asm/kdebug.h); checked in glue.c.
const DIE_DEBUG: c_ulong = 3;
/// `TWA_RESUME` of `enum task_work_notify_mode`; checked in glue.c.
const TWA_RESUME: c_uint = 1;
/// `NOTIFY_DONE`: let the other die notifiers and the kernel see the exception too.
const NOTIFY_DONE: c_int = bindings::NOTIFY_DONE as c_int;

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

/// A value the kernel links into its own lists, so it lives in a static that C may write.
#[repr(transparent)]
pub(super) struct KernelOwned<T>(UnsafeCell<T>);

// SAFETY: Rust code never reads or writes the contents after start-up; the kernel serialises
// its own accesses (notifier chain lock, sysfs core).
unsafe impl<T> Sync for KernelOwned<T> {}

impl<T> KernelOwned<T> {
    pub(super) const fn new(value: T) -> Self {
        KernelOwned(UnsafeCell::new(value))
    }

    pub(super) const fn get(&self) -> *mut T {
        self.0.get()
    }
}

// ---------------------------------------------------------------------------------------
// CPUs, MSRs and the boot CPU's identity.

/// The outcome of a read-modify-write of an MSR on one CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MsrUpdate {
    /// The value found.
    pub(crate) before: u64,
    /// The value read back after the write.
    pub(crate) after: u64,
}

struct MsrCall {
    msr: u32,
    update: fn(u64) -> u64,
    result: core::result::Result<MsrUpdate, c_int>,
}

/// Runs on the target CPU with interrupts off, so that nothing on that CPU (a context
/// switch toggling DEBUGCTL.BTF, say) can slip in between the read and the write.
///
/// # Safety
///
/// `info` must point to an `MsrCall` that nothing else accesses during the call.
unsafe extern "C" fn msr_update_here(info: *mut c_void) {
    // SAFETY: `msr_update_on` passes its exclusive `MsrCall` and waits for us to finish.
    let call = unsafe { &mut *info.cast::<MsrCall>() };
    let mut before = 0;
    // SAFETY: the `_safe` MSR accessors catch the #GP of a missing MSR and return an error.
    let status = unsafe { amd_sld_rdmsrl_safe(call.msr, &mut before) };
    if status != 0 {
        call.result = Err(status);
        return;
    }
    let wanted = (call.update)(before);
    if wanted != before {
        // SAFETY: as above.
        let status = unsafe { amd_sld_wrmsrl_safe(call.msr, wanted) };
        if status != 0 {
            call.result = Err(status);
            return;
        }
    }
    let mut after = 0;
    // SAFETY: as above.
    let status = unsafe { amd_sld_rdmsrl_safe(call.msr, &mut after) };
    call.result = if status == 0 {
        Ok(MsrUpdate { before, after })
    } else {
        Err(status)
    };
}

/// Reads an MSR on `cpu`, writes `update(value)` back if that differs, and reads it again,
/// all on that CPU with interrupts off. A missing MSR is an error, not a crash.
pub(crate) fn msr_update_on(cpu: u32, msr: u32, update: fn(u64) -> u64) -> Result<MsrUpdate> {
    let mut call = MsrCall {
        msr,
        update,
        result: Err(code::EIO.to_errno()),
    };
    let cpu = c_int::try_from(cpu).map_err(|_| code::EINVAL)?;
    // SAFETY: `wait` is 1, so `call` outlives the remote function; `msr_update_here` has the
    // `smp_call_func_t` signature; callers run in process context, as the function requires.
    let status = unsafe {
        bindings::smp_call_function_single(
            cpu,
            Some(msr_update_here),
            ptr::addr_of_mut!(call).cast(),
            1,
        )
    };
    to_result(status)?;
    call.result.map_err(Error::from_errno)
}

/// The boot CPU's vendor and its `CPUID_7_ECX` capability word, as the kernel recorded them.
pub(crate) fn boot_cpu_identity() -> (u8, u32) {
    // SAFETY: `boot_cpu_data` is written during early boot and only read afterwards. The
    // anonymous unions hold plain integers, valid under every interpretation.
    unsafe {
        let data = ptr::addr_of!(bindings::boot_cpu_data);
        let vendor = (*data).__bindgen_anon_1.__bindgen_anon_1.x86_vendor;
        let word = (*data).__bindgen_anon_2.x86_capability[crate::x86::CAPABILITY_WORD_CPUID_7_ECX];
        (vendor, word)
    }
}

/// The CPU this code runs on. Only meaningful where the caller cannot migrate (the #DB
/// notifier and the PMU overflow handler run with interrupts off).
pub(crate) fn this_cpu() -> u32 {
    // SAFETY: reading the per-CPU CPU number has no preconditions.
    unsafe { amd_sld_this_cpu() }
}

/// Upper bound (exclusive) of CPU numbers on this boot.
pub(crate) fn nr_cpu_ids() -> u32 {
    // SAFETY: `nr_cpu_ids` is set during early boot and only read afterwards.
    unsafe { bindings::nr_cpu_ids }
}

/// Holds the CPU hotplug lock for reading: no CPU comes or goes while it lives.
///
/// # Invariants
///
/// `cpus_read_lock()` is held from `lock()` until drop.
pub(crate) struct CpusReadLocked(());

impl CpusReadLocked {
    /// Takes the CPU hotplug lock for reading; may sleep.
    pub(crate) fn lock() -> Self {
        // SAFETY: process context, which every caller (parameter store, init, exit) is.
        unsafe { bindings::cpus_read_lock() };
        CpusReadLocked(())
    }

    /// The online CPUs, which cannot change while the lock is held.
    pub(crate) fn online(&self) -> impl Iterator<Item = u32> + '_ {
        (0..nr_cpu_ids()).filter(|&cpu| cpu_is_online(cpu))
    }
}

impl Drop for CpusReadLocked {
    fn drop(&mut self) {
        // SAFETY: by the type invariant, we hold the lock.
        unsafe { bindings::cpus_read_unlock() };
    }
}

fn cpu_is_online(cpu: u32) -> bool {
    let bits = c_ulong::BITS;
    let word = (cpu / bits) as usize;
    // SAFETY: `__cpu_online_mask` is a static bitmap of `NR_CPUS` bits and `cpu` is below
    // `nr_cpu_ids <= NR_CPUS`; a racy read is what `cpu_online()` does too.
    let value =
        unsafe { ptr::read_volatile(ptr::addr_of!(bindings::__cpu_online_mask.bits[word])) };
    value & (1 << (cpu % bits)) != 0
}

/// A dynamic CPU hotplug state whose callbacks are `crate::arming::on_cpu_online` and
/// `crate::arming::on_cpu_offline`.
///
/// # Invariants
///
/// `state` is the state number `__cpuhp_setup_state()` returned; removed on drop.
pub(crate) struct CpuHotplug {
    state: c_int,
}

/// # Safety
///
/// Called by the CPU hotplug core only.
unsafe extern "C" fn hotplug_online(cpu: c_uint) -> c_int {
    errno_of(crate::arming::on_cpu_online(cpu))
}

/// # Safety
///
/// Called by the CPU hotplug core only.
unsafe extern "C" fn hotplug_offline(cpu: c_uint) -> c_int {
    crate::arming::on_cpu_offline(cpu);
    0
}

impl CpuHotplug {
    /// Registers the callbacks and runs the online one on every online CPU now; on error,
    /// the kernel runs the offline one on the CPUs already done and nothing stays registered.
    pub(crate) fn register(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is a static C string; the callbacks have the required signature and
        // live as long as the module, which removes the state before it goes away.
        let state = unsafe {
            bindings::__cpuhp_setup_state(
                bindings::cpuhp_state_CPUHP_AP_ONLINE_DYN,
                name.as_char_ptr(),
                true,
                Some(hotplug_online),
                Some(hotplug_offline),
                false,
            )
        };
        to_result(state)?;
        Ok(CpuHotplug { state })
    }
}

impl Drop for CpuHotplug {
    fn drop(&mut self) {
        // SAFETY: by the type invariant, `state` is ours and still set up.
        unsafe { bindings::__cpuhp_remove_state(self.state, true) };
    }
}

fn errno_of(result: Result) -> c_int {
    match result {
        Ok(()) => 0,
        Err(error) => error.to_errno(),
    }
}

// ---------------------------------------------------------------------------------------
// The #DB notifier.

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

/// # Safety
///
/// Called by `notify_die()` only, with `data` pointing to a `struct die_args`.
unsafe extern "C" fn on_die(
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
    // user_mode(): kernel-mode #DB runs in NMI-like context, where amd_sld does nothing.
    // SAFETY: every variant of the union is a plain integer; bits 0-1 are the CPL.
    let cs = unsafe { regs.__bindgen_anon_1.csx };
    if cs & 3 != 3 {
        return NOTIFY_DONE;
    }
    // SAFETY: `exc_debug_user()` passes `&dr6` of its own frame as `err` (`notify_debug()`),
    // and reads it back after the chain; nothing else holds a reference meanwhile.
    // `unsigned long` is a u64 on x86_64, the only architecture this module builds for.
    let dr6 = unsafe { &mut *(args.err as *mut u64) };
    crate::trap::on_user_debug_trap(&mut DebugTrap { regs, dr6 });
    NOTIFY_DONE
}

static DIE_NOTIFIER: KernelOwned<bindings::notifier_block> =
    KernelOwned::new(bindings::notifier_block {
        notifier_call: Some(on_die),
        next: ptr::null_mut(),
        priority: 0,
    });

/// amd_sld's place on the die notifier chain, which sees every #DB.
///
/// # Invariants
///
/// `DIE_NOTIFIER` is registered from `register()` until drop.
pub(crate) struct DebugTrapHook(());

impl DebugTrapHook {
    /// Starts receiving #DB exceptions.
    pub(crate) fn register() -> Result<Self> {
        // SAFETY: the block is static and registered at most once, since this type is the
        // only caller and the module creates one.
        to_result(unsafe { register_die_notifier(DIE_NOTIFIER.get()) })?;
        Ok(DebugTrapHook(()))
    }
}

impl Drop for DebugTrapHook {
    fn drop(&mut self) {
        // SAFETY: registered by the type invariant. The chain is RCU-protected and the
        // unregistration waits for a grace period: no CPU runs `on_die` after this returns.
        unsafe { unregister_die_notifier(DIE_NOTIFIER.get()) };
    }
}

// ---------------------------------------------------------------------------------------
// The task that took the trap.

/// Length of `task_struct::comm` (`TASK_COMM_LEN`).
pub(crate) const COMM_LEN: usize = 16;

/// The current task's name, NUL-padded.
pub(crate) fn current_comm() -> [u8; COMM_LEN] {
    // SAFETY: `current` is valid while it runs; `comm` is a fixed array that is always
    // NUL-terminated. A concurrent rename can tear it, as it can for `%s` of `current->comm`.
    unsafe { (*bindings::get_current()).comm }
}

/// The current task's thread ID and thread-group ID.
pub(crate) fn current_ids() -> (i32, i32) {
    let task = kernel::current!();
    (task.pid(), task.group_leader().pid())
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

// ---------------------------------------------------------------------------------------
// Time and sleeping.

/// Monotonic milliseconds, safe in any context, NMI included.
pub(crate) fn now_ms() -> u64 {
    // SAFETY: `ktime_get_mono_fast_ns()` has no preconditions and is NMI-safe.
    let ns = unsafe { bindings::ktime_get_mono_fast_ns() };
    ns / 1_000_000
}

/// Timer slack of a throttle sleep: a small fraction of the shortest slot (1 ms at
/// `ratelimit:1000`), so that pacing does not drift.
const SLEEP_SLACK_NS: u64 = 20_000;

/// Sleeps until `until_us` of `CLOCK_MONOTONIC` on a high-resolution timer, not a jiffy
/// (4 ms at HZ=250, four slots of `ratelimit:1000`); only SIGKILL cuts it short. Process
/// context only.
pub(crate) fn sleep_killable_until_us(until_us: u64) {
    let expires_ns = i64::try_from(until_us.saturating_mul(1_000)).unwrap_or(i64::MAX);
    // SAFETY: called from process context with no locks held (the throttle's task work).
    unsafe { amd_sld_sleep_killable_until(expires_ns, SLEEP_SLACK_NS) };
}

/// Sleeps for `ms` milliseconds, uninterruptibly. Process context only.
pub(crate) fn msleep(ms: u32) {
    // SAFETY: process context (module exit).
    unsafe { bindings::msleep(ms) };
}

// ---------------------------------------------------------------------------------------
// Work deferred from the #DB notifier to the trapped task's return to user mode.

/// Deferred works queued and not yet finished. Module exit waits for zero.
pub(super) static DEFERRED_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

#[repr(C)]
struct DeferredWork {
    // Must stay first: the kernel hands back a pointer to it.
    head: bindings::callback_head,
    user_ip: u64,
    until_us: u64,
}

/// # Safety
///
/// Called by `task_work_run()` only, with the `head` queued by `defer_to_user_return`.
unsafe extern "C" fn run_deferred(head: *mut bindings::callback_head) {
    // SAFETY: `head` is the first field of a `DeferredWork` leaked by `defer_to_user_return`,
    // and the kernel runs each queued work exactly once.
    let work = unsafe { KBox::from_raw(head.cast::<DeferredWork>()) };
    let (user_ip, until_us) = (work.user_ip, work.until_us);
    drop(work);
    crate::throttle::on_return_to_user(user_ip, until_us);
    // Last touch of module data: `wait_for_deferred_work()` treats zero as "all done".
    DEFERRED_IN_FLIGHT.fetch_sub(1, Ordering::Release);
}

/// Arranges for `crate::throttle::on_return_to_user(user_ip, until_us)` to run in the
/// current task, in process context with interrupts on, before it returns to user mode.
/// Atomic-safe.
pub(crate) fn defer_to_user_return(user_ip: u64, until_us: u64) -> Result {
    let work = KBox::new(
        DeferredWork {
            head: bindings::callback_head {
                next: ptr::null_mut(),
                func: Some(run_deferred),
            },
            user_ip,
            until_us,
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
    while DEFERRED_IN_FLIGHT.load(Ordering::Acquire) != 0 {
        msleep(5);
    }
    // A task preempted between the decrement and the return of `run_deferred` is still in
    // our text: RCU Tasks waits for every task to pass a voluntary context switch.
    // SAFETY: process context, no locks held that RCU Tasks could need.
    unsafe { amd_sld_synchronize_rcu_tasks() };
}

// ---------------------------------------------------------------------------------------
// Module parameter and module lock.

/// Parses a parameter write with `store`.
///
/// # Safety
///
/// `value` is the NUL-terminated string the module parameter core passes to `set()`.
unsafe fn param_set(value: *const c_char, store: fn(&[u8]) -> Result) -> c_int {
    // SAFETY: the parameter core passes a valid NUL-terminated string (possibly empty).
    let bytes = unsafe { CStr::from_char_ptr(value) }.as_bytes();
    errno_of(store(bytes))
}

/// Renders a parameter read with `show`.
///
/// # Safety
///
/// `buffer` is the `PAGE_SIZE` buffer the module parameter core passes to `get()`.
unsafe fn param_get(
    buffer: *mut c_char,
    show: fn(&mut SliceWriter<'_>) -> core::fmt::Result,
) -> c_int {
    // SAFETY: `param_attr_show()` passes a buffer of `PAGE_SIZE` bytes.
    let page = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), bindings::PAGE_SIZE) };
    let mut out = SliceWriter::new(page);
    match show(&mut out) {
        Ok(()) => c_int::try_from(out.len()).unwrap_or(0),
        Err(_) => code::EINVAL.to_errno(),
    }
}

/// # Safety
///
/// Called by the module parameter core only, with `value` a NUL-terminated string.
#[no_mangle]
unsafe extern "C" fn amd_sld_policy_set(
    value: *const c_char,
    _param: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: the caller's contract is `param_set`'s.
    unsafe { param_set(value, crate::control::store) }
}

/// # Safety
///
/// Called by the module parameter core only, with a `PAGE_SIZE` buffer.
#[no_mangle]
unsafe extern "C" fn amd_sld_policy_get(
    buffer: *mut c_char,
    _param: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: the caller's contract is `param_get`'s.
    unsafe { param_get(buffer, crate::control::show) }
}

/// # Safety
///
/// Called by the module parameter core only, with `value` a NUL-terminated string.
#[no_mangle]
unsafe extern "C" fn amd_sld_source_set(
    value: *const c_char,
    _param: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: the caller's contract is `param_set`'s.
    unsafe { param_set(value, crate::control::store_source) }
}

/// # Safety
///
/// Called by the module parameter core only, with a `PAGE_SIZE` buffer.
#[no_mangle]
unsafe extern "C" fn amd_sld_source_get(
    buffer: *mut c_char,
    _param: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: the caller's contract is `param_get`'s.
    unsafe { param_get(buffer, crate::control::show_source) }
}

/// Holds this module's parameter lock, which the kernel also takes around every write of a
/// parameter through sysfs: it serialises amd_sld's start-up, shut-down and policy changes.
///
/// # Invariants
///
/// `kernel_param_lock(module)` is held from `lock()` until drop.
pub(crate) struct ParamLock(*mut bindings::module);

impl ParamLock {
    /// Takes the lock; may sleep.
    pub(crate) fn lock(module: &'static ThisModule) -> Self {
        let module = module.as_ptr();
        // SAFETY: `module` is this module, alive while its code runs; process context.
        unsafe { bindings::kernel_param_lock(module) };
        ParamLock(module)
    }
}

impl Drop for ParamLock {
    fn drop(&mut self) {
        // SAFETY: held by the type invariant.
        unsafe { bindings::kernel_param_unlock(self.0) };
    }
}

// ---------------------------------------------------------------------------------------
// /sys/kernel/amd_sld.

/// A read-only sysfs attribute whose `show()` renders `crate::stats::Stat::ALL[I]`.
// Lockdep kernels add fields to `struct attribute` that the update fills; others do not.
#[allow(clippy::needless_update)]
const fn stat_attribute<const I: usize>() -> KernelOwned<bindings::kobj_attribute> {
    KernelOwned::new(bindings::kobj_attribute {
        attr: bindings::attribute {
            name: crate::stats::Stat::ALL[I].name().as_char_ptr(),
            mode: crate::stats::Stat::ALL[I].mode(),
            // SAFETY: the remaining fields (lockdep keys) are valid when zeroed, as for
            // every statically allocated attribute.
            ..unsafe { core::mem::zeroed() }
        },
        show: Some(show_stat::<I>),
        store: None,
    })
}

/// # Safety
///
/// Called by sysfs only, with a `PAGE_SIZE` buffer.
unsafe extern "C" fn show_stat<const I: usize>(
    _kobj: *mut bindings::kobject,
    _attr: *mut bindings::kobj_attribute,
    buffer: *mut c_char,
) -> isize {
    // SAFETY: sysfs passes `show()` a buffer of `PAGE_SIZE` bytes.
    let page = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), bindings::PAGE_SIZE) };
    let mut out = SliceWriter::new(page);
    match crate::stats::Stat::ALL[I].render(&mut out) {
        Ok(()) => isize::try_from(out.len()).unwrap_or(0),
        Err(_) => code::E2BIG.to_errno() as isize,
    }
}

/// The attributes of every `crate::stats::Stat`, and the NULL-terminated list of them that
/// the group takes: `kobj_attribute` starts with its `attribute`, so a pointer to one is a
/// pointer to the other. The array types fail to compile if an index is missing.
macro_rules! stat_attributes {
    ($($index:literal)*) => {
        static STAT_ATTRIBUTES: [KernelOwned<bindings::kobj_attribute>; crate::stats::Stat::ALL.len()] =
            [$(stat_attribute::<$index>(),)*];
        static STAT_ATTRIBUTE_LIST: KernelOwned<[*mut bindings::attribute; crate::stats::Stat::ALL.len() + 1]> =
            KernelOwned::new([$(STAT_ATTRIBUTES[$index].get().cast(),)* ptr::null_mut()]);
    };
}

stat_attributes!(0 1 2 3 4 5 6 7 8 9 10);

static STAT_GROUP: KernelOwned<bindings::attribute_group> =
    KernelOwned::new(bindings::attribute_group {
        attrs: STAT_ATTRIBUTE_LIST.get().cast(),
        // SAFETY: a group with no name, no visibility callbacks and no binary attributes is
        // the all-zero value apart from `attrs`.
        ..unsafe { core::mem::zeroed() }
    });

/// The directory `/sys/kernel/amd_sld` with one file per `crate::stats::Stat`.
///
/// # Invariants
///
/// `kobj` is a kobject we created and hold the only reference to.
pub(crate) struct SysfsDir {
    kobj: NonNull<bindings::kobject>,
}

// SAFETY: the kobject is only ever released, which the kernel allows from any thread.
unsafe impl Send for SysfsDir {}
// SAFETY: `SysfsDir` has no methods taking `&self`.
unsafe impl Sync for SysfsDir {}

impl SysfsDir {
    /// Creates the directory and its files.
    pub(crate) fn create(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is a static C string; `kernel_kobj` is /sys/kernel, alive forever.
        let kobj =
            unsafe { bindings::kobject_create_and_add(name.as_char_ptr(), bindings::kernel_kobj) };
        let kobj = NonNull::new(kobj).ok_or(code::ENOMEM)?;
        let dir = SysfsDir { kobj };
        // SAFETY: `kobj` is live; the group and its attributes are statics.
        to_result(unsafe { bindings::sysfs_create_group(dir.kobj.as_ptr(), STAT_GROUP.get()) })?;
        Ok(dir)
    }
}

impl Drop for SysfsDir {
    fn drop(&mut self) {
        // SAFETY: we hold the only reference (type invariant). Dropping it removes the
        // directory and waits for running `show()` calls to finish.
        unsafe { bindings::kobject_put(self.kobj.as_ptr()) };
    }
}
