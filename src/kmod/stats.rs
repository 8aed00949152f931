// SPDX-License-Identifier: GPL-2.0

//! The counters of `/sys/kernel/amd_sld/`: one value per file, monotonic while loaded.
//!
//! The ABI is documented in docs/ABI/sysfs-kernel-amd_sld; the files are listed in the
//! crate root.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::fmtbuf::SliceWriter;

/// A monotonic event counter, safe to bump from any context.
pub(crate) struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Counts one event.
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    /// Counts `n` units.
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Writes the current value, and a newline: the contents of its file.
    pub(crate) fn show(&self, out: &mut SliceWriter<'_>) -> fmt::Result {
        writeln!(out, "{}", self.get())
    }
}

/// Bus-lock traps seen, plus the counts of released PMU counters: see
/// `crate::arming::bus_locks` for the total.
pub(crate) static BUS_LOCKS: Counter = Counter::new();
/// Traps handled with a warning (policy `warn`, or `ratelimit` once under budget). The log
/// line itself is rate limited: see `crate::trap`.
pub(crate) static WARNED: Counter = Counter::new();
/// Traps answered with SIGBUS (policy `fatal`).
pub(crate) static KILLED: Counter = Counter::new();
/// Traps that made their task sleep (policy `ratelimit`, over budget).
pub(crate) static THROTTLED: Counter = Counter::new();
/// Milliseconds slept by throttled tasks, in total.
pub(crate) static THROTTLED_MS: Counter = Counter::new();
/// Bus locks in guest mode: with the PMU source, the sum of the guest samples' counts,
/// sampled rather than exact; beside the trap (`bld+pmu(guest)`), the released guest-only
/// counters' exact counts (the live ones are added by `crate::arming::guest_bus_locks`;
/// docs/ABI/sysfs-kernel-amd_sld).
pub(crate) static GUEST_BUS_LOCKS: Counter = Counter::new();
