// SPDX-License-Identifier: GPL-2.0

//! `ratelimit:N`: an over-budget task sleeps, in its own process context on the way back to
//! user mode, until the system-wide budget lets it through, as the kernel's
//! `handle_bus_lock()` does with `while (!__ratelimit(&bld_ratelimit)) msleep(20);`.
//!
//! Unlike `msleep()`, the sleep is killable: an administrator can always kill a throttled
//! task. Other signals do not end it, so signals cannot be used to escape the budget.

use crate::control::{self, THROTTLE};
use crate::ffi;
use crate::stats;

/// The kernel's retry period in `handle_bus_lock()`.
pub(crate) const RETRY_MS: u32 = 20;

/// Runs as task work of the throttled task (see `crate::ffi::defer_to_user_return`).
pub(crate) fn on_return_to_user(user_ip: u64) {
    let start = ffi::now_ms();
    while control::throttling()
        && !THROTTLE.check(ffi::now_ms()).passed()
        && !ffi::fatal_signal_pending()
    {
        ffi::sleep_killable_ms(RETRY_MS);
    }
    stats::THROTTLED_MS.add(ffi::now_ms().saturating_sub(start));
    crate::trap::warn(user_ip);
}
