// SPDX-License-Identifier: GPL-2.0

//! What happens when a task takes a bus-lock trap: the policy, applied in the #DB notifier.
//!
//! This runs in `exc_debug_user()` before it enables interrupts: nothing here may sleep,
//! spin on a lock or allocate anything but GFP_ATOMIC. Sleeping (`ratelimit`) is deferred
//! to the task's own return to user mode ([`on_return_to_user`], `crate::throttle`).
//!
//! The hot path (docs/design.md, "The trap's hot path") writes only this CPU's data: its
//! counters, its ring and sketch, its log-suppression count. A trap identical to the
//! CPU's open record (same thread, IP and action) is only added to its count: no clock, no
//! record, no task work. Otherwise it writes a record (one clock read), and queues a task
//! work only where the policy needs one (`ratelimit`) or this CPU's mapping cache missed.

use crate::control::{self, THROTTLE};
use crate::escape::{until_nul, Escaped};
use crate::eventlog::PackedMapping;
use crate::ffi::{self, DebugTrap};
use crate::ffi::{pr_warn, pr_warn_as, KERNEL_SLD_PREFIX};
use crate::policy::Policy;
use crate::ratelimit::{Admission, RateLimiter};
use crate::record::{Action, Source};
use crate::report::{self, Context, Sighting};
use crate::stats::{self, Counts};

/// The log's own limit, that of `pr_warn_ratelimited()`: 10 lines per 5 s
/// (`DEFAULT_RATELIMIT_BURST`, `DEFAULT_RATELIMIT_INTERVAL`).
static LOG: RateLimiter = RateLimiter::new(5000, 10);

/// Entry from the die notifier for every user-mode #DB.
pub(crate) fn on_user_debug_trap(trap: &mut DebugTrap<'_>) {
    // Only where amd_sld armed the trap itself: elsewhere (the PMU source, policy off, a
    // CPU found armed, a kernel that arms it) the bus-lock #DB is the kernel's to handle.
    if !control::trap_armed(ffi::this_cpu()) {
        return;
    }
    // Consumed here, so that the kernel's own handle_bus_lock() never sees it.
    if !crate::dr6::take_bus_lock(trap.dr6()) {
        return;
    }
    let counts = stats::this_cpu();
    stats::BUS_LOCKS.add_to(counts, 1);
    let user_ip = trap.user_ip();
    // The policy first: but for throttling, it needs no clock.
    let action = match control::policy() {
        Policy::Off => Action::None,
        Policy::Warn => {
            warn(counts, user_ip);
            Action::Warn
        }
        Policy::Fatal => {
            stats::KILLED.add_to(counts, 1);
            log_fatal(counts, user_ip);
            ffi::force_sigbus_current();
            Action::Kill
        }
        Policy::Ratelimit(rate) => match THROTTLE.admit_one(ffi::now_us(), rate.per_second()) {
            None => {
                warn(counts, user_ip);
                Action::Warn
            }
            Some(until_us) => {
                throttle(counts, user_ip, until_us, rate.per_second());
                return;
            }
        },
    };
    // The same thread at the same IP with the same action as this CPU's open record: one
    // more to its count, nothing else to write.
    if report::coalesce_trap(user_ip, action) {
        return;
    }
    record(user_ip, action);
}

/// Writes a new record of the current task's trap at `user_ip`, dealt with by `action`
/// (not `Throttle`, whose work completes the record itself). Numbered before the clock is
/// read, the one read of this trap.
fn record(user_ip: u64, action: Action) {
    let record = report::begin(Context::Trap);
    let map = record.cached_mapping(user_ip);
    if map.is_none() && user_ip != 0 {
        // A miss: the task's work looks the mapping up and fills the cache. Best effort:
        // without memory, or for an exiting task, the record has no mapping.
        let _ = ffi::defer_to_user_return(map_on_return_to_user, [record.id(), user_ip, 0]);
    }
    finish(record, user_ip, action, map);
}

fn finish(record: report::Recording, user_ip: u64, action: Action, map: Option<PackedMapping>) {
    let sighting = Sighting {
        source: Source::Bld,
        guest: false,
        ip: user_ip,
        count: 1,
    };
    record.finish(&sighting, action, map);
}

/// `ratelimit:N` over budget: the task sleeps until `until_us` on its way back to user mode,
/// in a work that also completes the record (a record of its own: a throttled trap is never
/// added to an open one).
fn throttle(counts: Option<&Counts>, user_ip: u64, until_us: u64, per_second: u32) {
    let record = report::begin(Context::Trap);
    let map = record.cached_mapping(user_ip);
    let action =
        if ffi::defer_to_user_return(on_return_to_user, [record.id(), user_ip, until_us]).is_ok() {
            stats::THROTTLED.add_to(counts, 1);
            Action::Throttle
        } else {
            // No memory for the work item, or the task is exiting: it cannot be made to sleep,
            // but it is still reported; its slot goes back to the budget.
            THROTTLE.refund(1, per_second);
            warn(counts, user_ip);
            Action::Warn
        };
    finish(record, user_ip, action, map);
}

/// Runs as task work of the trapped task (see `ffi::defer_to_user_return`): adds the
/// mapping of the IP to record `id`.
fn map_on_return_to_user([id, user_ip, _]: [u64; 3]) {
    report::complete_current(id, user_ip);
}

/// Runs as task work of the throttled task: adds the mapping to record `id`, sleeps until
/// its bus lock's turn, then warns as the kernel does once a task is let through.
fn on_return_to_user([id, user_ip, until_us]: [u64; 3]) {
    report::complete_current(id, user_ip);
    crate::throttle::sleep_until(until_us);
    warn(stats::this_cpu(), user_ip);
}

/// The `warn` action, also taken by `ratelimit` once a task is under budget. Inlined: the
/// suppressed line of a storm is a counter and a read of the limiter (the line itself is
/// printed out of line, [`log_now`]).
#[inline(always)]
fn warn(counts: Option<&Counts>, user_ip: u64) {
    stats::WARNED.add_to(counts, 1);
    log_limited_at(counts, || {
        let comm = ffi::current_comm();
        let (pid, _) = ffi::current_ids();
        // The kernel's own line, its prefix included (bus_lock.c's pr_fmt), so that alerts
        // written for 6.13+ (`x86/split lock detection: #DB: ...`) match amd_sld's too.
        pr_warn_as!(
            KERNEL_SLD_PREFIX,
            "#DB: {}/{} took a bus_lock trap at address: {:#x}\n",
            Escaped(until_nul(&comm)),
            pid,
            user_ip
        );
    });
}

/// The `fatal` action's line: amd_sld's own (the kernel logs nothing when it sends SIGBUS).
fn log_fatal(counts: Option<&Counts>, user_ip: u64) {
    log_limited_at(counts, || {
        let comm = ffi::current_comm();
        let (pid, _) = ffi::current_ids();
        pr_warn!(
            "#DB: {}/{} took a bus_lock trap at address: {:#x}, sending SIGBUS\n",
            Escaped(until_nul(&comm)),
            pid,
            user_ip
        );
    });
}

/// Runs `print` unless the log's rate limit is spent, first saying how many lines it
/// suppressed since it last let one through.
pub(crate) fn log_limited(print: impl FnOnce()) {
    log_limited_at(stats::this_cpu(), print);
}

/// [`log_limited`], counting a suppressed line in `counts` (this CPU's): a suppressed line,
/// the common case in a storm, reads the limiter's shared word and writes only this CPU's
/// count; the line that opens the next window collects every CPU's. Timed by the tick, as
/// the kernel's `___ratelimit()` is: no clock source read.
#[inline(always)]
fn log_limited_at(counts: Option<&Counts>, print: impl FnOnce()) {
    match LOG.admit(ffi::coarse_ms()) {
        Admission::Deny => stats::LOG_SUPPRESSED.add_to(counts, 1),
        Admission::Pass { opens_window } => log_now(opens_window, print),
    }
}

/// The line let through by the log's limit, after the count of those suppressed since the
/// last one if `opens_window`. Out of the hot path: at most 10 lines per 5 s.
#[cold]
#[inline(never)]
fn log_now(opens_window: bool, print: impl FnOnce()) {
    let suppressed = if opens_window {
        stats::LOG_SUPPRESSED.take()
    } else {
        0
    };
    if suppressed > 0 {
        pr_warn!("{} bus_lock messages suppressed\n", suppressed);
    }
    print();
}
