// SPDX-License-Identifier: GPL-2.0

//! Kernel perf counters, their NMI overflow handler, and work deferred from NMI context to
//! the sampled task. What the samples mean is the [`PmuHandler`]'s business.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use kernel::bindings;
use kernel::error::{from_err_ptr, Error, Result};
use kernel::ffi::{c_int, c_ulong};

use super::task_work::DEFERRED_IN_FLIGHT;
use super::{KernelOwned, MAX_CPUS};

extern "C" {
    /// glue.c: a per-CPU `PERF_TYPE_RAW` counter of `config`, sampling user mode at
    /// `sample_freq` with overflows to `handler`, or pinned and counting every mode without
    /// one; in the [`Modes`] given. C builds the `struct perf_event_attr`, whose size grows
    /// with the kernel.
    fn amd_sld_perf_counter_create(
        cpu: c_int,
        config: u64,
        sample_freq: u64,
        handler: Option<OverflowHandler>,
        modes: c_int,
    ) -> *mut bindings::perf_event;
    /// glue.c: `task_pt_regs(current)->ip`, the user IP of a user task in kernel mode.
    fn amd_sld_current_user_ip() -> u64;
    fn perf_event_release_kernel(event: *mut bindings::perf_event) -> c_int;
    fn perf_event_read_value(
        event: *mut bindings::perf_event,
        enabled: *mut u64,
        running: *mut u64,
    ) -> u64;
    /// glue.c: `local64_read(&event->count)`, NMI-safe.
    fn amd_sld_perf_event_count(event: *mut bindings::perf_event) -> u64;
    /// glue.c: `READ_ONCE(event->state)`.
    fn amd_sld_perf_event_state(event: *mut bindings::perf_event) -> c_int;
    /// glue.c: the mutex that keeps the counters alive while they are read.
    fn amd_sld_counters_lock();
    fn amd_sld_counters_trylock() -> c_int;
    fn amd_sld_counters_unlock();
    /// glue.c: `task_work_add()` of `current` from NMI context (`TWA_NMI_CURRENT`, or its
    /// equivalent before 6.11).
    fn amd_sld_task_work_add_from_nmi(work: *mut bindings::callback_head) -> c_int;
    /// glue.c: `kick`, with `func`, queued with `TWA_SIGNAL` on the task in `*task_slot`
    /// (read under RCU), if any: it runs its pending task works now.
    fn amd_sld_task_work_kick(
        task_slot: *const c_ulong,
        kick: *mut bindings::callback_head,
        func: unsafe extern "C" fn(*mut bindings::callback_head),
    ) -> c_int;
}

/// Holds the counters' mutex: no counter is started or released meanwhile, so the live
/// ones can be read (`perf_event_read_value()`, which sleeps and sends IPIs). Taken inside
/// the CPU hotplug lock by the hotplug callbacks, never the other way round.
///
/// # Invariants
///
/// glue.c's `amd_sld_counters_mutex` is held from `lock()`/`try_lock()` until drop.
pub(crate) struct CountersLocked(());

impl CountersLocked {
    /// Takes the mutex; may sleep. Process context.
    pub(crate) fn lock() -> Self {
        // SAFETY: process context; the mutex is a static of glue.c.
        unsafe { amd_sld_counters_lock() };
        CountersLocked(())
    }

    /// Takes the mutex if it is free.
    pub(crate) fn try_lock() -> Option<Self> {
        // SAFETY: process context; the mutex is a static of glue.c.
        (unsafe { amd_sld_counters_trylock() } != 0).then_some(CountersLocked(()))
    }
}

impl Drop for CountersLocked {
    fn drop(&mut self) {
        // SAFETY: held by the type invariant.
        unsafe { amd_sld_counters_unlock() };
    }
}

/// `PERF_EVENT_STATE_INACTIVE` of `enum perf_event_state`: states below it (error, off,
/// exit, dead) count nothing; checked in glue.c.
const PERF_EVENT_STATE_INACTIVE: c_int = 0;

type OverflowHandler =
    unsafe extern "C" fn(*mut bindings::perf_event, *mut PerfSampleData, *mut bindings::pt_regs);

/// `struct perf_sample_data`, never looked into: its layout changes between kernels.
#[repr(C)]
struct PerfSampleData {
    _opaque: [u8; 0],
}

/// What the overflow handler saw.
pub(crate) struct Sample {
    /// Bus locks the sample stands for: those counted on this CPU since its previous
    /// sample, charged to the task that was running when the counter overflowed.
    pub(crate) count: u64,
    /// The task is a vCPU thread in guest mode.
    pub(crate) guest: bool,
    /// The task is a kernel thread: it never returns to user mode to be acted on. (The
    /// sampler counts user mode only, so only skid can make one the interrupted task.)
    pub(crate) kernel_thread: bool,
    /// The task's user IP: where the CPU was in user mode, else the one its entry into the
    /// kernel saved (the NMI of a bus lock often lands in the kernel's own #DB handling of
    /// it, on 6.13+); 0 for guest mode (perf's guest RIP is not exported) and kernel threads.
    pub(crate) ip: u64,
}

/// Work deferred from NMI context to the sampled task, merged across samples until it runs.
pub(crate) struct NmiWork {
    /// Merged by adding.
    pub(crate) count: u64,
    /// The handler's action as a byte that orders by severity. This, `guest` and
    /// `until_us` are merged by keeping the maximum.
    pub(crate) severity: u8,
    pub(crate) guest: bool,
    /// Merged by keeping the latest.
    pub(crate) ip: u64,
    pub(crate) until_us: u64,
    /// Merged by keeping the latest, with `ip`: the handler's record of that sample.
    pub(crate) seq: u64,
}

/// What a counter's overflows do.
pub(crate) trait PmuHandler {
    /// A counter overflowed. NMI context: atomics only.
    fn on_sample(sample: &Sample);
    /// Work queued by [`defer_from_nmi::<Self>`] runs in the sampled task, in process
    /// context, before it returns to user or guest mode.
    fn on_return(work: &NmiWork);
}

/// What to count: a raw (model-specific) PMU event.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CounterSpec {
    /// `perf_event_attr::config` of the `PERF_TYPE_RAW` event.
    pub(crate) raw_config: u64,
    /// Target overflow interrupts per second (perf frequency mode).
    pub(crate) sample_freq: u64,
}

/// The sampling counter of each CPU, or null: its overflows are the samples.
static COUNTERS: [AtomicPtr<bindings::perf_event>; MAX_CPUS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];

/// The pinned counting event of each CPU, or null: the exact total. perf stops a sampling
/// counter while it throttles it (too many overflows per tick, or overflow handlers that
/// took too long, which lowers `perf_event_max_sample_rate`), and bus locks in that window
/// go uncounted; an event that never samples is never throttled, and a pinned one is never
/// rotated off the PMU.
static TALLIES: [AtomicPtr<bindings::perf_event>; MAX_CPUS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CPUS];

/// Each CPU's count at its counter's previous overflow: the next sample stands for the
/// difference. Only that CPU's overflow handler touches it while the counter lives.
static COUNT_AT_LAST_SAMPLE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn counter_slot(cpu: u32) -> Option<&'static AtomicPtr<bindings::perf_event>> {
    COUNTERS.get(usize::try_from(cpu).ok()?)
}

fn tally_slot(cpu: u32) -> Option<&'static AtomicPtr<bindings::perf_event>> {
    TALLIES.get(usize::try_from(cpu).ok()?)
}

/// Which of host and guest mode a counter counts: glue.c's `AMD_SLD_MODES_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum Modes {
    /// Host and guest mode.
    All = 0,
    /// Host mode only (`exclude_guest`).
    Host = 1,
    /// Guest mode only (`exclude_host`, AMD's GuestOnly bit), beside the trap.
    Guest = 2,
}

/// A per-CPU kernel counter of the raw event `raw_config`: sampling user mode at
/// `sample_freq` per second with overflows to `handler`, or, with no handler, counting
/// every mode and pinned; of host and guest mode as `modes` says.
fn create(
    cpu: c_int,
    raw_config: u64,
    handler: Option<OverflowHandler>,
    sample_freq: u64,
    modes: Modes,
) -> Result<*mut bindings::perf_event> {
    // SAFETY: a CPU number makes a per-CPU counter; the handler, if any, has the overflow
    // signature and lives as long as the module, which releases every counter before it
    // goes.
    let event = unsafe {
        amd_sld_perf_counter_create(cpu, raw_config, sample_freq, handler, modes as c_int)
    };
    from_err_ptr(event)
}

/// `EOPNOTSUPP`, checked in glue.c: perf's answer to a counter that would count guest mode
/// while VMs with a mediated vPMU exist (Linux 7.0+, `mediated_pmu_account_event()`).
const EOPNOTSUPP: c_int = 95;

/// What a CPU's counters count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counting {
    /// Host and guest mode.
    HostAndGuest,
    /// Host mode only: perf refused counters that count guest mode (`-EOPNOTSUPP`: VMs with
    /// a mediated vPMU exist, whose guests own the PMU while they run).
    HostOnly,
    /// Guest mode only, as asked for.
    GuestOnly,
}

fn release(event: *mut bindings::perf_event) {
    // SAFETY: callers pass an event from `perf_event_create_kernel_counter()` that they
    // just took out of its slot (or never stored), so nothing else will use or release it.
    unsafe { perf_event_release_kernel(event) };
}

/// Creates `cpu`'s counters: a pinned counting event for the exact total, counting user,
/// kernel and guest mode, and a sampling one (frequency mode, overflow to `H::on_sample`),
/// counting user mode only, host and guest. Both or neither. Where perf refuses counters
/// that count guest mode (VMs with a mediated vPMU exist), both count host mode only, and
/// the result says so. Process context; the caller holds the CPU hotplug lock (the
/// hotplug core, or [`super::CpusReadLocked`]) and the parameter lock or is the hotplug
/// core, so no two callers start or stop the same CPU's counters at once; and the counters'
/// mutex, so that readers see both or neither.
///
/// With `guest_only`, both count guest mode only (beside the trap, which has the host);
/// perf's refusal of guest mode is then the error, `-EOPNOTSUPP`: there is no host-only
/// fallback, which would count the trap's bus locks twice.
pub(crate) fn start_counter<H: PmuHandler>(
    cpu: u32,
    spec: &CounterSpec,
    guest_only: bool,
    _locked: &CountersLocked,
) -> Result<Counting> {
    let einval = kernel::error::code::EINVAL;
    let (slot, tally_slot) = (
        counter_slot(cpu).ok_or(einval)?,
        tally_slot(cpu).ok_or(einval)?,
    );
    // A new counter starts from zero.
    if let Some(last) = COUNT_AT_LAST_SAMPLE.get(cpu as usize) {
        last.store(0, Ordering::Relaxed);
    }
    let cpu = c_int::try_from(cpu).map_err(|_| einval)?;
    let (tally, modes) = if guest_only {
        (
            create(cpu, spec.raw_config, None, 0, Modes::Guest)?,
            Counting::GuestOnly,
        )
    } else {
        match create(cpu, spec.raw_config, None, 0, Modes::All) {
            Err(error) if error.to_errno() == -EOPNOTSUPP => (
                create(cpu, spec.raw_config, None, 0, Modes::Host)?,
                Counting::HostOnly,
            ),
            other => (other?, Counting::HostAndGuest),
        }
    };
    // A pinned event that finds no free counter is put in error state at once (perf
    // installs it on its CPU before returning) and would count nothing, for good.
    if !counting(tally) {
        release(tally);
        return Err(kernel::error::code::EBUSY);
    }
    // A tally that counts guest mode keeps perf from admitting mediated-vPMU VMs meanwhile
    // (`perf_create_mediated_pmu()` is -EBUSY), so the sampler gets the same.
    let sampler = create(
        cpu,
        spec.raw_config,
        Some(on_overflow::<H>),
        spec.sample_freq,
        match modes {
            Counting::HostAndGuest => Modes::All,
            Counting::HostOnly => Modes::Host,
            Counting::GuestOnly => Modes::Guest,
        },
    )
    .inspect_err(|_| release(tally))?;
    tally_slot.store(tally, Ordering::Release);
    slot.store(sampler, Ordering::Release);
    Ok(modes)
}

/// A read of a pinned counting event.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TallyRead {
    /// Its count.
    pub(crate) count: u64,
    /// It counted all the time it was enabled: not in error state (a pinned event that lost
    /// its counter), and its running time equals its enabled time. Otherwise `count` misses
    /// bus locks.
    pub(crate) complete: bool,
}

/// Releases `cpu`'s counters, if it has them, and returns the final read of its tally. The
/// counters' mutex keeps [`read_counters`] from reading them as they go.
pub(crate) fn stop_counter(cpu: u32, _locked: &CountersLocked) -> Option<TallyRead> {
    let sampler = counter_slot(cpu)?.swap(ptr::null_mut(), Ordering::AcqRel);
    if !sampler.is_null() {
        release(sampler);
    }
    let tally = tally_slot(cpu)?.swap(ptr::null_mut(), Ordering::AcqRel);
    if tally.is_null() {
        return None;
    }
    let read = read(tally);
    release(tally);
    Some(read)
}

/// Whether `event` is in a state that counts (inactive or active).
fn counting(event: *mut bindings::perf_event) -> bool {
    // SAFETY: `event` is live (created, not yet released, by the caller's contract).
    unsafe { amd_sld_perf_event_state(event) >= PERF_EVENT_STATE_INACTIVE }
}

fn read(event: *mut bindings::perf_event) -> TallyRead {
    let (mut enabled, mut running) = (0, 0);
    // SAFETY: `event` is live (callers hold the counters' mutex, under which alone a
    // counter is released); process context, as the call may sleep.
    let count = unsafe { perf_event_read_value(event, &mut enabled, &mut running) };
    TallyRead {
        count,
        complete: counting(event) && running == enabled,
    }
}

/// Reads the live counters' exact counts: an IPI to each CPU with a counter, which may
/// sleep. The counters' mutex keeps every counter from being released meanwhile (CPU
/// hotplug and unload release them under it, with only the CPU hotplug lock held for
/// reading by `__cpuhp_remove_state()`).
/// `each` is called with each CPU that has a counter and the read of its tally.
pub(crate) fn read_counters(_locked: &CountersLocked, mut each: impl FnMut(u32, TallyRead)) {
    for (cpu, slot) in (0u32..).zip(TALLIES.iter()) {
        let event = slot.load(Ordering::Acquire);
        if event.is_null() {
            continue;
        }
        each(cpu, read(event));
    }
}

/// # Safety
///
/// Called by perf only, in NMI (PMU) or #DB (breakpoint) context, with valid arguments.
unsafe extern "C" fn on_overflow<H: PmuHandler>(
    event: *mut bindings::perf_event,
    _data: *mut PerfSampleData,
    regs: *mut bindings::pt_regs,
) {
    // Not the sample period: in frequency mode perf re-programs the period between
    // overflows, and the periods then sum to several times the count. The difference of
    // the count itself, which perf brings up to date before it calls this handler, sums
    // exactly to what the counter counted.
    // SAFETY: perf passes the live event that overflowed.
    let now = unsafe { amd_sld_perf_event_count(event) };
    let count = COUNT_AT_LAST_SAMPLE
        .get(super::this_cpu() as usize)
        .map_or(0, |last| {
            now.saturating_sub(last.swap(now, Ordering::Relaxed))
        });
    // SAFETY: perf passes the interrupted registers, valid for the call.
    let regs = unsafe { &*regs };
    // SAFETY: `current` is valid in any context; `flags` is a plain integer that only the
    // task itself changes, and it is interrupted.
    let flags = unsafe { (*bindings::get_current()).flags };
    // KVM sets PF_VCPU from guest entry until after the exit's NMI has been handled.
    let guest = flags & bindings::PF_VCPU != 0;
    let kernel_thread = flags & bindings::PF_KTHREAD != 0;
    let ip = if super::user_mode(regs) {
        regs.ip as u64
    } else if guest || kernel_thread {
        0
    } else {
        // SAFETY: `current` is a user task in kernel mode: its user registers are saved at
        // the top of its kernel stack, which lives as long as the task.
        unsafe { amd_sld_current_user_ip() }
    };
    let sample = Sample {
        count,
        guest,
        kernel_thread,
        ip,
    };
    H::on_sample(&sample);
}

// ---------------------------------------------------------------------------------------
// Work deferred from NMI to the sampled task.

/// Pending works at most: one per task with a sample not yet acted on.
const DEFERRED_SLOTS: usize = 64;

const FREE: u8 = 0;
const FILLING: u8 = 1;
const QUEUED: u8 = 2;

/// A preallocated task work: NMI context cannot allocate.
///
/// # Invariants
///
/// `head` belongs to the kernel while `state` is `QUEUED`, to whoever moved `state` from
/// `FREE` to `FILLING` until it is `QUEUED`; `task` is non-zero only while the work is
/// queued and has not started, and names the task it was queued on; `handler` is the
/// address of the function in `head` then.
struct DeferredSlot {
    head: KernelOwned<bindings::callback_head>,
    state: AtomicU8,
    task: AtomicUsize,
    handler: AtomicUsize,
    count: AtomicU64,
    action: AtomicU8,
    guest: AtomicU8,
    ip: AtomicU64,
    until_us: AtomicU64,
    seq: AtomicU64,
}

static SLOTS: [DeferredSlot; DEFERRED_SLOTS] = [const {
    DeferredSlot {
        head: KernelOwned::new(bindings::callback_head {
            next: ptr::null_mut(),
            func: None,
        }),
        state: AtomicU8::new(FREE),
        task: AtomicUsize::new(0),
        handler: AtomicUsize::new(0),
        count: AtomicU64::new(0),
        action: AtomicU8::new(0),
        guest: AtomicU8::new(0),
        ip: AtomicU64::new(0),
        until_us: AtomicU64::new(0),
        seq: AtomicU64::new(0),
    }
}; DEFERRED_SLOTS];

fn current_task() -> usize {
    // SAFETY: reading the current task pointer has no preconditions.
    unsafe { bindings::get_current() as usize }
}

/// Arranges for `H::on_return(work)` to run in the current task before it next
/// returns to user mode or enters its guest. NMI-safe: merges into the task's pending work
/// if it has one (the only race is with that very work starting in the interrupted task,
/// which closes its slot before it reads it), else takes a free slot. Fails if every slot is taken or the task is exiting.
pub(crate) fn defer_from_nmi<H: PmuHandler>(work: &NmiWork) -> Result {
    let me = current_task();
    let run: unsafe extern "C" fn(*mut bindings::callback_head) = run_deferred_from_nmi::<H>;
    if let Some(pending) = SLOTS.iter().find(|slot| {
        slot.task.load(Ordering::Acquire) == me
            && slot.handler.load(Ordering::Relaxed) == run as usize
    }) {
        pending.count.fetch_add(work.count, Ordering::Relaxed);
        pending.action.fetch_max(work.severity, Ordering::Relaxed);
        pending
            .guest
            .fetch_max(u8::from(work.guest), Ordering::Relaxed);
        pending.ip.store(work.ip, Ordering::Relaxed);
        pending.seq.store(work.seq, Ordering::Relaxed);
        pending.until_us.fetch_max(work.until_us, Ordering::Relaxed);
        return Ok(());
    }
    let slot = SLOTS
        .iter()
        .find(|slot| {
            slot.state
                .compare_exchange(FREE, FILLING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
        .ok_or(kernel::error::code::EBUSY)?;
    slot.count.store(work.count, Ordering::Relaxed);
    slot.action.store(work.severity, Ordering::Relaxed);
    slot.guest.store(u8::from(work.guest), Ordering::Relaxed);
    slot.ip.store(work.ip, Ordering::Relaxed);
    slot.seq.store(work.seq, Ordering::Relaxed);
    slot.until_us.store(work.until_us, Ordering::Relaxed);
    slot.handler.store(run as usize, Ordering::Relaxed);
    // SAFETY: the slot is ours (we moved it from FREE to FILLING) and the kernel is done
    // with its head: `task_work_run()` reads a work's fields before it calls the function.
    unsafe { (*slot.head.get()).func = Some(run) };
    slot.task.store(me, Ordering::Release);
    slot.state.store(QUEUED, Ordering::Release);
    DEFERRED_IN_FLIGHT.fetch_add(1, Ordering::Acquire);
    // SAFETY: the slot's head is ours (state was FREE) and static; NMI context.
    let status = unsafe { amd_sld_task_work_add_from_nmi(slot.head.get()) };
    if status != 0 {
        slot.task.store(0, Ordering::Release);
        slot.state.store(FREE, Ordering::Release);
        DEFERRED_IN_FLIGHT.fetch_sub(1, Ordering::Release);
        return Err(Error::from_errno(status));
    }
    Ok(())
}

/// # Safety
///
/// Called by `task_work_run()` only, with the head of a slot queued by `defer_from_nmi`.
unsafe extern "C" fn run_deferred_from_nmi<H: PmuHandler>(head: *mut bindings::callback_head) {
    let Some(slot) = SLOTS.iter().find(|slot| ptr::eq(slot.head.get(), head)) else {
        return;
    };
    // Closed first: a sample arriving from now on queues a new work rather than merging
    // into this one after it was read. Acquire keeps the reads below after the close (a
    // Release store alone would let them move above it, and an NMI in between would merge
    // a count, or a kill, into fields already read).
    slot.task.swap(0, Ordering::AcqRel);
    let work = NmiWork {
        count: slot.count.load(Ordering::Relaxed),
        severity: slot.action.load(Ordering::Relaxed),
        guest: slot.guest.load(Ordering::Relaxed) != 0,
        ip: slot.ip.load(Ordering::Relaxed),
        until_us: slot.until_us.load(Ordering::Relaxed),
        seq: slot.seq.load(Ordering::Relaxed),
    };
    slot.state.store(FREE, Ordering::Release);
    H::on_return(&work);
    // Last touch of module data: `wait_for_deferred_work()` treats zero as "all done".
    DEFERRED_IN_FLIGHT.fetch_sub(1, Ordering::Release);
}

/// One per slot: what [`kick_pending_works`] queues on the slot's task at unload. Each is
/// queued at most once per load, after the counters are gone.
static KICKS: [KernelOwned<bindings::callback_head>; DEFERRED_SLOTS] = [const {
    KernelOwned::new(bindings::callback_head {
        next: ptr::null_mut(),
        func: None,
    })
}; DEFERRED_SLOTS];

/// # Safety
///
/// Called by `task_work_run()` only, with a head of [`KICKS`].
unsafe extern "C" fn run_kick(_head: *mut bindings::callback_head) {
    // Nothing: the task runs its pending works in the same `task_work_run()`. Last touch of
    // module data, as in `run_deferred_from_nmi`.
    DEFERRED_IN_FLIGHT.fetch_sub(1, Ordering::Release);
}

/// At unload, once every counter is released (no NMI queues works any more): makes each
/// task with a pending work run it now rather than at its next return to user mode or guest
/// entry, which a task blocked in the kernel (a halted vCPU in `kvm_vcpu_block()`) may not
/// reach for a long time. Returns how many tasks were kicked. Process context.
pub(crate) fn kick_pending_works() -> usize {
    let mut kicked = 0;
    for (slot, kick) in SLOTS.iter().zip(KICKS.iter()) {
        if slot.state.load(Ordering::Acquire) != QUEUED {
            continue;
        }
        DEFERRED_IN_FLIGHT.fetch_add(1, Ordering::Acquire);
        // SAFETY: `slot.task` is an atomic word that glue.c reads once, under RCU; the kick's
        // head is static and not queued (one kick per slot per unload, and none before);
        // `run_kick` has the task-work signature and lives until `wait_for_deferred_work()`
        // has seen it finish. Process context.
        let status =
            unsafe { amd_sld_task_work_kick(slot.task.as_ptr().cast(), kick.get(), run_kick) };
        if status == 0 {
            kicked += 1;
        } else {
            // No task any more (its work started), or it is exiting (its works run at exit).
            DEFERRED_IN_FLIGHT.fetch_sub(1, Ordering::Release);
        }
    }
    kicked
}

const _: () = assert!(core::mem::size_of::<c_ulong>() == core::mem::size_of::<u64>());
const _: () = assert!(core::mem::size_of::<AtomicUsize>() == core::mem::size_of::<c_ulong>());
