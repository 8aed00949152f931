// SPDX-License-Identifier: GPL-2.0

//! `ratelimit:N`: an over-budget task sleeps, in its own process context on the way back to
//! user mode, until its turn in the system-wide budget, where the kernel's
//! `handle_bus_lock()` would `msleep(20)` until `__ratelimit(&bld_ratelimit)` let it go.
//!
//! Unlike `msleep()`, the sleep is killable: an administrator can always kill a throttled
//! task. Other signals do not end it, so signals cannot be used to escape the budget.

use crate::control;
use crate::ffi;
use crate::stats;

/// The longest single sleep: a policy change or an unload is noticed within this, as the
/// kernel's retry period in `handle_bus_lock()`.
const RETRY_MS: u64 = 20;

/// Sleeps until `until_us` of `CLOCK_MONOTONIC`, in steps of at most [`RETRY_MS`]; returns
/// early when the policy stops throttling, at unload, or on a fatal signal. Counts the
/// time slept in `throttled_ms`.
pub(crate) fn sleep_until(until_us: u64) {
    let start_ms = ffi::now_ms();
    while control::throttling() && !ffi::fatal_signal_pending() {
        let now_us = ffi::now_us();
        if now_us >= until_us {
            break;
        }
        ffi::sleep_killable_until_us(until_us.min(now_us + RETRY_MS * 1_000));
    }
    stats::THROTTLED_MS.add(ffi::now_ms().saturating_sub(start_ms));
}
