// SPDX-License-Identifier: GPL-2.0

//! Who takes bus locks: the event record (`events`) and the top-offender table (`top`).
//!
//! Written from the #DB notifier and the PMU overflow handler, so every path here is safe
//! with interrupts off and in NMI context: the structures never wait (src/logic eventlog.rs),
//! and what they could not take is counted in `dropped`. The one exception is
//! [`complete_current`], which adds an event's mapping later, from the task's own work in
//! process context, where the task's address space may be looked at.

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

/// The sequence number of the next event, for the work that will complete it; the caller
/// then records it with [`record_current`].
pub(crate) fn reserve() -> u64 {
    EVENTS.reserve()
}

/// Records `sighting` as event `seq` (from [`reserve`]), attributed to the current task,
/// with what was done about it. Called from the #DB notifier and from the PMU's overflow
/// NMI.
pub(crate) fn record_current(seq: u64, sighting: &Sighting, action: Action) {
    let (tid, pid) = ffi::current_ids();
    let comm = Comm::new(&ffi::current_comm());
    let ms = ffi::now_ms();
    let cgroup = ffi::current_cgroup_id();
    EVENTS.put(
        seq,
        &Event {
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
            map: None,
            cgroup,
        },
    );
    TOP.add(pid, comm, sighting.guest, cgroup, sighting.count, ms);
}

/// Adds to event `seq` the file mapped at user address `ip` in the current task, the one
/// the event names, and `ip`'s offset into it. Process context only: the task's own work
/// (trap.rs, sample.rs), before it returns to user mode, so the mapping is the one the IP
/// was executed from. Nothing is added for `ip` 0, an anonymous mapping, or an address
/// space being changed at that instant; nor if the event is gone from the log meanwhile.
pub(crate) fn complete_current(seq: u64, ip: u64) {
    if ip == 0 {
        return;
    }
    if let Some(mapping) = ffi::current_ip_mapping(ip) {
        EVENTS.complete(seq, &mapping);
    }
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
