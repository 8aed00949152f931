// SPDX-License-Identifier: GPL-2.0

//! Clocks and sleeping.

use kernel::bindings;
use kernel::ffi::c_int;

extern "C" {
    fn amd_sld_sleep_killable_until(expires_ns: i64, slack_ns: u64) -> c_int;
}

/// Monotonic nanoseconds (`ktime_get_mono_fast_ns()`), safe in any context, NMI included:
/// the one clock read of a trap, from which its other times derive.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: `ktime_get_mono_fast_ns()` has no preconditions and is NMI-safe.
    unsafe { bindings::ktime_get_mono_fast_ns() }
}

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

/// Microseconds of `CLOCK_MONOTONIC`, safe in any context, NMI included.
pub(crate) fn now_us() -> u64 {
    // SAFETY: `ktime_get_mono_fast_ns()` has no preconditions and is NMI-safe.
    unsafe { bindings::ktime_get_mono_fast_ns() / 1_000 }
}

/// Milliseconds by the tick (`jiffies`, as the kernel's own `___ratelimit()` counts its
/// windows): one load, no clock source read, safe in any context. Its own time base (not
/// `CLOCK_MONOTONIC`'s), with the resolution of a tick: for intervals only.
pub(crate) fn coarse_ms() -> u64 {
    // SAFETY: `jiffies` is a kernel variable, always mapped, written by the tick only; a
    // volatile read of an aligned machine word is not torn on the 64-bit kernels amd_sld
    // builds for (`jiffies` is the low word of `jiffies_64` there).
    let ticks = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(bindings::jiffies)) };
    // 64 bits: no wrap for the life of a system, even from INITIAL_JIFFIES.
    const HZ: u64 = bindings::CONFIG_HZ as u64;
    if 1000 % HZ == 0 {
        (ticks as u64).wrapping_mul(1000 / HZ)
    } else {
        (ticks as u64).wrapping_mul(1000) / HZ
    }
}
