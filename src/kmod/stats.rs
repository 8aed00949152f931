// SPDX-License-Identifier: GPL-2.0

//! The counters of `/sys/kernel/amd_sld/`: one value per file, monotonic while loaded.
//!
//! The ABI is documented in docs/ABI/sysfs-kernel-amd_sld.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::c_str;
use kernel::str::CStr;

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
}

/// Bus-lock traps seen, or with the PMU source the counts of released counters: see
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
/// Bus locks the PMU source attributed to guest mode (sum of the guest samples' periods).
pub(crate) static GUEST_BUS_LOCKS: Counter = Counter::new();

/// One file of `/sys/kernel/amd_sld/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stat {
    BusLocks,
    Warned,
    Killed,
    Throttled,
    ThrottledMs,
    ArmedCpus,
    Dropped,
    Events,
    Top,
    GuestBusLocks,
    Source,
}

impl Stat {
    /// Every file, in the order of the sysfs attribute table.
    pub(crate) const ALL: [Stat; 11] = [
        Stat::BusLocks,
        Stat::Warned,
        Stat::Killed,
        Stat::Throttled,
        Stat::ThrottledMs,
        Stat::ArmedCpus,
        Stat::Dropped,
        Stat::Events,
        Stat::Top,
        Stat::GuestBusLocks,
        Stat::Source,
    ];

    /// The file name.
    pub(crate) const fn name(self) -> &'static CStr {
        match self {
            Stat::BusLocks => c_str!("bus_locks"),
            Stat::Warned => c_str!("warned"),
            Stat::Killed => c_str!("killed"),
            Stat::Throttled => c_str!("throttled"),
            Stat::ThrottledMs => c_str!("throttled_ms"),
            Stat::ArmedCpus => c_str!("armed_cpus"),
            Stat::Dropped => c_str!("dropped"),
            Stat::Events => c_str!("events"),
            Stat::Top => c_str!("top"),
            Stat::GuestBusLocks => c_str!("guest_bus_locks"),
            Stat::Source => c_str!("source"),
        }
    }

    /// The file mode: counters are world-readable; the records name processes, root only.
    pub(crate) const fn mode(self) -> u16 {
        match self {
            Stat::Events | Stat::Top => 0o400,
            _ => 0o444,
        }
    }

    /// Writes the file's contents: one value and a newline.
    pub(crate) fn render(self, out: &mut SliceWriter<'_>) -> fmt::Result {
        let counter = match self {
            Stat::BusLocks => return writeln!(out, "{}", crate::arming::bus_locks()),
            Stat::GuestBusLocks => &GUEST_BUS_LOCKS,
            Stat::Source => return writeln!(out, "{}", crate::control::source().as_str()),
            Stat::Warned => &WARNED,
            Stat::Killed => &KILLED,
            Stat::Throttled => &THROTTLED,
            Stat::ThrottledMs => &THROTTLED_MS,
            Stat::ArmedCpus => {
                crate::cpulist::write(out, crate::arming::armed_cpus())?;
                return out.write_char('\n');
            }
            Stat::Dropped => return writeln!(out, "{}", crate::report::dropped()),
            Stat::Events => {
                let room = out.room();
                return crate::report::EVENTS.write_lines(out, room);
            }
            Stat::Top => {
                let mut result = Ok(());
                crate::report::TOP.for_each(|offender| {
                    if result.is_ok() {
                        result = writeln!(out, "{offender}");
                    }
                });
                return result;
            }
        };
        writeln!(out, "{}", counter.get())
    }
}
