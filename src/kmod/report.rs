// SPDX-License-Identifier: GPL-2.0

//! Who takes bus locks: the event record (`events`) and the top-offender table (`top`).
//!
//! Written from the #DB notifier and the PMU overflow handler, so every path here is safe
//! with interrupts off and in NMI context: the structures never wait (src/logic eventlog.rs),
//! and what they could not take is counted in `dropped`.

use core::fmt::{self, Write};

use crate::eventlog::{EventLog, TopOffenders, EVENT_LOG_LEN, TOP_LEN};
use crate::ffi;
use crate::fmtbuf::SliceWriter;
use crate::record::{Action, Comm, Event, Source};

/// The most recent bus-lock events.
pub(crate) static EVENTS: EventLog<EVENT_LOG_LEN> = EventLog::new();
/// Bus locks per process, for the processes with the most.
pub(crate) static TOP: TopOffenders<TOP_LEN> = TopOffenders::new();

/// What one detection says about the task it interrupted.
pub(crate) struct Sighting {
    /// The detector.
    pub(crate) source: Source,
    /// The task was in guest mode (a vCPU thread running its guest).
    pub(crate) guest: bool,
    /// The instruction pointer to report, or 0.
    pub(crate) ip: u64,
    /// Bus locks it stands for.
    pub(crate) count: u64,
}

/// Records `sighting`, attributed to the current task, with what was done about it. Called
/// from the #DB notifier and from the PMU's overflow NMI.
pub(crate) fn record_current(sighting: &Sighting, action: Action) {
    let (tid, pid) = ffi::current_ids();
    let comm = Comm::new(&ffi::current_comm());
    let ms = ffi::now_ms();
    let cgroup = ffi::current_cgroup_id();
    EVENTS.push(&Event {
        seq: 0,
        ms,
        cpu: ffi::this_cpu(),
        pid,
        tid,
        comm,
        source: sighting.source,
        guest: sighting.guest,
        ip: sighting.ip,
        count: sighting.count,
        action,
        cgroup,
    });
    TOP.add(pid, comm, sighting.guest, cgroup, sighting.count, ms);
}

/// Records lost to contention, in the event record and the top table together.
pub(crate) fn dropped() -> u64 {
    EVENTS.dropped() + TOP.dropped()
}

/// Writes the most recent events, one a line, as many as fit: the `events` file.
pub(crate) fn show_events(out: &mut SliceWriter<'_>) -> fmt::Result {
    let room = out.room();
    EVENTS.write_lines(out, room)
}

/// Writes the top-offender table, one process a line: the `top` file.
pub(crate) fn show_top(out: &mut SliceWriter<'_>) -> fmt::Result {
    let mut result = Ok(());
    TOP.for_each(|offender| {
        if result.is_ok() {
            result = writeln!(out, "{offender}");
        }
    });
    result
}
