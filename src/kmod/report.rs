// SPDX-License-Identifier: GPL-2.0

//! Who takes bus locks: the event record (`events`) and the top-offender table (`top`).
//!
//! Written from the #DB notifier and the PMU overflow handler, each into its own ring and
//! sketch of the CPU it runs on (`PER_CPU`): nothing a writer touches is shared with another
//! CPU or the other context, so nothing waits and nothing is lost to contention. Readers
//! merge every CPU's rings and sketches (src/logic eventlog.rs). What could still not be
//! written is counted in `dropped`. The one exception to "interrupts off or NMI" is
//! [`complete_current`], which adds an event's mapping later, from the task's own work in
//! process context, where the task's address space may be looked at, and fills this CPU's
//! cache of the last mapping, which lets the next trap of the same task in the same mapping
//! complete its record at once ([`Recording::cached_mapping`]).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::alloc::{flags, KVec};

use crate::eventlog::{
    Candidate, EventRing, Horizon, Newest, PackedMapping, RecordId, TopDetails, TopMerge,
    TopSketch, Writing, EVENT_LOG_LEN, TOP_LEN,
};
use crate::ffi;
use crate::fmtbuf::SliceWriter;
use crate::mapcache::MapCache;
use crate::record::{Action, Comm, Event, Source};

/// The writers of a CPU: each has its own ring and sketch there.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// The #DB notifier (the trap; records of source `bld`).
    Trap = 0,
    /// The PMU overflow NMI (records of source `pmu`).
    Nmi = 1,
}

/// Writers per CPU.
const CONTEXTS: usize = 2;

/// One CPU's records: a ring and a sketch per context, and the last mapping looked up.
pub(crate) struct CpuRecords {
    rings: [EventRing<EVENT_LOG_LEN>; CONTEXTS],
    tops: [TopSketch<TOP_LEN>; CONTEXTS],
    maps: MapCache,
}

impl ffi::ConstInit for CpuRecords {
    const INIT: Self = CpuRecords {
        rings: [const { EventRing::new() }; CONTEXTS],
        tops: [const { TopSketch::new() }; CONTEXTS],
        maps: MapCache::new(),
    };
}

/// Every CPU's records, allocated at start (`crate::amd_sld` keeps the storage).
pub(crate) static PER_CPU: ffi::PerCpu<CpuRecords> = ffi::PerCpu::new();

/// Records that found no per-CPU storage (none outside its life, which no trap sees).
static DROPPED_OUTSIDE: AtomicU64 = AtomicU64::new(0);

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

/// A record being made by the #DB notifier or the NMI, on this CPU: begun (numbered, and
/// flagged in flight for readers) before the clock is read, the one clock read of the
/// detection, which [`now_ns`](Self::now_ns) gives to whoever else needs the time.
pub(crate) struct Recording {
    place: Option<(&'static CpuRecords, Writing<'static, EVENT_LOG_LEN>)>,
    context: Context,
    cpu: u32,
    /// The current task's thread and thread-group IDs, read once.
    tid: i32,
    tgid: i32,
    now_ns: u64,
}

/// Adds one more bus lock of the current task at `ip`, dealt with by `action`, to the newest
/// record of this CPU's trap ring if that record is still open and is the same: the same
/// thread, IP and action (src/logic eventlog.rs `EventRing::coalesce`). Then counts it in
/// the top table, for the process counted last (the record's). True if done; false if a
/// new record must be written ([`begin`]). No clock, no name, no cgroup, no mapping: the
/// record has them, or will get its mapping from the work its first trap queued.
/// Interrupts off (the #DB notifier).
pub(crate) fn coalesce_trap(ip: u64, action: Action) -> bool {
    let Some(records) = PER_CPU.this_cpu() else {
        return false;
    };
    let context = Context::Trap as usize;
    let (tid, pid) = ffi::current_ids();
    if records.rings[context]
        .coalesce(pid, tid, ip, action)
        .is_none()
    {
        return false;
    }
    let top = &records.tops[context];
    if !top.add_more(pid, 1) {
        // Another process was counted last (never so for the record's own trap ring, whose
        // sketch counted the record's process when it was written, unless that update was
        // dropped): the full update, with the record's time.
        let ms = records.rings[context].last_ns() / 1_000_000;
        let comm = Comm::from_raw(ffi::current_comm());
        top.add(pid, comm, false, ffi::current_cgroup_id(), 1, ms);
    }
    true
}

/// Begins a record of this CPU's `context`, then reads the clock. Interrupts off or NMI.
pub(crate) fn begin(context: Context) -> Recording {
    let place = PER_CPU
        .this_cpu()
        .map(|records| (records, records.rings[context as usize].begin()));
    let (tid, tgid) = ffi::current_ids();
    Recording {
        place,
        context,
        cpu: ffi::this_cpu(),
        tid,
        tgid,
        now_ns: ffi::now_ns(),
    }
}

impl Recording {
    /// The time of the detection, `CLOCK_MONOTONIC` ns.
    pub(crate) fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// The record's identity, for the work that will [`complete_current`] it.
    pub(crate) fn id(&self) -> u64 {
        RecordId {
            cpu: self.cpu,
            ring: self.context as u8,
            seq: self
                .place
                .as_ref()
                .map_or(u64::MAX, |(_, writing)| writing.seq()),
        }
        .to_word()
    }

    /// The mapping of `ip` in the current task, if this CPU's last lookup was of the same
    /// process and its range holds `ip` (src/logic mapcache.rs: the staleness rule).
    pub(crate) fn cached_mapping(&self, ip: u64) -> Option<PackedMapping> {
        if ip == 0 {
            return None;
        }
        let (records, _) = self.place.as_ref()?;
        records.maps.lookup_packed(ffi::current_mm(), self.tgid, ip)
    }

    /// Writes the record: `sighting`, attributed to the current task, with what was done
    /// about it and, if known already, the mapping of its IP; and counts it in the top
    /// table. A trap's record (source `bld`, outside guest mode, not throttled) is left
    /// open: identical traps after it are added to its count ([`coalesce_trap`]) until a
    /// reader closes it.
    pub(crate) fn finish(self, sighting: &Sighting, action: Action, map: Option<PackedMapping>) {
        let Some((records, writing)) = self.place else {
            DROPPED_OUTSIDE.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (tid, pid) = (self.tid, self.tgid);
        let comm = Comm::from_raw(ffi::current_comm());
        let cgroup = ffi::current_cgroup_id();
        let ms = self.now_ns / 1_000_000;
        let open = self.context == Context::Trap
            && sighting.source == Source::Bld
            && !sighting.guest
            && action != Action::Throttle;
        let event = Event {
            seq: 0,
            ms,
            cpu: self.cpu,
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
        };
        if open {
            writing.finish_open(self.now_ns, &event, map);
        } else {
            writing.finish_packed(self.now_ns, &event, map);
        }
        records.tops[self.context as usize].add(
            pid,
            comm,
            sighting.guest,
            cgroup,
            sighting.count,
            ms,
        );
    }
}

/// Adds to record `id` the file mapped at user address `ip` in the current task, the one
/// the record names, and `ip`'s offset into it; and caches the mapping for this CPU's next
/// traps. Process context only: the task's own work (trap.rs, sample.rs), before it returns
/// to user mode, so the mapping is the one the IP was executed from. Nothing is added for
/// `ip` 0, an anonymous mapping, or an address space being changed at that instant; nor if
/// the record is gone from its ring meanwhile.
pub(crate) fn complete_current(id: u64, ip: u64) {
    if ip == 0 {
        return;
    }
    let Some(vma) = ffi::current_ip_vma(ip) else {
        return;
    };
    let record = RecordId::from_word(id);
    // Both writes claim a slot that #DB and NMI handlers on the slot's CPU read: never
    // preempted halfway (a claimed slot reads as busy until its writer runs again).
    ffi::without_preemption(|| {
        if let (Some(records), Some(mapping)) = (PER_CPU.get(record.cpu), vma.mapping_of(ip)) {
            if let Some(ring) = records.rings.get(usize::from(record.ring)) {
                ring.complete(record.seq, &mapping);
            }
        }
        if let Some(records) = PER_CPU.this_cpu() {
            records.maps.fill(&vma);
        }
    });
}

/// Records lost: not written to a ring, or not counted in a sketch.
pub(crate) fn dropped() -> u64 {
    let mut sum = DROPPED_OUTSIDE.load(Ordering::Relaxed);
    PER_CPU.for_each_cpu(|_, records| {
        for (ring, top) in records.rings.iter().zip(&records.tops) {
            sum += ring.dropped() + top.dropped();
        }
    });
    sum
}

/// Writes the most recent events of every CPU, merged in time order, one a line, as many as
/// fit: the `events` file.
pub(crate) fn show_events(out: &mut SliceWriter<'_>) -> fmt::Result {
    // The clock first, then every ring's in-flight flag, then the records (eventlog.rs).
    let mut horizon = Horizon::new(ffi::now_ns());
    PER_CPU.for_each_cpu(|cpu, records| {
        for (ring, log) in (0u8..).zip(&records.rings) {
            horizon.see(cpu, ring, log);
        }
    });
    let mut newest = Newest::<EVENT_LOG_LEN>::new(&horizon);
    PER_CPU.for_each_cpu(|cpu, records| {
        for (ring, log) in (0u8..).zip(&records.rings) {
            newest.collect(cpu, ring, log);
        }
    });
    let room = out.room();
    newest.write_lines(out, room)
}

/// Writes the top-offender table, one process a line, merged from every CPU's sketches:
/// the `top` file.
/// Fails (`E2BIG` for the reader) if the merge's buffer cannot be allocated.
pub(crate) fn show_top(out: &mut SliceWriter<'_>) -> fmt::Result {
    // Room for every entry in use: usually a few sketches' worth, not one per CPU. Slots
    // only ever fill; some slack covers those filled during the read (a candidate beyond
    // the room would be left out of this read only).
    let mut entries = 2 * TOP_LEN;
    PER_CPU.for_each_cpu(|_, records| {
        entries += records.tops.iter().map(TopSketch::occupied).sum::<usize>();
    });
    let mut buffer = KVec::from_elem(Candidate::default(), entries, flags::GFP_KERNEL)
        .map_err(|_| fmt::Error)?;
    let mut merge = TopMerge::new(&mut buffer);
    PER_CPU.for_each_cpu(|_, records| records.tops.iter().for_each(|top| merge.see(top)));
    let top = merge.top::<TOP_LEN>();
    let mut details = TopDetails::new(&top);
    PER_CPU.for_each_cpu(|_, records| records.tops.iter().for_each(|top| details.see(top)));
    let mut result = Ok(());
    details.for_each(|offender| {
        if result.is_ok() {
            result = writeln!(out, "{offender}");
        }
    });
    result
}
