// SPDX-License-Identifier: GPL-2.0

//! The counters of `/sys/kernel/amd_sld/`: one value per file, monotonic while loaded.
//!
//! Each CPU counts in its own per-CPU block (`PER_CPU`), so that no cache line is written by
//! the traps of two CPUs; a read sums every CPU's count, which is exact (each count is
//! an atomic add, and the sum of monotonic counters read one after the other never goes
//! back). Counts made while no per-CPU block exists (before start, after teardown) go to a
//! shared fallback, so nothing is lost.
//!
//! The ABI is documented in docs/ABI/sysfs-kernel-amd_sld; the files are listed in the
//! crate root.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::ffi;
use crate::fmtbuf::SliceWriter;

/// Counters kept.
const COUNTERS: usize = 7;

/// One CPU's counts.
pub(crate) struct Counts([AtomicU64; COUNTERS]);

impl ffi::ConstInit for Counts {
    const INIT: Self = Counts([const { AtomicU64::new(0) }; COUNTERS]);
}

/// Every CPU's counts, allocated at start (`crate::amd_sld` keeps the storage).
pub(crate) static PER_CPU: ffi::PerCpu<Counts> = ffi::PerCpu::new();

/// Counts made outside the per-CPU storage's life.
static OUTSIDE: Counts = <Counts as ffi::ConstInit>::INIT;

/// This CPU's counts, looked up once by a caller that counts several things (the trap).
pub(crate) fn this_cpu() -> Option<&'static Counts> {
    PER_CPU.this_cpu()
}

/// A monotonic event counter, safe to bump from any context: an index into each CPU's
/// counts.
#[derive(Clone, Copy)]
pub(crate) struct Counter(usize);

impl Counter {
    /// Counts one event on this CPU.
    pub(crate) fn inc(self) {
        self.add(1);
    }

    /// Counts `n` units on this CPU.
    pub(crate) fn add(self, n: u64) {
        self.add_to(this_cpu(), n);
    }

    /// Counts `n` units in `counts` (from [`this_cpu`]).
    pub(crate) fn add_to(self, counts: Option<&Counts>, n: u64) {
        counts.unwrap_or(&OUTSIDE).0[self.0].fetch_add(n, Ordering::Relaxed);
    }

    /// The current value: the sum over every CPU.
    pub(crate) fn get(self) -> u64 {
        let mut sum = OUTSIDE.0[self.0].load(Ordering::Relaxed);
        PER_CPU.for_each_cpu(|_, counts| {
            sum = sum.wrapping_add(counts.0[self.0].load(Ordering::Relaxed));
        });
        sum
    }

    /// The current value, reset to 0: each unit counted is taken exactly once.
    pub(crate) fn take(self) -> u64 {
        let mut sum = OUTSIDE.0[self.0].swap(0, Ordering::Relaxed);
        PER_CPU.for_each_cpu(|_, counts| {
            sum = sum.wrapping_add(counts.0[self.0].swap(0, Ordering::Relaxed));
        });
        sum
    }

    /// Writes the current value, and a newline: the contents of its file.
    pub(crate) fn show(self, out: &mut SliceWriter<'_>) -> fmt::Result {
        writeln!(out, "{}", self.get())
    }
}

/// Bus-lock traps seen, plus the counts of released PMU counters: see
/// `crate::arming::bus_locks` for the total.
pub(crate) const BUS_LOCKS: Counter = Counter(0);
/// Traps handled with a warning (policy `warn`, or `ratelimit` once under budget). The log
/// line itself is rate limited: see `crate::trap`.
pub(crate) const WARNED: Counter = Counter(1);
/// Traps answered with SIGBUS (policy `fatal`).
pub(crate) const KILLED: Counter = Counter(2);
/// Traps that made their task sleep (policy `ratelimit`, over budget).
pub(crate) const THROTTLED: Counter = Counter(3);
/// Milliseconds slept by throttled tasks, in total.
pub(crate) const THROTTLED_MS: Counter = Counter(4);
/// Bus locks in guest mode: with the PMU source, the sum of the guest samples' counts,
/// sampled rather than exact; beside the trap (`bld+pmu(guest)`), the released guest-only
/// counters' exact counts (the live ones are added by `crate::arming::guest_bus_locks`;
/// docs/ABI/sysfs-kernel-amd_sld).
pub(crate) const GUEST_BUS_LOCKS: Counter = Counter(5);
/// Log lines suppressed by the log's rate limit since it last let one through: counted per
/// CPU, so that a suppressed line writes nothing shared (`crate::trap::log_limited`).
pub(crate) const LOG_SUPPRESSED: Counter = Counter(6);
