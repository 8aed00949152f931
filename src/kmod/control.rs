// SPDX-License-Identifier: GPL-2.0

//! The policy in force and the module's phase. Every change goes through [`store`], which
//! the kernel calls with the module's parameter lock held (or, at insmod, before anything
//! else can run); module start-up and shut-down take the same lock.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use kernel::error::{code, Result};
use kernel::prelude::*;

use crate::escape::Escaped;
use crate::ffi::CpusReadLocked;
use crate::fmtbuf::SliceWriter;
use crate::policy::Policy;
use crate::ratelimit::RateLimiter;

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

/// The system-wide budget of `ratelimit:N`: N bus locks per second, as the kernel's
/// `bld_ratelimit` (`ratelimit_state_init(&bld_ratelimit, HZ, N)`).
pub(crate) static THROTTLE: RateLimiter = RateLimiter::new(1000, 0);

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
    if let Policy::Ratelimit(rate) = policy {
        THROTTLE.reset(rate.per_second());
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
