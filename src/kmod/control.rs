// SPDX-License-Identifier: GPL-2.0

//! The policy in force, the source in effect and the module's phase: the domain's state.
//! Every change goes through `crate::params`, which the kernel calls with the module's
//! parameter lock held (or, at insmod, before anything else can run); module start-up and
//! shut-down take the same lock.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use kernel::bindings;

use crate::capability::{self, InEffect, Requested};
use crate::policy::Policy;
use crate::ratelimit::Pacer;

/// Where the module is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// insmod: parameters are being parsed and `init` is running.
    Loading = 0,
    /// Armed per policy; policy changes apply at once.
    Running = 1,
    /// rmmod: tearing down; policy changes are refused.
    Stopping = 2,
}

static PHASE: AtomicU8 = AtomicU8::new(Phase::Loading as u8);
static POLICY: AtomicU32 = AtomicU32::new(Policy::Warn.to_bits());
static REQUESTED: AtomicU8 = AtomicU8::new(Requested::Auto.to_bits());
/// The detectors in effect, as [`InEffect::to_bits`].
static SOURCE: AtomicU8 = AtomicU8::new(InEffect::Bld.to_bits());
/// `split_lock_detect=` was given at insmod: it, not the boot option, is the policy.
static POLICY_GIVEN: AtomicBool = AtomicBool::new(false);

/// Per CPU: amd_sld set DEBUGCTL[2] there itself (not found set) and has not cleared it.
/// Set before the bit, cleared after it: a bus-lock #DB on a CPU without it is someone
/// else's (the kernel's own, on 6.13+), and the die notifier leaves it alone.
static TRAP_ARMED: PerCpuFlag = PerCpuFlag::new();

/// Per CPU: its PMU counters count guest mode only, beside the trap (`bld+pmu(guest)`):
/// their counts are `guest_bus_locks` exactly, and their samples are not added to it again.
/// Set before the counters start.
static GUEST_ONLY_COUNTERS: PerCpuFlag = PerCpuFlag::new();

/// A flag per CPU number, readable from any context; a CPU beyond the array reads false.
struct PerCpuFlag([AtomicBool; bindings::CONFIG_NR_CPUS as usize]);

impl PerCpuFlag {
    const fn new() -> Self {
        PerCpuFlag([const { AtomicBool::new(false) }; bindings::CONFIG_NR_CPUS as usize])
    }

    /// Release: what the caller did before is seen by a reader of the new value.
    fn set(&self, cpu: u32, value: bool) {
        if let Some(flag) = self.0.get(cpu as usize) {
            flag.store(value, Ordering::Release);
        }
    }

    fn get(&self, cpu: u32) -> bool {
        self.0
            .get(cpu as usize)
            .is_some_and(|flag| flag.load(Ordering::Acquire))
    }
}

/// The system-wide budget of `ratelimit:N`, N bus locks per second, shared by both sources:
/// the kernel's `bld_ratelimit` budget, paced instead of windowed (docs/design.md).
pub(crate) static THROTTLE: Pacer = Pacer::new();

/// The module's phase.
pub(crate) fn phase() -> Phase {
    match PHASE.load(Ordering::Acquire) {
        0 => Phase::Loading,
        1 => Phase::Running,
        _ => Phase::Stopping,
    }
}

/// Enters [`Phase::Running`]. Called by `init` with the parameter lock held.
pub(crate) fn start() {
    PHASE.store(Phase::Running as u8, Ordering::Release);
}

/// Enters [`Phase::Stopping`]. Called at unload, and when a failed load unwinds, with the
/// parameter lock held.
pub(crate) fn stop() {
    PHASE.store(Phase::Stopping as u8, Ordering::Release);
}

/// The policy in force; readable from any context. Inlined: the trap reads it every time.
#[inline]
pub(crate) fn policy() -> Policy {
    Policy::from_bits(POLICY.load(Ordering::Acquire)).unwrap_or_default()
}

/// Whether throttled tasks should keep waiting for budget.
pub(crate) fn throttling() -> bool {
    matches!(policy(), Policy::Ratelimit(_)) && phase() != Phase::Stopping
}

/// Puts `policy` in force. The caller holds the parameter lock.
pub(crate) fn set_policy(policy: Policy) {
    if let Policy::Ratelimit(_) = policy {
        THROTTLE.reset();
    }
    POLICY.store(policy.to_bits(), Ordering::Release);
}

/// Records that `split_lock_detect=` was given at insmod.
pub(crate) fn set_policy_given() {
    POLICY_GIVEN.store(true, Ordering::Relaxed);
}

/// Whether `split_lock_detect=` was given at insmod.
pub(crate) fn policy_given() -> bool {
    POLICY_GIVEN.load(Ordering::Relaxed)
}

/// Records whether this module's trap is armed on `cpu` (see [`TRAP_ARMED`]).
pub(crate) fn set_trap_armed(cpu: u32, armed: bool) {
    TRAP_ARMED.set(cpu, armed);
}

/// Whether this module armed the Bus Lock Detect trap on `cpu`; any context.
#[inline]
pub(crate) fn trap_armed(cpu: u32) -> bool {
    TRAP_ARMED.get(cpu)
}

/// Records whether `cpu`'s PMU counters count guest mode only (see [`GUEST_ONLY_COUNTERS`]).
pub(crate) fn set_guest_only_counters(cpu: u32, guest_only: bool) {
    GUEST_ONLY_COUNTERS.set(cpu, guest_only);
}

/// Whether `cpu`'s PMU counters count guest mode only; any context, the overflow NMI
/// included.
pub(crate) fn guest_only_counters(cpu: u32) -> bool {
    GUEST_ONLY_COUNTERS.get(cpu)
}

/// The detectors in effect; readable from any context.
pub(crate) fn source() -> InEffect {
    InEffect::from_bits(SOURCE.load(Ordering::Acquire)).unwrap_or(InEffect::Bld)
}

/// Puts `source` in effect. The caller holds the parameter lock (or, for the fall-back to
/// the trap alone from a CPU coming online at load, is that load's hotplug callback).
pub(crate) fn set_source(source: InEffect) {
    SOURCE.store(source.to_bits(), Ordering::Release);
}

/// The source asked for with the parameter.
pub(crate) fn requested() -> Requested {
    Requested::from_bits(REQUESTED.load(Ordering::Acquire)).unwrap_or_default()
}

/// Records the source asked for. The caller holds the parameter lock.
pub(crate) fn set_requested(requested: Requested) {
    REQUESTED.store(requested.to_bits(), Ordering::Release);
}

/// Decides the source for the requested one at load, before anything is armed.
pub(crate) fn choose_source() -> core::result::Result<capability::Decision, capability::Refusal> {
    let decision = capability::decide(&crate::hw::facts(), requested())?;
    set_source(decision.source);
    Ok(decision)
}
