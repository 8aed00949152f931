// SPDX-License-Identifier: GPL-2.0

//! The policy in force and the module's phase. Every change goes through [`store`], which
//! the kernel calls with the module's parameter lock held (or, at insmod, before anything
//! else can run); module start-up and shut-down take the same lock.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use kernel::error::{code, Result};
use kernel::prelude::*;

use crate::capability::{self, Requested};
use crate::escape::Escaped;
use crate::ffi::CpusReadLocked;
use crate::fmtbuf::SliceWriter;
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

fn set(policy: Policy) {
    if let Policy::Ratelimit(_) = policy {
        THROTTLE.reset();
    }
    POLICY.store(policy.to_bits(), Ordering::Release);
}

/// Parses and applies a write to the `split_lock_detect` parameter.
///
/// Invalid input changes nothing and is `-EINVAL`. While running, turning detection on arms
/// every online CPU first and, if any CPU refuses, disarms the ones it armed and keeps the
/// old policy: a change is all or nothing.
pub(crate) fn store(input: &[u8]) -> Result {
    let new = Policy::parse(input).map_err(|error| {
        pr_err!(
            "invalid split_lock_detect '{}': {}\n",
            Escaped(input),
            error
        );
        code::EINVAL
    })?;
    match phase() {
        Phase::Loading => {
            set(new);
            Ok(())
        }
        Phase::Stopping => Err(code::ENODEV),
        Phase::Running => apply(new),
    }
}

fn apply(new: Policy) -> Result {
    let old = policy();
    if old == new {
        return Ok(());
    }
    let cpus = CpusReadLocked::lock();
    if new.arms_detection() && !old.arms_detection() {
        crate::arming::arm_online(&cpus)?;
    }
    set(new);
    if !new.arms_detection() && old.arms_detection() {
        crate::arming::disarm_online(&cpus);
    }
    pr_info!("split_lock_detect: {} -> {}\n", old, new);
    Ok(())
}

/// Writes the canonical form of the policy in force, and a newline.
pub(crate) fn show(out: &mut SliceWriter<'_>) -> fmt::Result {
    write!(out, "{}", policy())?;
    out.write_char('\n')
}

/// The source in effect; readable from any context.
pub(crate) fn source() -> Source {
    if SOURCE_IS_PMU.load(Ordering::Acquire) {
        Source::Pmu
    } else {
        Source::Bld
    }
}

fn set_source(source: Source) {
    SOURCE_IS_PMU.store(source == Source::Pmu, Ordering::Release);
}

/// The source asked for with the parameter.
pub(crate) fn requested() -> Requested {
    Requested::from_bits(REQUESTED.load(Ordering::Acquire)).unwrap_or_default()
}

/// Decides the source for the requested one at load, before anything is armed.
pub(crate) fn choose_source() -> core::result::Result<Source, capability::Refusal> {
    let source = capability::decide(&crate::hw::facts(), requested())?;
    set_source(source);
    Ok(source)
}

/// Parses and applies a write to the `source` parameter, all or nothing: while running, the
/// old source is disarmed and the new one armed on every online CPU; if the new one cannot
/// start, the old one is armed again and the write fails.
pub(crate) fn store_source(input: &[u8]) -> Result {
    let requested = Requested::parse(input).map_err(|error| {
        pr_err!("invalid source '{}': {}\n", Escaped(input), error);
        code::EINVAL
    })?;
    match phase() {
        Phase::Loading => {
            REQUESTED.store(requested.to_bits(), Ordering::Release);
            Ok(())
        }
        Phase::Stopping => Err(code::ENODEV),
        Phase::Running => switch_source(requested),
    }
}

fn switch_source(requested: Requested) -> Result {
    let new = capability::decide(&crate::hw::facts(), requested).map_err(|refusal| {
        pr_err!("source={}: {}\n", requested, refusal);
        code::ENODEV
    })?;
    let old = source();
    if new != old {
        let cpus = CpusReadLocked::lock();
        let detecting = policy().arms_detection();
        if detecting {
            crate::arming::disarm_online(&cpus);
        }
        set_source(new);
        if detecting {
            if let Err(error) = crate::arming::arm_online(&cpus) {
                pr_err!(
                    "source={}: cannot start it ({:?}); keeping {}\n",
                    requested,
                    error,
                    old.as_str()
                );
                set_source(old);
                if crate::arming::arm_online(&cpus).is_err() {
                    pr_err!("cannot re-arm {} either: detection is off\n", old.as_str());
                }
                return Err(error);
            }
        }
        pr_info!("source: {} -> {}\n", old.as_str(), new.as_str());
    }
    REQUESTED.store(requested.to_bits(), Ordering::Release);
    Ok(())
}

/// Writes the requested source, and a newline.
pub(crate) fn show_source(out: &mut SliceWriter<'_>) -> fmt::Result {
    writeln!(out, "{}", requested())
}
