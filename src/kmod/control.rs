// SPDX-License-Identifier: GPL-2.0

//! The policy in force, the source in effect and the module's phase: the domain's state.
//! Every change goes through `crate::params`, which the kernel calls with the module's
//! parameter lock held (or, at insmod, before anything else can run); module start-up and
//! shut-down take the same lock.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use crate::capability::{self, Requested};
use crate::policy::Policy;
use crate::ratelimit::Pacer;
use crate::record::Source;

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
/// The source in effect: `true` for the PMU.
static SOURCE_IS_PMU: AtomicBool = AtomicBool::new(false);

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

/// Enters [`Phase::Stopping`]. Called at unload with the parameter lock held.
pub(crate) fn stop() {
    PHASE.store(Phase::Stopping as u8, Ordering::Release);
}

/// The policy in force; readable from any context.
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

/// The source in effect; readable from any context.
pub(crate) fn source() -> Source {
    if SOURCE_IS_PMU.load(Ordering::Acquire) {
        Source::Pmu
    } else {
        Source::Bld
    }
}

/// Puts `source` in effect. The caller holds the parameter lock.
pub(crate) fn set_source(source: Source) {
    SOURCE_IS_PMU.store(source == Source::Pmu, Ordering::Release);
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
pub(crate) fn choose_source() -> core::result::Result<Source, capability::Refusal> {
    let source = capability::decide(&crate::hw::facts(), requested())?;
    set_source(source);
    Ok(source)
}
