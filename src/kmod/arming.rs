// SPDX-License-Identifier: GPL-2.0

//! Arming the detectors in effect on every online CPU, following CPU hotplug: Bus Lock
//! Detect (DEBUGCTL bit 2, put back as it was found), PMU counters (released, their count
//! folded into `bus_locks`), or both: the trap and counters of guest mode only
//! (`bld+pmu(guest)`).
//!
//! Arming and disarming happen in three places, never two at once on one CPU: the CPU
//! hotplug callbacks of a CPU coming or going (the hotplug lock held for writing); the same
//! callbacks run for every CPU by `init` and module exit when they set up and remove the
//! hotplug state (only the hotplug lock for reading); and a parameter write (the parameter
//! lock and [`CpusReadLocked`]). `init` holds the parameter lock throughout, and exit first
//! enters `Phase::Stopping` under it, after which writes are refused. The PMU counters'
//! own mutex (`ffi::CountersLocked`) also guards them against readers of `bus_locks`.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::capability::{self, GuestCounterFallback, Refusal};
use crate::control::{self, Phase};
use crate::ffi::{self, CountersLocked, Counting, CpusReadLocked};
use crate::ffi::{pr_err, pr_warn};
use crate::fmtbuf::SliceWriter;
use crate::hw;
use crate::sample;
use crate::stats;
use crate::x86::DEBUGCTL_BUS_LOCK_DETECT;
use kernel::bindings;
use kernel::error::{code, Result};

const MAX_CPUS: usize = bindings::CONFIG_NR_CPUS as usize;

struct CpuSlot {
    /// We set DEBUGCTL[2], or started a PMU counter, on this CPU and have not undone it yet.
    armed: AtomicBool,
    /// The trap is armed here (by us, or found armed): disarming restores DEBUGCTL.
    trap: AtomicBool,
    /// PMU counters run here: disarming releases them and folds their count.
    counters: AtomicBool,
    /// DEBUGCTL[2] was already set when we first armed this CPU: leave it set.
    found_armed: AtomicBool,
    /// The last disarm of this CPU put the bit back as found, and read it back so, or
    /// released its counter.
    restored: AtomicBool,
    /// Its pinned PMU tally was once found not counting (see `tally_incomplete`).
    uncounted: AtomicBool,
    /// Its PMU counters were once started counting host mode only, or its guest-only
    /// counters could not start (see `guest_uncounted`).
    guest_uncounted: AtomicBool,
}

impl CpuSlot {
    const fn new() -> Self {
        CpuSlot {
            armed: AtomicBool::new(false),
            trap: AtomicBool::new(false),
            counters: AtomicBool::new(false),
            found_armed: AtomicBool::new(false),
            restored: AtomicBool::new(false),
            uncounted: AtomicBool::new(false),
            guest_uncounted: AtomicBool::new(false),
        }
    }
}

static SLOTS: [CpuSlot; MAX_CPUS] = [const { CpuSlot::new() }; MAX_CPUS];

fn slot(cpu: u32) -> Option<&'static CpuSlot> {
    SLOTS.get(usize::try_from(cpu).ok()?)
}

/// Arms the detectors in effect on `cpu`: the trap, PMU counters, or both (the trap, and
/// counters of guest mode only). `lone`: the CPU is coming online by itself while running,
/// so a guest-only counter that cannot start leaves only this CPU's guests uncounted
/// (`capability::guest_counter_fallback`).
fn arm(cpu: u32, lone: bool) -> Result {
    let slot = slot(cpu).ok_or(code::EINVAL)?;
    let source = control::source();
    if source.traps() {
        arm_trap(cpu, slot)?;
    }
    if source.counts_with_pmu() {
        let guest_only = source.guest_only_counters();
        match start_counters(cpu, slot, guest_only) {
            Ok(()) => {}
            // The PMU alone: nothing else is armed here.
            Err(error) if !guest_only => return Err(error),
            Err(error) => match capability::guest_counter_fallback(error.to_errno(), lone) {
                GuestCounterFallback::ThisCpuUncounted => {
                    guest_uncounted(cpu, slot, Some(error.to_errno()))
                }
                GuestCounterFallback::TrapAlone => fall_back_to_trap_alone(error),
            },
        }
    }
    slot.restored.store(false, Ordering::Relaxed);
    slot.armed.store(true, Ordering::Release);
    Ok(())
}

fn start_counters(cpu: u32, slot: &CpuSlot, guest_only: bool) -> Result {
    let locked = CountersLocked::lock();
    control::set_guest_only_counters(cpu, guest_only);
    let counting =
        ffi::start_counter::<sample::Pmu>(cpu, &hw::pmu_counter_spec(), guest_only, &locked)?;
    if counting == Counting::HostOnly {
        guest_uncounted(cpu, slot, None);
    }
    slot.counters.store(true, Ordering::Release);
    Ok(())
}

/// Releases `cpu`'s counters, folding their count into `bus_locks` (and, for guest-only
/// counters, `guest_bus_locks`) under the counters' mutex: a reader sees the count live or
/// folded, once.
fn stop_counters(cpu: u32, slot: &CpuSlot) {
    let locked = CountersLocked::lock();
    if let Some(read) = ffi::stop_counter(cpu, &locked) {
        stats::BUS_LOCKS.add(read.count);
        if control::guest_only_counters(cpu) {
            stats::GUEST_BUS_LOCKS.add(read.count);
        }
        if !read.complete {
            tally_incomplete(cpu);
        }
    }
    slot.counters.store(false, Ordering::Release);
}

/// `bld+pmu(guest)` whose guest-only counters cannot start on every CPU (no core PMU, the
/// counters taken): every guest-only counter started so far is released and the trap runs
/// alone, saying so in one line. Called with the CPU hotplug lock held, by the load's
/// arming of every CPU or under the parameter lock.
fn fall_back_to_trap_alone(error: kernel::error::Error) {
    for cpu in 0..ffi::nr_cpu_ids() {
        if let Some(slot) = slot(cpu) {
            if slot.counters.load(Ordering::Acquire) {
                stop_counters(cpu, slot);
            }
        }
    }
    control::set_source(control::source().without_guest_pmu());
    pr_warn!(
        "the PMU cannot count ls_locks.bus_lock in guest mode here (error {}): Bus Lock Detect alone, bus locks in KVM guests are not covered\n",
        error.to_errno()
    );
}

fn arm_trap(cpu: u32, slot: &CpuSlot) -> Result {
    // Ours from before the bit is set: the first trap may follow at once.
    control::set_trap_armed(cpu, true);
    let update =
        hw::update_debugctl(cpu, |value| value | DEBUGCTL_BUS_LOCK_DETECT).inspect_err(|_| {
            control::set_trap_armed(cpu, false);
            pr_err!("CPU {}: cannot access DEBUGCTL\n", cpu)
        })?;
    let found_armed = update.before & DEBUGCTL_BUS_LOCK_DETECT != 0;
    if found_armed {
        // Someone else armed it: their traps, not ours.
        control::set_trap_armed(cpu, false);
    }
    if found_armed && control::phase() == Phase::Loading {
        pr_err!("{}\n", Refusal::AlreadyArmed { cpu });
        return Err(code::EBUSY);
    }
    if update.after & DEBUGCTL_BUS_LOCK_DETECT == 0 {
        control::set_trap_armed(cpu, false);
        pr_err!(
            "CPU {}: DEBUGCTL ignored the write of bit 2 (read back {:#x})\n",
            cpu,
            update.after
        );
        return Err(code::EIO);
    }
    slot.found_armed.store(found_armed, Ordering::Relaxed);
    slot.trap.store(true, Ordering::Release);
    Ok(())
}

fn disarm(cpu: u32) {
    let Some(slot) = slot(cpu) else { return };
    if !slot.armed.swap(false, Ordering::AcqRel) {
        return;
    }
    if slot.counters.load(Ordering::Acquire) {
        stop_counters(cpu, slot);
    }
    if !slot.trap.swap(false, Ordering::AcqRel) || slot.found_armed.load(Ordering::Relaxed) {
        slot.restored.store(true, Ordering::Relaxed);
        return;
    }
    match hw::update_debugctl(cpu, |value| value & !DEBUGCTL_BUS_LOCK_DETECT) {
        Ok(update) if update.after & DEBUGCTL_BUS_LOCK_DETECT == 0 => {
            control::set_trap_armed(cpu, false);
            slot.restored.store(true, Ordering::Relaxed);
        }
        Ok(update) => pr_err!(
            "CPU {}: DEBUGCTL bit 2 stuck set (read back {:#x})\n",
            cpu,
            update.after
        ),
        Err(_) => pr_err!("CPU {}: cannot access DEBUGCTL to disarm it\n", cpu),
    }
}

/// Hotplug callback, and at load the arming of every online CPU. At load an error fails
/// the load (and the kernel disarms the CPUs already done); later, a CPU that cannot be
/// armed still comes online, unarmed, and `armed_cpus` shows it.
pub(crate) fn on_cpu_online(cpu: u32) -> Result {
    // Stopping: unloading, or disarmed for a reboot or kexec; nothing is armed again.
    if !control::policy().arms_detection() || control::phase() == Phase::Stopping {
        return Ok(());
    }
    match arm(cpu, control::phase() == Phase::Running) {
        Ok(()) => Ok(()),
        Err(error) if control::phase() == Phase::Loading => Err(error),
        Err(error) => {
            pr_warn!(
                "CPU {} came online without bus-lock detection ({:?})\n",
                cpu,
                error
            );
            Ok(())
        }
    }
}

/// Hotplug callback for a CPU going offline, and at unload for every online CPU: its bit
/// goes back to what it was when we armed it.
pub(crate) fn on_cpu_offline(cpu: u32) {
    disarm(cpu);
}

/// Arms every online CPU, or none: on failure, the CPUs armed by this call are disarmed.
pub(crate) fn arm_online(cpus: &CpusReadLocked) -> Result {
    for cpu in cpus.online() {
        if let Err(error) = arm(cpu, false) {
            cpus.online()
                .take_while(|&done| done != cpu)
                .for_each(disarm);
            return Err(error);
        }
    }
    Ok(())
}

/// Disarms every online CPU.
pub(crate) fn disarm_online(cpus: &CpusReadLocked) {
    cpus.online().for_each(disarm);
}

/// The CPUs armed now, ascending.
pub(crate) fn armed_cpus() -> impl Iterator<Item = u32> {
    cpus_where(|slot| slot.armed.load(Ordering::Acquire))
}

/// Writes the CPUs armed now as a cpulist, and a newline: the `armed_cpus` file.
pub(crate) fn show_armed_cpus(out: &mut SliceWriter<'_>) -> fmt::Result {
    show_cpus_where(out, |slot| slot.armed.load(Ordering::Acquire))
}

/// Writes the CPUs whose slot passes `test` as a cpulist, and a newline: a cpulist file.
fn show_cpus_where(out: &mut SliceWriter<'_>, test: fn(&CpuSlot) -> bool) -> fmt::Result {
    crate::cpulist::write(out, cpus_where(test))?;
    out.write_char('\n')
}

/// The CPUs whose last disarm restored DEBUGCTL as found, ascending.
pub(crate) fn restored_cpus() -> impl Iterator<Item = u32> {
    cpus_where(|slot| slot.restored.load(Ordering::Relaxed))
}

fn cpus_where(test: fn(&CpuSlot) -> bool) -> impl Iterator<Item = u32> {
    (0..ffi::nr_cpu_ids()).filter(move |&cpu| slot(cpu).is_some_and(test))
}

/// Notes that `cpu`'s pinned tally did not count all the time it was enabled (error state:
/// it lost its counter; or it was not always scheduled): `bus_locks` misses bus locks there.
/// Logged once per CPU per load; shown by `uncounted_cpus`.
fn tally_incomplete(cpu: u32) {
    if let Some(slot) = slot(cpu) {
        if !slot.uncounted.swap(true, Ordering::Relaxed) {
            pr_warn!(
                "CPU {}: the pinned bus-lock counter did not count all the time: bus_locks undercounts\n",
                cpu
            );
        }
    }
}

/// Whether the line of [`guest_uncounted`] was logged in this load.
static GUEST_UNCOUNTED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Notes that guest-mode bus locks go uncounted on `cpu` until it is armed again, and why:
/// perf refused counters that count guest mode, as it does on 7.0+ while VMs with a mediated
/// vPMU exist (their guests own the PMU while they run; `perf_create_mediated_pmu()` in turn
/// refuses those VMs while counters counting guest mode exist), and the PMU source counts
/// host mode only there; or a guest-only counter beside the trap could not start on a CPU
/// coming online (`guest_only_failed`, perf's error). Logged once per load; shown by
/// `guest_uncounted_cpus`.
fn guest_uncounted(cpu: u32, slot: &CpuSlot, guest_only_failed: Option<i32>) {
    slot.guest_uncounted.store(true, Ordering::Relaxed);
    if GUEST_UNCOUNTED_LOGGED.swap(true, Ordering::Relaxed) {
        return;
    }
    match guest_only_failed {
        None => pr_warn!(
            "CPU {}: perf refuses counters of guest mode (EOPNOTSUPP: VMs with a mediated vPMU exist): counting host mode only, guest-mode bus locks uncounted (guest_uncounted_cpus)\n",
            cpu
        ),
        Some(errno) => pr_warn!(
            "CPU {}: the guest-only PMU counters cannot start (error {}): Bus Lock Detect armed, guest-mode bus locks uncounted (guest_uncounted_cpus)\n",
            cpu,
            errno
        ),
    }
}

/// Writes the CPUs where guest mode once went uncounted, as a cpulist,
/// and a newline: the `guest_uncounted_cpus` file.
pub(crate) fn show_guest_uncounted_cpus(out: &mut SliceWriter<'_>) -> fmt::Result {
    show_cpus_where(out, |slot| slot.guest_uncounted.load(Ordering::Relaxed))
}

/// Writes the CPUs whose tally was found not counting, as a cpulist, and a newline: the
/// `uncounted_cpus` file.
pub(crate) fn show_uncounted_cpus(out: &mut SliceWriter<'_>) -> fmt::Result {
    show_cpus_where(out, |slot| slot.uncounted.load(Ordering::Relaxed))
}

/// How often, at most, a reader without `CAP_SYS_ADMIN` has the live counters read:
/// others get the total as last read (docs/ABI/sysfs-kernel-amd_sld).
const UNPRIVILEGED_REFRESH_MS: u64 = 1000;

/// The totals as last read from the live counters (`bus_locks`, `guest_bus_locks`), and
/// when (ms of `CLOCK_MONOTONIC`).
static FOLDED: AtomicU64 = AtomicU64::new(0);
static GUEST_FOLDED: AtomicU64 = AtomicU64::new(0);
static FOLDED_AT_MS: AtomicU64 = AtomicU64::new(0);

/// Bus locks counted so far: the traps, plus the released counters' counts, plus the live
/// counters'. Process context; may sleep. See [`totals`].
pub(crate) fn bus_locks() -> u64 {
    totals().0
}

/// Bus locks in guest mode so far: with the PMU alone the sum of its guest samples'
/// counts; with `bld+pmu(guest)` the guest-only counters' exact counts. See [`totals`].
pub(crate) fn guest_bus_locks() -> u64 {
    totals().1
}

/// `bus_locks` and `guest_bus_locks`. The live counters are read (an IPI to each CPU) for a
/// reader with `CAP_SYS_ADMIN`, exact; for others at most once per
/// [`UNPRIVILEGED_REFRESH_MS`] system-wide, and never waiting: meanwhile they get the last
/// totals read. No parameter lock and no CPU hotplug lock: the counters' mutex alone keeps
/// the counters alive while they are read, so a reader can neither stall a failing load
/// (which removes these files with the parameter lock held) nor read a counter that the
/// unload is releasing.
fn totals() -> (u64, u64) {
    // With the trap alone, every count is in the folded counters; a switch to the trap
    // stops the counters (folding their counts) before the source says so.
    if !control::source().counts_with_pmu() {
        return (stats::BUS_LOCKS.get(), stats::GUEST_BUS_LOCKS.get());
    }
    let now = ffi::now_ms();
    let locked = if ffi::current_is_admin() {
        Some(CountersLocked::lock())
    } else if now.saturating_sub(FOLDED_AT_MS.load(Ordering::Relaxed)) >= UNPRIVILEGED_REFRESH_MS {
        CountersLocked::try_lock()
    } else {
        None
    };
    match locked {
        Some(locked) => {
            let (mut live, mut live_guest) = (0, 0);
            ffi::read_counters(&locked, |cpu, read| {
                if !read.complete {
                    tally_incomplete(cpu);
                }
                live += read.count;
                if control::guest_only_counters(cpu) {
                    live_guest += read.count;
                }
            });
            let total = stats::BUS_LOCKS.get() + live;
            let guest = stats::GUEST_BUS_LOCKS.get() + live_guest;
            FOLDED.fetch_max(total, Ordering::Relaxed);
            GUEST_FOLDED.fetch_max(guest, Ordering::Relaxed);
            FOLDED_AT_MS.store(now, Ordering::Relaxed);
            (total, guest)
        }
        None => (
            FOLDED.load(Ordering::Relaxed).max(stats::BUS_LOCKS.get()),
            GUEST_FOLDED
                .load(Ordering::Relaxed)
                .max(stats::GUEST_BUS_LOCKS.get()),
        ),
    }
}
