//! The bounded records behind `/sys/kernel/amd_sld/events` and `/sys/kernel/amd_sld/top`,
//! kept per CPU and per writing context, merged when read.
//!
//! Writers are the #DB notifier (interrupts off) and the PMU overflow handler (NMI). Each CPU
//! has one [`EventRing`] and one [`TopSketch`] per context, so every writer owns its own and
//! nothing on the hot path is shared with another CPU: no claim can fail and no update is
//! lost to contention. Readers (sysfs `show()`, process context) merge: the events by time,
//! CPU, ring and number ([`Horizon`], [`Newest`]), the sketches per process
//! ([`TopMerge`], [`TopDetails`]). Memory is fixed at allocation whatever the storm. Readers
//! never block writers: each slot carries a sequence word (odd while a writer fills it), and
//! a reader keeps a slot's copy only if that word did not change while it read.
//!
//! A record's `map` (the file at its IP) is either known where the record is written (the
//! CPU's cache of the last mapping looked up) or looked up later by the task's own deferred
//! work, in process context, which completes the record with [`EventRing::complete`]. It
//! goes into a second slot of the same index, tagged with the record's number by the same
//! protocol, so that a mapping never lands on a newer record that took the slot meanwhile,
//! and a reader pairs the two only when the tags match.
//!
//! Everything is atomics: this crate has no `unsafe`, and the module links it as is.

use core::fmt::{self, Write};
use core::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

use crate::record::{Action, Comm, Event, Mapping, Offender, Source, MAP_NAME_LEN};

/// Events shown by the kernel module: the newest this many are readable. Each ring keeps
/// as many, so that the newest of all are there even when one CPU wrote all of them.
pub const EVENT_LOG_LEN: usize = 32;
/// Processes shown in the top-offender table, and kept in each sketch.
pub const TOP_LEN: usize = 16;

/// A [`Comm`] packed into two words.
fn pack_comm(comm: &Comm) -> [u64; 2] {
    let value = u128::from_le_bytes(comm.0);
    [value as u64, (value >> 64) as u64]
}

fn unpack_comm([low, high]: [u64; 2]) -> Comm {
    Comm((u128::from(low) | u128::from(high) << 64).to_le_bytes())
}

const SOURCE_PMU: u64 = 1 << 32;
const GUEST: u64 = 1 << 33;
const ACTION_SHIFT: u32 = 34;

fn action_code(action: Action) -> u64 {
    match action {
        Action::None => 0,
        Action::Warn => 1,
        Action::Kill => 2,
        Action::Throttle => 3,
    }
}

fn action_of(code: u64) -> Action {
    match code & 3 {
        0 => Action::None,
        1 => Action::Warn,
        2 => Action::Kill,
        _ => Action::Throttle,
    }
}

/// An [`Event`] without its sequence number, as words: the slot's sequence word holds that.
const EVENT_WORDS: usize = 8;

/// The word of the packed [`Event`] that holds its count, and the flag of that word that
/// marks the record open: identical traps may still be added to it ([`EventRing::coalesce`])
/// until a reader closes it (every reader does, before it copies a record).
const COUNT_WORD: usize = 6;
const OPEN: u64 = 1 << 63;
/// The largest count a record holds (the count word less its open flag).
const MAX_COUNT: u64 = OPEN - 1;
/// The flags that make two records of one ring alike (the CPU is the ring's).
const KIND_MASK: u64 = !(u32::MAX as u64);

/// The identity word of a record: its process and thread IDs.
fn pack_ids(pid: i32, tid: i32) -> u64 {
    u64::from(pid as u32) << 32 | u64::from(tid as u32)
}

/// The words of `event` timed `ns`: the time is kept in ns (the merge's key), shown in ms.
fn pack_event(event: &Event, ns: u64) -> [u64; EVENT_WORDS] {
    let flags = u64::from(event.cpu)
        | if event.source == Source::Pmu {
            SOURCE_PMU
        } else {
            0
        }
        | if event.guest { GUEST } else { 0 }
        | action_code(event.action) << ACTION_SHIFT;
    let [comm0, comm1] = pack_comm(&event.comm);
    [
        ns,
        flags,
        pack_ids(event.pid, event.tid),
        comm0,
        comm1,
        event.ip,
        event.count.min(MAX_COUNT),
        event.cgroup,
    ]
}

fn unpack_event(seq: u64, words: [u64; EVENT_WORDS]) -> Event {
    let [ns, flags, ids, comm0, comm1, ip, count, cgroup] = words;
    Event {
        seq,
        ms: ns / 1_000_000,
        cpu: flags as u32,
        pid: (ids >> 32) as u32 as i32,
        tid: ids as u32 as i32,
        comm: unpack_comm([comm0, comm1]),
        source: if flags & SOURCE_PMU != 0 {
            Source::Pmu
        } else {
            Source::Bld
        },
        guest: flags & GUEST != 0,
        ip,
        count: count & MAX_COUNT,
        action: action_of(flags >> ACTION_SHIFT),
        map: None,
        cgroup,
    }
}

/// A [`Mapping`] as words: its name, then its offset.
const MAP_WORDS: usize = MAP_NAME_LEN / 8 + 1;

fn pack_mapping(mapping: &Mapping) -> [u64; MAP_WORDS] {
    PackedMapping::from(mapping).0
}

/// A [`Mapping`] as the words a ring stores: the name's 4 words, then the offset. What the
/// CPU's mapping cache hands the #DB notifier, so that the name goes from the cache to the
/// ring as words, never as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedMapping([u64; MAP_WORDS]);

impl PackedMapping {
    /// From the name's words ([`crate::mapcache::name_words`]) and the offset.
    pub fn new([a, b, c, d]: [u64; 4], offset: u64) -> Self {
        PackedMapping([a, b, c, d, offset])
    }

    /// The mapping, or `None` for an empty name.
    pub fn mapping(&self) -> Option<Mapping> {
        unpack_mapping(self.0)
    }
}

impl From<&Mapping> for PackedMapping {
    fn from(mapping: &Mapping) -> Self {
        PackedMapping::new(crate::mapcache::name_words(&mapping.name), mapping.offset)
    }
}

fn unpack_mapping(words: [u64; MAP_WORDS]) -> Option<Mapping> {
    let [a, b, c, d, offset] = words;
    Mapping::new(&crate::mapcache::name_bytes([a, b, c, d]), offset)
}

/// A slot of `W` data words guarded by a sequence word: 0 empty, odd while written.
struct Slot<const W: usize> {
    sequence: AtomicU64,
    words: [AtomicU64; W],
}

impl<const W: usize> Slot<W> {
    const fn new() -> Self {
        Slot {
            sequence: AtomicU64::new(0),
            words: [const { AtomicU64::new(0) }; W],
        }
    }

    /// Writes `words`, given that the slot's sequence word is `odd` (claimed by us), then
    /// publishes it as `odd + 1`.
    fn fill(&self, odd: u64, words: &[u64; W]) {
        fence(Ordering::Release);
        for (slot, &word) in self.words.iter().zip(words) {
            slot.store(word, Ordering::Relaxed);
        }
        self.sequence.store(odd + 1, Ordering::Release);
    }

    /// A consistent copy of the slot and its (even, non-zero) sequence word, or `None` if it
    /// is empty or a writer was at work.
    fn read(&self) -> Option<(u64, [u64; W])> {
        let before = self.sequence.load(Ordering::Acquire);
        if before == 0 || before % 2 == 1 {
            return None;
        }
        let mut words = [0u64; W];
        for (word, slot) in words.iter_mut().zip(&self.words) {
            *word = slot.load(Ordering::Relaxed);
        }
        fence(Ordering::Acquire);
        (self.sequence.load(Ordering::Relaxed) == before).then_some((before, words))
    }

    /// Claims the slot for `seq` (sequence word `2 * seq + 1`) if no writer holds it and it
    /// holds nothing newer, and fills it with `words`. Never waits.
    fn put(&self, seq: u64, words: &[u64; W]) -> bool {
        let claimed = 2 * seq + 1;
        let current = self.sequence.load(Ordering::Relaxed);
        let free = current & 1 == 0 && current < claimed;
        if !free
            || self
                .sequence
                .compare_exchange(current, claimed, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        self.fill(claimed, words);
        true
    }
}

/// Where a record sorts in the merged log: its time (ns of `CLOCK_MONOTONIC`), then the
/// CPU and ring it was written to, then its number in that ring.
pub type Key = (u64, u32, u8, u64);

/// The identity of a record, handed to the work that completes it: its CPU, ring and
/// number, packed in one word (`seq` in the high 48 bits, saturating).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordId {
    /// The CPU whose ring holds it.
    pub cpu: u32,
    /// The ring on that CPU (one per writing context).
    pub ring: u8,
    /// Its number in that ring.
    pub seq: u64,
}

impl RecordId {
    const SEQ_SHIFT: u32 = 16;

    /// As one word. CPUs up to 32767 and 2 rings fit exactly; `seq` saturates at 2^48 - 1.
    pub fn to_word(self) -> u64 {
        let seq = self.seq.min((1 << (64 - Self::SEQ_SHIFT)) - 1);
        seq << Self::SEQ_SHIFT | u64::from(self.cpu & 0x7fff) << 1 | u64::from(self.ring & 1)
    }

    /// From [`to_word`](Self::to_word).
    pub fn from_word(word: u64) -> RecordId {
        RecordId {
            cpu: (word >> 1) as u32 & 0x7fff,
            ring: (word & 1) as u8,
            seq: word >> Self::SEQ_SHIFT,
        }
    }
}

/// The newest `N` records of one writer: one CPU's #DB notifier, or its PMU overflow NMI.
///
/// One writer per ring, so nothing here is contended: a writer [`begin`](Self::begin)s a
/// record (its number, and a flag readers see: a record is in flight), reads the clock,
/// then [`Writing::finish`]es it. Were two writers ever to meet in one ring anyway, the
/// slot protocol refuses the second and counts it in `dropped`: nothing is torn.
///
/// # Invariants
///
/// A slot's sequence word is 0, `2 * seq + 1` while the writer of record `seq` fills it, or
/// `2 * seq + 2` once record `seq` is in it; a slot only ever moves to a larger `seq`. The
/// same holds for `maps`, whose slot `i` holds the mapping of the record of slot `i` when
/// their sequence words are equal. `last_ns` is the time of the last record finished; a
/// record begun while `in_flight` is set has a time no smaller.
pub struct EventRing<const N: usize> {
    in_flight: AtomicBool,
    last_ns: AtomicU64,
    next_seq: AtomicU64,
    dropped: AtomicU64,
    slots: [Slot<EVENT_WORDS>; N],
    maps: [Slot<MAP_WORDS>; N],
}

impl<const N: usize> Default for EventRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A record begun in an [`EventRing`]: its number is taken and readers hold back anything
/// newer until it is finished (or dropped, which counts it as lost).
pub struct Writing<'a, const N: usize> {
    ring: &'a EventRing<N>,
    seq: u64,
    finished: bool,
}

impl<const N: usize> Writing<'_, N> {
    /// The record's number in its ring.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Writes the record, timed `ns` (read after [`EventRing::begin`]); `event.seq` and
    /// `event.ms` are ignored (`ms` is `ns / 10^6`). With `event.map`, its mapping too.
    pub fn finish(self, ns: u64, event: &Event) {
        let map = event.map.as_ref().map(PackedMapping::from);
        self.finish_packed(ns, event, map);
    }

    /// [`finish`](Self::finish) with the mapping given as words (`event.map` is ignored).
    pub fn finish_packed(self, ns: u64, event: &Event, map: Option<PackedMapping>) {
        self.finish_words(pack_event(event, ns), map);
    }

    /// [`finish_packed`](Self::finish_packed), and leaves the record open: until a reader
    /// closes it, identical detections are added to its count ([`EventRing::coalesce`])
    /// rather than written as records of their own.
    pub fn finish_open(self, ns: u64, event: &Event, map: Option<PackedMapping>) {
        let mut words = pack_event(event, ns);
        words[COUNT_WORD] |= OPEN;
        self.finish_words(words, map);
    }

    fn finish_words(mut self, mut words: [u64; EVENT_WORDS], map: Option<PackedMapping>) {
        let ring = self.ring;
        // ktime_get_mono_fast_ns() may step back across a timekeeping update (an NMI's read
        // within one): a ring's times never do, so that its records stay in seq order.
        words[0] = words[0].max(ring.last_ns.load(Ordering::Relaxed));
        let index = (self.seq % N as u64) as usize;
        if ring.slots[index].put(self.seq, &words) {
            if let Some(map) = &map {
                ring.maps[index].put(self.seq, &map.0);
            }
        } else {
            ring.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ring.last_ns.store(words[0], Ordering::Relaxed);
        self.finished = true;
    }
}

impl<const N: usize> Drop for Writing<'_, N> {
    fn drop(&mut self) {
        if !self.finished {
            self.ring.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.ring.in_flight.store(false, Ordering::Release);
    }
}

impl<const N: usize> EventRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        EventRing {
            in_flight: AtomicBool::new(false),
            last_ns: AtomicU64::new(0),
            next_seq: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            slots: [const { Slot::new() }; N],
            maps: [const { Slot::new() }; N],
        }
    }

    /// Begins a record. Call before reading the clock for it: a reader that does not see
    /// the record in flight read its own clock first (see [`Horizon`]).
    pub fn begin(&self) -> Writing<'_, N> {
        self.in_flight.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        Writing {
            ring: self,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            finished: false,
        }
    }

    /// Adds the mapping of record `seq`, found after the record was written. Never waits;
    /// false (nothing written) if the record's slot has moved on to a newer record, or a
    /// writer holds it: the record is gone, or will be shown without its map.
    pub fn complete(&self, seq: u64, mapping: &Mapping) -> bool {
        self.maps[(seq % N as u64) as usize].put(seq, &pack_mapping(mapping))
    }

    /// Records that could not be written.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The time of the last record written (ns), that of the open one while there is one.
    pub fn last_ns(&self) -> u64 {
        self.last_ns.load(Ordering::Relaxed)
    }

    /// Adds one detection to the ring's newest record, if that record is still open and is
    /// of the same kind: the same process and thread (`pid`, `tid`), instruction pointer
    /// `ip` and `action`, a trap (source `bld`) outside guest mode. Returns its number, or
    /// `None` if a new record must be written: the newest differs, was never open, or a
    /// reader closed it. Only the ring's writer may call this (it reads the newest record
    /// without the slot protocol, which only that writer changes). Never waits: one
    /// compare-and-swap of the count word, which fails once a reader closed the record.
    #[inline(always)]
    pub fn coalesce(&self, pid: i32, tid: i32, ip: u64, action: Action) -> Option<u64> {
        let next = self.next_seq.load(Ordering::Relaxed);
        if next == 0 {
            return None;
        }
        let seq = next.wrapping_sub(1);
        let slot = &self.slots[(seq % N as u64) as usize];
        let words = &slot.words;
        if slot.sequence.load(Ordering::Relaxed) != seq.wrapping_mul(2).wrapping_add(2)
            || words[2].load(Ordering::Relaxed) != pack_ids(pid, tid)
            || words[5].load(Ordering::Relaxed) != ip
            || words[1].load(Ordering::Relaxed) & KIND_MASK != action_code(action) << ACTION_SHIFT
        {
            return None;
        }
        let count = &words[COUNT_WORD];
        let mut current = count.load(Ordering::Relaxed);
        loop {
            if current & OPEN == 0 || current == OPEN | MAX_COUNT {
                return None;
            }
            match count.compare_exchange_weak(
                current,
                current.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(seq),
                Err(actual) => current = actual,
            }
        }
    }

    /// Closes the record in `slot`, if open.
    fn close(slot: &Slot<EVENT_WORDS>) {
        let count = &slot.words[COUNT_WORD];
        if count.load(Ordering::Relaxed) & OPEN != 0 {
            count.fetch_and(MAX_COUNT, Ordering::Relaxed);
        }
    }

    /// Calls `visit` for every slot that holds a record, in slot order: with its key and a
    /// copy, or `None` if a writer is replacing it at that instant (with a newer record).
    /// Closes every record it copies first, so that the count it sees is final.
    fn for_each_record(&self, cpu: u32, ring: u8, mut visit: impl FnMut(Option<(Key, Event)>)) {
        for (slot, map) in self.slots.iter().zip(&self.maps) {
            // A record written between the close and the copy may be open: closed again,
            // copied again (a few times at most; then it counts as being replaced).
            let copy = (0..4)
                .map(|_| {
                    Self::close(slot);
                    slot.read()
                })
                .find(|copy| !matches!(copy, Some((_, words)) if words[COUNT_WORD] & OPEN != 0))
                .flatten();
            match copy {
                Some((sequence, words)) => {
                    let seq = sequence / 2 - 1;
                    let event = Event {
                        map: map
                            .read()
                            .filter(|&(tag, _)| tag == sequence)
                            .and_then(|(_, words)| unpack_mapping(words)),
                        ..unpack_event(seq, words)
                    };
                    visit(Some(((words[0], cpu, ring, seq), event)));
                }
                None if slot.sequence.load(Ordering::Relaxed) != 0 => visit(None),
                None => {}
            }
        }
    }
}

/// Where a reader of several rings stops, so that a record still being written can never
/// turn up later *before* a record already shown.
///
/// Made from the reader's clock, read first, then [`see`](Self::see)n for every ring before
/// any record is read. A writer that had not yet flagged its record in flight reads its
/// clock after the reader did, so its record sorts after the horizon; one that had, sorts
/// after its ring's last finished record. Records at or past the horizon are held back
/// until a later read (they are not lost).
#[derive(Clone, Copy, Debug)]
pub struct Horizon(Key);

impl Horizon {
    /// A horizon at the reader's time `now_ns`, read just before.
    pub fn new(now_ns: u64) -> Horizon {
        fence(Ordering::SeqCst);
        Horizon((now_ns, 0, 0, 0))
    }

    /// Lowers the horizon below ring `ring` of `cpu` if a record is in flight there.
    pub fn see<const N: usize>(&mut self, cpu: u32, ring: u8, log: &EventRing<N>) {
        if log.in_flight.load(Ordering::Acquire) {
            // The record in flight is numbered `next - 1`, or `next` if it has not taken
            // its number yet. Only this ring's keys lie between the two, so the horizon at
            // `next` hides either (a record in flight is never shown) and never the ring's
            // newest finished record, which an earlier read may have shown already.
            let next = log.next_seq.load(Ordering::Relaxed);
            let last = log.last_ns.load(Ordering::Relaxed);
            self.0 = self.0.min((last, cpu, ring, next));
        }
    }
}

/// The newest `M` records of many rings, merged in [`Key`] order, of which those below a
/// [`Horizon`] are shown.
///
/// The `M` are chosen among every record, those at or past the horizon and those being
/// written (a slot being replaced counts as a record newer than all) included, and only
/// then are those hidden: so the oldest record chosen never goes back from one read to
/// the next (a ring only replaces a record with a newer one), and a record that was too
/// old to be chosen by one read is never shown by a later one, after newer ones of other
/// rings. Hence a follower that prints each new record sees them in key order.
pub struct Newest<const M: usize> {
    horizon: Key,
    kept: [Option<(Key, Option<Event>)>; M],
}

impl<const M: usize> Newest<M> {
    /// Nothing kept yet.
    pub fn new(horizon: &Horizon) -> Self {
        Newest {
            horizon: horizon.0,
            kept: [None; M],
        }
    }

    /// Takes the records of ring `ring` of `cpu` into account.
    pub fn collect<const N: usize>(&mut self, cpu: u32, ring: u8, log: &EventRing<N>) {
        let horizon = self.horizon;
        let kept = &mut self.kept;
        log.for_each_record(cpu, ring, |record| {
            let (key, shown) = match record {
                Some((key, event)) => (key, (key < horizon).then_some(event)),
                None => ((u64::MAX, cpu, ring, u64::MAX), None),
            };
            // An empty place, else the oldest kept if this one is newer.
            if let Some(free) = kept.iter().position(Option::is_none) {
                kept[free] = Some((key, shown));
            } else if let Some((index, oldest)) = kept
                .iter()
                .enumerate()
                .filter_map(|(i, entry)| entry.as_ref().map(|(k, _)| (i, *k)))
                .min_by_key(|&(_, k)| k)
            {
                if key > oldest {
                    kept[index] = Some((key, shown));
                }
            }
        });
    }

    /// Puts the records kept in order, oldest first (the empty places last).
    fn sort(&mut self) {
        self.kept.sort_unstable_by_key(|entry| {
            entry
                .as_ref()
                .map_or((u64::MAX, u32::MAX, u8::MAX, u64::MAX), |(key, _)| *key)
        });
    }

    /// The records shown, oldest first.
    pub fn sorted(mut self) -> [Option<Event>; M] {
        self.sort();
        let mut out = [None; M];
        for (place, event) in out
            .iter_mut()
            .zip(self.kept.iter().flatten().filter_map(|(_, event)| *event))
        {
            *place = Some(event);
        }
        out
    }

    /// Writes the newest records that fit in `room` bytes, one line each, oldest first.
    /// Sorts in place: no second copy of the records (a kernel stack reads this).
    pub fn write_lines(mut self, out: &mut impl Write, room: usize) -> fmt::Result {
        self.sort();
        let events = || {
            self.kept
                .iter()
                .flatten()
                .filter_map(|(_, event)| event.as_ref())
        };
        let mut lengths = [0usize; M];
        for (length, event) in lengths.iter_mut().zip(events()) {
            let mut counter = LineLength(0);
            writeln!(counter, "{event}")?;
            *length = counter.0;
        }
        // Keep the longest suffix (the newest events) whose lines fit.
        let mut used = 0;
        let kept = lengths
            .iter()
            .rev()
            .filter(|&&length| length > 0)
            .take_while(|&&length| {
                used += length;
                used <= room
            })
            .count();
        let readable = events().count();
        for event in events().skip(readable - kept) {
            writeln!(out, "{event}")?;
        }
        Ok(())
    }
}

/// Counts the bytes a line would take.
struct LineLength(usize);

impl Write for LineLength {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0 += text.len();
        Ok(())
    }
}

/// Words of an [`Offender`] slot.
const OFFENDER_WORDS: usize = 7;

fn pack_offender(offender: &Offender) -> [u64; OFFENDER_WORDS] {
    let [comm0, comm1] = pack_comm(&offender.comm);
    [
        u64::from(offender.pid as u32) | if offender.guest { GUEST } else { 0 },
        comm0,
        comm1,
        offender.bus_locks,
        offender.first_ms,
        offender.last_ms,
        offender.cgroup,
    ]
}

fn unpack_offender(words: [u64; OFFENDER_WORDS]) -> Offender {
    let [id, comm0, comm1, bus_locks, first_ms, last_ms, cgroup] = words;
    Offender {
        pid: id as u32 as i32,
        comm: unpack_comm([comm0, comm1]),
        bus_locks,
        guest: id & GUEST != 0,
        first_ms,
        last_ms,
        cgroup,
    }
}

/// One writer's Space-Saving sketch of the processes with the most bus locks: a full sketch
/// hands the entry with the fewest bus locks to a newcomer, which inherits that count. Each
/// count is then an over-estimate by at most the sketch's minimum, and every process with
/// more than `n / K` of the sketch's `n` bus locks is in it. Readers merge the sketches of
/// every CPU and context with [`TopMerge`].
///
/// One writer per sketch (a CPU's #DB notifier, or its NMI), so the writer flag is never
/// contended; were it ever, the update is counted in `dropped` rather than waited for.
///
/// # Invariants
///
/// Only the holder of `writer` changes a slot. Slot sequence words are even between writes.
/// The counts of the slots add up to the bus locks added (but the dropped).
pub struct TopSketch<const K: usize> {
    writer: AtomicBool,
    /// The slot updated last: a process that hits again is found without a scan.
    last: AtomicU64,
    dropped: AtomicU64,
    slots: [Slot<OFFENDER_WORDS>; K],
}

impl<const K: usize> Default for TopSketch<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const K: usize> TopSketch<K> {
    /// An empty sketch.
    pub const fn new() -> Self {
        TopSketch {
            writer: AtomicBool::new(false),
            last: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            slots: [const { Slot::new() }; K],
        }
    }

    /// Adds `count` bus locks of process `pid`, in cgroup `cgroup`, at `now_ms`. The entry
    /// keeps the last name and cgroup seen.
    pub fn add(&self, pid: i32, comm: Comm, guest: bool, cgroup: u64, count: u64, now_ms: u64) {
        if K == 0 || self.writer.swap(true, Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let hint = self.last.load(Ordering::Relaxed) as usize % K;
        if self.add_again(hint, pid, comm, guest, cgroup, count, now_ms) {
            self.writer.store(false, Ordering::Release);
            return;
        }
        // With the writer flag held, no slot is being written: every read succeeds.
        let current = |index: usize| self.slots[index].read().map(|(_, w)| unpack_offender(w));
        let mine = (0..K).find_map(|i| current(i).filter(|o| o.pid == pid).map(|o| (i, o)));
        let (index, updated) = match mine {
            Some((index, old)) => (
                index,
                Offender {
                    comm,
                    cgroup,
                    bus_locks: old.bus_locks.saturating_add(count),
                    guest: old.guest || guest,
                    last_ms: now_ms,
                    ..old
                },
            ),
            None => {
                let (index, inherited) = (0..K)
                    .map(|i| (i, current(i).map(|o| o.bus_locks)))
                    .min_by_key(|&(_, bus_locks)| bus_locks.map_or((0, 0), |b| (1, b)))
                    .map_or((0, 0), |(i, b)| (i, b.unwrap_or(0)));
                (
                    index,
                    Offender {
                        pid,
                        comm,
                        bus_locks: inherited.saturating_add(count),
                        guest,
                        first_ms: now_ms,
                        last_ms: now_ms,
                        cgroup,
                    },
                )
            }
        };
        let slot = &self.slots[index];
        let even = slot.sequence.load(Ordering::Relaxed);
        slot.sequence.store(even + 1, Ordering::Relaxed);
        slot.fill(even + 1, &pack_offender(&updated));
        self.last.store(index as u64, Ordering::Relaxed);
        self.writer.store(false, Ordering::Release);
    }

    /// Adds `count` bus locks to process `pid` if it is the one updated last (the usual case
    /// for a trap added to an open record, [`EventRing::coalesce`]): only its count changes;
    /// its name, cgroup and last time stay those of its last [`add`](Self::add). False,
    /// with nothing done, if it is not (the caller then [`add`](Self::add)s).
    #[inline(always)]
    pub fn add_more(&self, pid: i32, count: u64) -> bool {
        if K == 0 || self.writer.swap(true, Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let slot = &self.slots[self.last.load(Ordering::Relaxed) as usize % K];
        let even = slot.sequence.load(Ordering::Relaxed);
        let found = even != 0 && slot.words[0].load(Ordering::Relaxed) as u32 as i32 == pid;
        if found {
            let bus_locks = slot.words[3].load(Ordering::Relaxed).saturating_add(count);
            slot.sequence.store(even + 1, Ordering::Relaxed);
            fence(Ordering::Release);
            slot.words[3].store(bus_locks, Ordering::Relaxed);
            slot.sequence.store(even + 2, Ordering::Release);
        }
        self.writer.store(false, Ordering::Release);
        found
    }

    /// The fast path of [`add`](Self::add), writer flag held: if slot `index` is process
    /// `pid`'s (the one updated last, usually), updates only the words that change.
    #[allow(clippy::too_many_arguments)]
    fn add_again(
        &self,
        index: usize,
        pid: i32,
        comm: Comm,
        guest: bool,
        cgroup: u64,
        count: u64,
        now_ms: u64,
    ) -> bool {
        let slot = &self.slots[index];
        let even = slot.sequence.load(Ordering::Relaxed);
        let id = slot.words[0].load(Ordering::Relaxed);
        if even == 0 || id as u32 as i32 != pid {
            return false;
        }
        let [comm0, comm1] = pack_comm(&comm);
        let bus_locks = slot.words[3].load(Ordering::Relaxed).saturating_add(count);
        slot.sequence.store(even + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let words = &slot.words;
        words[0].store(id | if guest { GUEST } else { 0 }, Ordering::Relaxed);
        words[1].store(comm0, Ordering::Relaxed);
        words[2].store(comm1, Ordering::Relaxed);
        words[3].store(bus_locks, Ordering::Relaxed);
        words[5].store(now_ms, Ordering::Relaxed);
        words[6].store(cgroup, Ordering::Relaxed);
        slot.sequence.store(even + 2, Ordering::Release);
        true
    }

    /// Updates that could not be applied.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Entries in use (a sketch fills up and never empties): the room a merge needs.
    pub fn occupied(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.sequence.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// A copy of every entry (a slot being written is read again, a few times at most).
    fn snapshot(&self) -> [Option<Offender>; K] {
        let mut table = [None; K];
        for (copy, slot) in table.iter_mut().zip(&self.slots) {
            *copy = (0..8)
                .find_map(|_| {
                    let sequence = slot.sequence.load(Ordering::Acquire);
                    if sequence == 0 {
                        return Some(None);
                    }
                    slot.read().map(|(_, words)| Some(unpack_offender(words)))
                })
                .flatten();
        }
        table
    }
}

/// A process's place in the merge of many sketches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidate {
    pid: i32,
    count: u64,
    /// The minimum of the sketch the count is from (0 if it was not full).
    sketch_min: u64,
}

/// Merges [`TopSketch`]es (one per CPU and context) into the `K` processes with the most
/// bus locks, in a buffer the caller provides (room for the sketches'
/// [`occupied`](TopSketch::occupied) entries, counted first: slots only ever fill).
///
/// A process absent from a sketch had at most that sketch's minimum bus locks there, so
/// its merged count is the sum of its counts where present plus the minimums of the
/// sketches where absent: never under the truth, over it by at most `M`, the sum of every
/// sketch's minimum, itself at most `total / K` (each sketch's minimum is at most its own
/// `n_c / K`). A process with more than `total / K` bus locks had more than `n_c / K` on some
/// CPU `c`, so it is in that sketch, and it ranks among the `K` largest merged counts (the
/// merged counts less `M` add up to at most `total - K * M`, so at most `K - 1` others can
/// reach its count).
pub struct TopMerge<'b> {
    buf: &'b mut [Candidate],
    len: usize,
    min_sum: u64,
    /// Candidates that did not fit in the buffer.
    overflow: bool,
}

impl<'b> TopMerge<'b> {
    /// An empty merge into `buf`.
    pub fn new(buf: &'b mut [Candidate]) -> Self {
        TopMerge {
            buf,
            len: 0,
            min_sum: 0,
            overflow: false,
        }
    }

    /// Adds one sketch's entries.
    pub fn see<const K: usize>(&mut self, sketch: &TopSketch<K>) {
        let table = sketch.snapshot();
        let full = table.iter().all(Option::is_some);
        let sketch_min = if full {
            table
                .iter()
                .flatten()
                .map(|o| o.bus_locks)
                .min()
                .unwrap_or(0)
        } else {
            0
        };
        self.min_sum = self.min_sum.saturating_add(sketch_min);
        for offender in table.iter().flatten() {
            match self.buf.get_mut(self.len) {
                Some(place) => {
                    *place = Candidate {
                        pid: offender.pid,
                        count: offender.bus_locks,
                        sketch_min,
                    };
                    self.len += 1;
                }
                None => self.overflow = true,
            }
        }
    }

    /// The `K` processes with the largest merged counts, most first (ties: lower pid
    /// first), as (pid, merged count).
    pub fn top<const K: usize>(self) -> [Option<(i32, u64)>; K] {
        let candidates = &mut self.buf[..self.len];
        candidates.sort_unstable_by_key(|c| c.pid);
        let mut top: [Option<(i32, u64)>; K] = [None; K];
        let mut rest = &candidates[..];
        while let Some(first) = rest.first() {
            let run = rest.iter().take_while(|c| c.pid == first.pid).count();
            let (mine, after) = rest.split_at(run);
            rest = after;
            let present: u64 = mine.iter().map(|c| c.count).fold(0, u64::saturating_add);
            let mins: u64 = mine
                .iter()
                .map(|c| c.sketch_min)
                .fold(0, u64::saturating_add);
            let merged = present.saturating_add(self.min_sum.saturating_sub(mins));
            let rank = |entry: &Option<(i32, u64)>| entry.map(|(pid, n)| (n, -i64::from(pid)));
            let candidate = Some((first.pid, merged));
            // Replace the smallest kept (an empty place first) if this one ranks above it.
            if let Some(smallest) = top.iter_mut().min_by_key(|e| rank(e)) {
                if rank(smallest) < rank(&candidate) {
                    *smallest = candidate;
                }
            }
        }
        top.sort_unstable_by(|a, b| {
            let key =
                |e: &Option<(i32, u64)>| e.map_or((0, i64::MIN), |(pid, n)| (n, -i64::from(pid)));
            key(b).cmp(&key(a))
        });
        top
    }

    /// Whether some candidates did not fit in the buffer.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }
}

/// The details of the processes [`TopMerge::top`] chose, from a second pass over the
/// sketches: the first and last times seen, and the name, cgroup and guest flag of the
/// latest entry.
pub struct TopDetails<const K: usize> {
    rows: [Option<Offender>; K],
}

impl<const K: usize> TopDetails<K> {
    /// For the processes chosen, with their merged counts.
    pub fn new(top: &[Option<(i32, u64)>; K]) -> Self {
        TopDetails {
            rows: top.map(|entry| {
                entry.map(|(pid, bus_locks)| Offender {
                    pid,
                    comm: Comm::default(),
                    bus_locks,
                    guest: false,
                    first_ms: u64::MAX,
                    last_ms: 0,
                    cgroup: 0,
                })
            }),
        }
    }

    /// Takes one sketch's entries of the chosen processes into account.
    pub fn see<const S: usize>(&mut self, sketch: &TopSketch<S>) {
        for entry in sketch.snapshot().iter().flatten() {
            for row in self.rows.iter_mut().flatten() {
                if row.pid != entry.pid {
                    continue;
                }
                row.first_ms = row.first_ms.min(entry.first_ms);
                row.guest |= entry.guest;
                if entry.last_ms >= row.last_ms {
                    row.last_ms = entry.last_ms;
                    row.comm = entry.comm;
                    row.cgroup = entry.cgroup;
                }
            }
        }
    }

    /// Calls `visit` for each process, most bus locks first.
    pub fn for_each(&self, visit: impl FnMut(&Offender)) {
        self.rows
            .iter()
            .flatten()
            .filter(|row| row.first_ms != u64::MAX)
            .for_each(visit);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::vec::Vec;

    fn event(n: u64) -> Event {
        Event {
            seq: 0,
            ms: 0,
            cpu: (n % 4) as u32,
            pid: n as i32,
            tid: -(n as i32),
            comm: Comm::new(b"offender"),
            source: if n % 2 == 0 { Source::Bld } else { Source::Pmu },
            guest: n % 3 == 0,
            ip: n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            count: n + 1,
            action: [Action::None, Action::Warn, Action::Kill, Action::Throttle][(n % 4) as usize],
            map: None,
            cgroup: n * 7 + 1,
        }
    }

    /// Writes `event` into `ring` at `ns`, returns its number.
    fn write<const N: usize>(ring: &EventRing<N>, ns: u64, event: &Event) -> u64 {
        let writing = ring.begin();
        let seq = writing.seq();
        writing.finish(ns, event);
        seq
    }

    /// Everything readable in `rings` (cpu = index, ring 0) below a horizon at `now`.
    fn merged<const N: usize, const M: usize>(rings: &[EventRing<N>], now: u64) -> Vec<Event> {
        let mut horizon = Horizon::new(now);
        for (cpu, ring) in rings.iter().enumerate() {
            horizon.see(cpu as u32, 0, ring);
        }
        let mut newest = Newest::<M>::new(&horizon);
        for (cpu, ring) in rings.iter().enumerate() {
            newest.collect(cpu as u32, 0, ring);
        }
        newest.sorted().into_iter().flatten().collect()
    }

    #[test]
    fn a_ring_keeps_its_newest_n_in_order_with_their_fields() {
        let ring = EventRing::<4>::new();
        assert!(merged::<4, 8>(core::slice::from_ref(&ring), u64::MAX).is_empty());
        for n in 0..10 {
            assert_eq!(write(&ring, n * 10_000_000, &event(n)), n);
        }
        let seen = merged::<4, 8>(core::slice::from_ref(&ring), u64::MAX);
        assert_eq!(seen.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8, 9]);
        for e in seen {
            assert_eq!(
                e,
                Event {
                    seq: e.seq,
                    ms: e.seq * 10,
                    ..event(e.seq)
                }
            );
        }
        assert_eq!(ring.dropped(), 0);
    }

    #[test]
    fn record_ids_round_trip() {
        for (cpu, ring, seq) in [(0, 0, 0), (8191, 1, 12345), (32767, 1, (1 << 48) - 1)] {
            let id = RecordId { cpu, ring, seq };
            assert_eq!(RecordId::from_word(id.to_word()), id);
        }
        let big = RecordId {
            cpu: 3,
            ring: 0,
            seq: u64::MAX,
        };
        assert_eq!(RecordId::from_word(big.to_word()).seq, (1 << 48) - 1);
    }

    #[test]
    fn a_slot_held_by_another_writer_drops_the_newcomer_and_counts_it() {
        let ring = EventRing::<2>::new();
        write(&ring, 1, &event(0));
        // A writer of seq 2 is "inside" slot 0: the sequence word is odd.
        ring.slots[0].sequence.store(2 * 2 + 1, Ordering::Relaxed);
        ring.next_seq.store(4, Ordering::Relaxed);
        write(&ring, 2, &event(4));
        assert_eq!(ring.dropped(), 1);
        // An abandoned record is lost, and counted.
        drop(ring.begin());
        assert_eq!(ring.dropped(), 2);
        assert!(!ring.in_flight.load(Ordering::Relaxed));
    }

    #[test]
    fn a_record_in_flight_holds_back_newer_records_of_other_rings() {
        let rings = [EventRing::<4>::new(), EventRing::<4>::new()];
        write(&rings[0], 100, &event(0));
        // CPU 0 begins a record; CPU 1 writes a newer one meanwhile.
        let writing = rings[0].begin();
        write(&rings[1], 300, &event(1));
        let seen = merged::<4, 8>(&rings, 1000);
        assert_eq!(seen.iter().map(|e| e.pid).collect::<Vec<_>>(), [0]);
        // CPU 0 finishes with a time before CPU 1's: shown first, nothing reordered.
        writing.finish(200, &event(2));
        let seen = merged::<4, 8>(&rings, 1000);
        assert_eq!(seen.iter().map(|e| e.pid).collect::<Vec<_>>(), [0, 2, 1]);
        // Records not older than the reader's clock wait for a later read.
        write(&rings[1], 2000, &event(3));
        assert_eq!(merged::<4, 8>(&rings, 1000).len(), 3);
        assert_eq!(merged::<4, 8>(&rings, 2001).len(), 4);
    }

    proptest! {
        /// Records written to several rings, each ring in time order (one CPU's clock), are
        /// read back as the newest M of all of them, in (time, cpu, seq) order.
        #[test]
        fn merged_rings_show_the_newest_in_key_order(
            writes in proptest::collection::vec((0u32..4, 0u64..5), 0..200)
        ) {
            let rings = [const { EventRing::<8>::new() }; 4];
            let mut clock = [0u64; 4];
            let mut all = Vec::new();
            for (n, &(cpu, step)) in writes.iter().enumerate() {
                let c = cpu as usize;
                clock[c] += step;
                let seq = write(&rings[c], clock[c], &event(n as u64));
                all.push(((clock[c], cpu, 0u8, seq), n as i32));
            }
            // What each ring still holds: its newest 8.
            let held: Vec<_> = all
                .iter()
                .filter(|((_, cpu, _, seq), _)| {
                    let next = rings[*cpu as usize].next_seq.load(Ordering::Relaxed);
                    seq + 8 >= next
                })
                .copied()
                .collect();
            let mut expected = held.clone();
            expected.sort();
            let expected: Vec<i32> = expected.iter().rev().take(6).rev().map(|(_, pid)| *pid).collect();
            let seen: Vec<i32> = merged::<8, 6>(&rings, u64::MAX).iter().map(|e| e.pid).collect();
            prop_assert_eq!(seen, expected);
        }
    }

    #[test]
    fn concurrent_writers_and_a_reader_never_see_a_torn_or_reordered_record() {
        let rings = Arc::new([const { EventRing::<8>::new() }; 3]);
        let clock = Arc::new(AtomicU64::new(1));
        let writers: Vec<_> = (0..3)
            .map(|t| {
                let rings = rings.clone();
                let clock = clock.clone();
                std::thread::spawn(move || {
                    for n in 0..20_000u64 {
                        let writing = rings[t].begin();
                        let now = clock.fetch_add(1, Ordering::SeqCst);
                        writing.finish(now, &event(t as u64 * 100_000 + n));
                    }
                })
            })
            .collect();
        let mut reads = 0;
        while !writers.iter().all(|w| w.is_finished()) {
            let now = clock.load(Ordering::SeqCst);
            let mut horizon = Horizon::new(now);
            for (cpu, ring) in rings.iter().enumerate() {
                horizon.see(cpu as u32, 0, ring);
            }
            let mut newest = Newest::<8>::new(&horizon);
            for (cpu, ring) in rings.iter().enumerate() {
                newest.collect(cpu as u32, 0, ring);
            }
            let kept: Vec<(Key, Event)> = {
                let mut k: Vec<_> = newest
                    .kept
                    .iter()
                    .flatten()
                    .filter_map(|(key, event)| event.map(|e| (*key, e)))
                    .collect();
                k.sort_by_key(|(key, _)| *key);
                k
            };
            for (key, e) in &kept {
                // Every field derives from the pid: a torn copy would not match.
                assert_eq!(
                    *e,
                    Event {
                        seq: e.seq,
                        ms: key.0 / 1_000_000,
                        ..event(e.pid as u64)
                    }
                );
            }
            for pair in kept.windows(2) {
                assert!(pair[0].0 < pair[1].0);
            }
            reads += 1;
        }
        writers.into_iter().for_each(|w| w.join().unwrap());
        assert!(reads > 0);
        assert!(rings.iter().all(|r| r.dropped() == 0));
    }

    /// The horizon's promise, checked the way `amd-sld events --follow` relies on it: of
    /// three CPUs writing with one shared clock, every record a reader shows sorts after
    /// every record an earlier read showed, unless that earlier read showed it too.
    #[test]
    fn a_follower_never_sees_a_record_turn_up_before_one_it_printed() {
        let rings = Arc::new([const { EventRing::<32>::new() }; 3]);
        let clock = Arc::new(AtomicU64::new(1));
        let writers: Vec<_> = (0..3)
            .map(|t| {
                let rings = rings.clone();
                let clock = clock.clone();
                std::thread::spawn(move || {
                    for n in 0..20_000u64 {
                        let writing = rings[t].begin();
                        let now = clock.fetch_add(1, Ordering::SeqCst);
                        std::hint::spin_loop();
                        writing.finish(now, &event(n));
                    }
                })
            })
            .collect();
        let mut printed: Option<Key> = None;
        let mut seen = std::collections::HashSet::new();
        while !writers.iter().all(|w| w.is_finished()) {
            let now = clock.load(Ordering::SeqCst);
            let mut horizon = Horizon::new(now);
            for (cpu, ring) in rings.iter().enumerate() {
                horizon.see(cpu as u32, 0, ring);
            }
            let mut newest = Newest::<32>::new(&horizon);
            for (cpu, ring) in rings.iter().enumerate() {
                newest.collect(cpu as u32, 0, ring);
            }
            let mut keys: Vec<Key> = newest
                .kept
                .iter()
                .flatten()
                .filter(|(_, event)| event.is_some())
                .map(|(k, _)| *k)
                .collect();
            keys.sort();
            for key in keys {
                if seen.insert(key) {
                    if let Some(last) = printed {
                        assert!(key > last, "{key:?} after {last:?}");
                    }
                    printed = Some(key);
                }
            }
        }
        writers.into_iter().for_each(|w| w.join().unwrap());
    }

    #[test]
    fn writes_the_newest_lines_that_fit() {
        let ring = EventRing::<8>::new();
        for n in 0..8 {
            write(&ring, n, &event(n));
        }
        let lines_of = |room: usize| {
            let mut horizon = Horizon::new(u64::MAX);
            horizon.see(0, 0, &ring);
            let mut newest = Newest::<8>::new(&horizon);
            newest.collect(0, 0, &ring);
            let mut out = std::string::String::new();
            newest.write_lines(&mut out, room).unwrap();
            out
        };
        let all = lines_of(usize::MAX);
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines.len(), 8);
        let room = lines[5..].iter().map(|l| l.len() + 1).sum::<usize>();
        assert_eq!(lines_of(room + 1).lines().collect::<Vec<_>>(), lines[5..]);
        assert!(lines_of(10).is_empty());
        for line in lines {
            assert!(Event::parse(line).is_ok(), "{line}");
        }
    }

    /// Issue 13, item 10: 32 records of the longest form, the newest of which fill a 4096-byte
    /// sysfs page exactly, are shown in fewer than 4096 bytes (sysfs cuts a full page and
    /// logs "fill_read_buffer: ... returned bad count"), as whole lines only.
    #[test]
    fn events_leave_room_in_a_full_sysfs_page() {
        const PAGE: usize = 4096;
        // Sequence numbers from 2^40 on: 13 digits for every line.
        const FIRST_SEQ: u64 = 1 << 40;
        let maximal = |count: u64, cgroup: u64| Event {
            seq: FIRST_SEQ,
            ms: u64::MAX / 1_000_000,
            cpu: u32::MAX,
            pid: i32::MIN,
            tid: i32::MIN,
            comm: Comm::new(&[0xff; 15]),
            source: Source::Pmu,
            guest: true,
            ip: u64::MAX,
            count,
            action: Action::Throttle,
            map: Mapping::new(&[0xff; MAP_NAME_LEN], u64::MAX),
            cgroup,
        };
        let length = |event: &Event| std::format!("{event}\n").len();
        let longest = length(&maximal(u64::MAX, u64::MAX));
        let lines = PAGE.div_ceil(longest);
        // Counts, then cgroups, shortened by up to 19 digits each.
        let mut counts = std::vec![(u64::MAX, u64::MAX); lines];
        let mut excess = lines * longest - PAGE;
        for (count, cgroup) in counts.iter_mut() {
            for value in [count, cgroup] {
                let digits = excess.min(19);
                *value /= 10u64.pow(digits as u32);
                excess -= digits;
            }
        }
        assert_eq!(
            excess, 0,
            "lines of {longest} bytes cannot fill {PAGE} exactly"
        );
        let ring = EventRing::<EVENT_LOG_LEN>::new();
        ring.next_seq.store(FIRST_SEQ, Ordering::Relaxed);
        let ns = u64::MAX - 1000;
        for _ in 0..EVENT_LOG_LEN - lines {
            write(&ring, ns, &maximal(u64::MAX, u64::MAX));
        }
        for &(count, cgroup) in &counts {
            write(&ring, ns, &maximal(count, cgroup));
        }
        let read = || {
            let mut horizon = Horizon::new(u64::MAX);
            horizon.see(u32::MAX, 1, &ring);
            let mut newest = Newest::<EVENT_LOG_LEN>::new(&horizon);
            newest.collect(u32::MAX, 1, &ring);
            newest
        };
        let all: Vec<Event> = read().sorted().into_iter().flatten().collect();
        assert_eq!(all.len(), EVENT_LOG_LEN);
        let newest: usize = all[EVENT_LOG_LEN - lines..].iter().map(length).sum();
        assert_eq!(newest, PAGE, "the newest {lines} lines fill the page");
        let mut page = [0u8; PAGE];
        let mut out = crate::fmtbuf::SliceWriter::sysfs_page(&mut page);
        let room = out.room();
        read().write_lines(&mut out, room).unwrap();
        let len = out.len();
        assert!(len < PAGE, "{len} bytes for a {PAGE}-byte page");
        let text = core::str::from_utf8(&page[..len]).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().count(), lines - 1);
        for line in text.lines() {
            assert!(Event::parse(line).is_ok(), "{line}");
        }
    }

    fn mapping(n: u64) -> Mapping {
        Mapping::new(std::format!("lib{n}.so").as_bytes(), n * 0x10).unwrap()
    }

    #[test]
    fn a_mapping_completes_its_own_record_only() {
        let rings = [EventRing::<2>::new()];
        let ring = &rings[0];
        let first = write(ring, 1, &event(1));
        assert_eq!(
            merged::<2, 4>(&rings, u64::MAX)[0].map,
            None,
            "not looked up yet"
        );
        assert!(ring.complete(first, &mapping(1)));
        assert_eq!(merged::<2, 4>(&rings, u64::MAX)[0].map, Some(mapping(1)));
        // Records 1 and 2 are written; 2 takes slot 0 from record 0, whose late mapping
        // must not land on it.
        let second = write(ring, 2, &event(2));
        let third = write(ring, 3, &event(3));
        assert_eq!((second, third), (1, 2));
        assert!(
            !ring.complete(first, &mapping(9)),
            "slot 0 is record 2's now"
        );
        assert!(ring.complete(third, &mapping(3)));
        assert!(!ring.complete(third, &mapping(4)), "completed once");
        let seen = merged::<2, 4>(&rings, u64::MAX);
        assert_eq!(seen.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(seen[0].map, None);
        assert_eq!(seen[1].map, Some(mapping(3)));
        // A mapping known when the record is written is written with it.
        let fourth = write(
            ring,
            4,
            &Event {
                map: Some(mapping(4)),
                ..event(4)
            },
        );
        assert_eq!(fourth, 3);
        assert_eq!(merged::<2, 4>(&rings, u64::MAX)[1].map, Some(mapping(4)));
        // A mapping older than the record in the slot is never paired with it.
        let rings = [EventRing::<1>::new()];
        write(&rings[0], 1, &event(0));
        rings[0].complete(0, &mapping(0));
        write(&rings[0], 2, &event(1));
        assert_eq!(merged::<1, 1>(&rings, u64::MAX)[0].map, None);
    }

    #[test]
    fn concurrent_completions_pair_with_their_own_records() {
        let ring = Arc::new(EventRing::<4>::new());
        let writer = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                for n in 0..20_000u64 {
                    let seq = write(&ring, n, &event(n));
                    assert_eq!(seq, n);
                }
            })
        };
        let completers: Vec<_> = (0..2)
            .map(|_| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for n in 0..20_000u64 {
                        ring.complete(n, &mapping(n));
                    }
                })
            })
            .collect();
        while !writer.is_finished() {
            for e in merged::<4, 4>(core::slice::from_ref(&*ring), u64::MAX) {
                assert_eq!(e.pid as u64, e.seq);
                if let Some(map) = e.map {
                    assert_eq!(map, mapping(e.seq));
                }
            }
        }
        writer.join().unwrap();
        completers.into_iter().for_each(|c| c.join().unwrap());
    }

    /// A trap of thread `tid` of process 7 at `ip`, dealt with by `action`, into `ring` (and
    /// `top`) as the #DB notifier does it: added to the open record if it is the same, else
    /// written as a new open record at `ns`. Returns the record's number.
    fn trap<const N: usize>(
        ring: &EventRing<N>,
        top: &TopSketch<4>,
        ns: u64,
        tid: i32,
        ip: u64,
        action: Action,
    ) -> u64 {
        if let Some(seq) = ring.coalesce(7, tid, ip, action) {
            if !top.add_more(7, 1) {
                top.add(7, Comm::new(b"t"), false, 0, 1, ns / 1_000_000);
            }
            return seq;
        }
        let writing = ring.begin();
        let seq = writing.seq();
        let event = Event {
            cpu: 0,
            pid: 7,
            tid,
            source: Source::Bld,
            guest: false,
            ip,
            count: 1,
            action,
            ..event(0)
        };
        writing.finish_open(ns, &event, None);
        top.add(7, Comm::new(b"t"), false, 0, 1, ns / 1_000_000);
        seq
    }

    /// (seq, count) of everything readable in `ring`.
    fn counts<const N: usize>(ring: &EventRing<N>) -> Vec<(u64, u64)> {
        merged::<N, N>(core::slice::from_ref(ring), u64::MAX)
            .iter()
            .map(|e| (e.seq, e.count))
            .collect()
    }

    #[test]
    fn identical_traps_are_added_to_the_open_record() {
        let ring = EventRing::<4>::new();
        let sketch = TopSketch::<4>::new();
        assert_eq!(
            ring.coalesce(7, 1, 0x10, Action::Warn),
            None,
            "no record yet"
        );
        for _ in 0..5 {
            assert_eq!(trap(&ring, &sketch, 100, 1, 0x10, Action::Warn), 0);
        }
        // Another IP, thread or action: a record of its own, which is then the open one.
        assert_eq!(trap(&ring, &sketch, 200, 1, 0x20, Action::Warn), 1);
        assert_eq!(trap(&ring, &sketch, 300, 2, 0x20, Action::Warn), 2);
        assert_eq!(trap(&ring, &sketch, 400, 2, 0x20, Action::Kill), 3);
        assert_eq!(trap(&ring, &sketch, 500, 2, 0x20, Action::Kill), 3);
        // The earlier record, no longer the newest, is never added to again.
        assert_eq!(trap(&ring, &sketch, 600, 1, 0x10, Action::Warn), 4);
        let seen = merged::<4, 8>(core::slice::from_ref(&ring), u64::MAX);
        assert_eq!(
            seen.iter().map(|e| (e.seq, e.count)).collect::<Vec<_>>(),
            [(1, 1), (2, 1), (3, 2), (4, 1)]
        );
        // The record keeps its first trap's time and fields.
        assert_eq!((seen[2].ms, seen[2].tid, seen[2].ip), (0, 2, 0x20));
        assert_eq!(seen[2].action, Action::Kill);
        assert_eq!(top(core::slice::from_ref(&sketch)), [(7, 10)]);
        assert_eq!(ring.dropped() + sketch.dropped(), 0);
        // Records not written open (the PMU's) are never added to.
        let pmu = EventRing::<4>::new();
        write(
            &pmu,
            1,
            &Event {
                pid: 7,
                tid: 1,
                ip: 0x10,
                source: Source::Bld,
                guest: false,
                action: Action::Warn,
                ..event(0)
            },
        );
        assert_eq!(pmu.coalesce(7, 1, 0x10, Action::Warn), None);
        // Nor a guest's or a PMU sample's, even written open.
        for (source, guest) in [(Source::Pmu, false), (Source::Bld, true)] {
            let writing = pmu.begin();
            writing.finish_open(
                2,
                &Event {
                    pid: 7,
                    tid: 1,
                    ip: 0x10,
                    source,
                    guest,
                    action: Action::Warn,
                    ..event(0)
                },
                None,
            );
            assert_eq!(pmu.coalesce(7, 1, 0x10, Action::Warn), None);
        }
    }

    #[test]
    fn a_read_closes_the_records_it_shows() {
        let ring = EventRing::<4>::new();
        let sketch = TopSketch::<4>::new();
        for _ in 0..3 {
            trap(&ring, &sketch, 100, 1, 0x10, Action::Warn);
        }
        assert_eq!(counts(&ring), [(0, 3)]);
        // Seen with 3: final. The same trap again starts a new record.
        assert_eq!(ring.coalesce(7, 1, 0x10, Action::Warn), None);
        assert_eq!(trap(&ring, &sketch, 200, 1, 0x10, Action::Warn), 1);
        assert_eq!(trap(&ring, &sketch, 300, 1, 0x10, Action::Warn), 1);
        assert_eq!(counts(&ring), [(0, 3), (1, 2)]);
        assert_eq!(
            counts(&ring),
            [(0, 3), (1, 2)],
            "a second read changes nothing"
        );
        assert_eq!(top(core::slice::from_ref(&sketch)), [(7, 5)]);
        // A record held back by the horizon is closed all the same (its count is final
        // whenever it is shown).
        trap(&ring, &sketch, 1000, 1, 0x10, Action::Warn);
        assert_eq!(merged::<4, 4>(core::slice::from_ref(&ring), 500).len(), 2);
        assert_eq!(ring.coalesce(7, 1, 0x10, Action::Warn), None);
    }

    /// A writer adding traps to open records (and now and then writing a different one)
    /// while a reader reads: every record's count is final once read, and after a last
    /// read, the counts read add up to the traps made.
    #[test]
    fn a_reader_closing_records_never_loses_a_count() {
        const TRAPS: u64 = 200_000;
        let ring = Arc::new(EventRing::<64>::new());
        let sketch = Arc::new(TopSketch::<4>::new());
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (ring, sketch, done) = (ring.clone(), sketch.clone(), done.clone());
            std::thread::spawn(move || {
                for n in 0..TRAPS {
                    // A different IP every 5000 traps: records not closed by a reader.
                    let ip = 0x1000 + n / 5000;
                    trap(&ring, &sketch, n, 1, ip, Action::Warn);
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut seen = std::collections::BTreeMap::<u64, u64>::new();
        let read = |seen: &mut std::collections::BTreeMap<u64, u64>| {
            for (seq, count) in counts(&*ring) {
                let first = *seen.entry(seq).or_insert(count);
                assert_eq!(first, count, "record {seq} changed after it was read");
            }
        };
        let mut reads = 0;
        while !done.load(Ordering::SeqCst) {
            read(&mut seen);
            reads += 1;
        }
        writer.join().unwrap();
        read(&mut seen);
        assert!(reads > 0);
        let records = seen.len() as u64;
        assert_eq!(
            ring.next_seq.load(Ordering::Relaxed),
            records,
            "every record was read before it was overwritten"
        );
        assert_eq!(seen.values().sum::<u64>(), TRAPS);
        assert_eq!(top(core::slice::from_ref(&*sketch)), [(7, TRAPS)]);
        assert_eq!(ring.dropped() + sketch.dropped(), 0);
    }

    /// The merged table of `sketches`, as (pid, count).
    fn top<const K: usize>(sketches: &[TopSketch<K>]) -> Vec<(i32, u64)> {
        let mut buf = std::vec![Candidate::default(); K * sketches.len()];
        let mut merge = TopMerge::new(&mut buf);
        sketches.iter().for_each(|s| merge.see(s));
        assert!(!merge.overflowed());
        merge.top::<K>().iter().flatten().copied().collect()
    }

    #[test]
    fn accumulates_per_process_most_first() {
        let sketches = [TopSketch::<4>::new()];
        let sketch = &sketches[0];
        sketch.add(10, Comm::new(b"a"), false, 3, 5, 100);
        sketch.add(20, Comm::new(b"b"), true, 3, 7, 110);
        sketch.add(10, Comm::new(b"a2"), false, 9, 5, 120);
        assert_eq!(top(&sketches), [(10, 10), (20, 7)]);
        let mut details = TopDetails::new(&[Some((10, 10)), Some((20, 7)), None, None]);
        details.see(sketch);
        let mut rows = Vec::new();
        details.for_each(|o| rows.push(*o));
        assert_eq!(
            (
                rows[0].first_ms,
                rows[0].last_ms,
                rows[0].comm,
                rows[0].cgroup
            ),
            (100, 120, Comm::new(b"a2"), 9)
        );
        assert!(rows[1].guest && !rows[0].guest);
        assert_eq!(sketch.dropped(), 0);
    }

    #[test]
    fn details_merge_across_sketches() {
        let sketches = [TopSketch::<2>::new(), TopSketch::<2>::new()];
        sketches[0].add(7, Comm::new(b"old"), false, 1, 1, 50);
        sketches[1].add(7, Comm::new(b"new"), true, 2, 2, 80);
        sketches[0].add(7, Comm::new(b"mid"), false, 3, 1, 60);
        let chosen: Vec<_> = top(&sketches);
        assert_eq!(chosen, [(7, 4)]);
        let mut details = TopDetails::new(&[Some((7, 4)), None]);
        sketches.iter().for_each(|s| details.see(s));
        let mut rows = Vec::new();
        details.for_each(|o| rows.push(*o));
        assert_eq!(
            (
                rows[0].first_ms,
                rows[0].last_ms,
                rows[0].comm,
                rows[0].cgroup,
                rows[0].guest
            ),
            (50, 80, Comm::new(b"new"), 2, true)
        );
    }

    #[test]
    fn a_busy_sketch_drops_and_counts() {
        let sketch = TopSketch::<2>::new();
        sketch.writer.store(true, Ordering::Relaxed);
        sketch.add(1, Comm::new(b"x"), false, 3, 1, 0);
        assert_eq!(sketch.dropped(), 1);
        sketch.writer.store(false, Ordering::Relaxed);
        sketch.add(1, Comm::new(b"x"), false, 3, 1, 0);
        assert_eq!(top(core::slice::from_ref(&sketch)), [(1, 1)]);
    }

    proptest! {
        /// Per-CPU Space-Saving sketches merged on read keep the single sketch's promises:
        /// no process is under-counted, none over-counted by more than the sum of the
        /// sketches' minimums, which is at most total / K, and every process with more than
        /// total / K bus locks is listed.
        #[test]
        fn merged_sketches_bound_every_count_and_list_every_heavy_hitter(
            adds in proptest::collection::vec((0usize..4, 0i32..40, 1u64..20), 1..600),
            heavy in proptest::collection::vec((0usize..4, 1u64..40), 0..60),
        ) {
            const K: usize = 4;
            let sketches = [const { TopSketch::<K>::new() }; 4];
            let mut truth = std::collections::HashMap::<i32, u64>::new();
            let mut total = 0u64;
            let mut feed = |cpu: usize, pid: i32, count: u64| {
                sketches[cpu].add(pid, Comm::new(b"p"), false, 0, count, 0);
                *truth.entry(pid).or_default() += count;
                total += count;
            };
            // Heavy pid 1000 interleaved among the others, on any CPU.
            for (i, &(cpu, pid, count)) in adds.iter().enumerate() {
                feed(cpu, pid, count);
                if let Some(&(cpu, count)) = heavy.get(i % 97) {
                    if i % 7 == 0 {
                        feed(cpu, 1000, count);
                    }
                }
            }
            let mins: u64 = sketches
                .iter()
                .map(|s| {
                    let t = s.snapshot();
                    if t.iter().all(Option::is_some) {
                        t.iter().flatten().map(|o| o.bus_locks).min().unwrap()
                    } else {
                        0
                    }
                })
                .sum();
            prop_assert!(mins * K as u64 <= total);
            let listed = top(&sketches);
            prop_assert!(listed.len() <= K);
            for &(pid, merged) in &listed {
                let real = truth[&pid];
                prop_assert!(merged >= real, "pid {} under-counted: {} < {}", pid, merged, real);
                prop_assert!(merged <= real + mins, "pid {}: {} > {} + {}", pid, merged, real, mins);
            }
            for (&pid, &real) in &truth {
                if real * K as u64 > total {
                    prop_assert!(listed.iter().any(|&(p, _)| p == pid), "heavy pid {} ({} of {}) missing", pid, real, total);
                }
            }
        }
    }

    #[test]
    fn the_same_process_again_is_found_at_its_last_slot() {
        let sketch = TopSketch::<4>::new();
        for pid in 0..4 {
            sketch.add(pid, Comm::new(b"p"), false, 0, 1, 0);
        }
        assert_eq!(sketch.last.load(Ordering::Relaxed), 3);
        sketch.add(3, Comm::new(b"p"), false, 0, 1, 0);
        assert_eq!(sketch.last.load(Ordering::Relaxed), 3);
        sketch.add(1, Comm::new(b"p"), false, 0, 1, 0);
        assert_eq!(sketch.last.load(Ordering::Relaxed), 1);
        // A newcomer takes the smallest (the first of the 1s: pid 0 at slot 0).
        sketch.add(9, Comm::new(b"p"), false, 0, 1, 0);
        assert_eq!(sketch.last.load(Ordering::Relaxed), 0);
        assert_eq!(
            top(core::slice::from_ref(&sketch)),
            [(1, 2), (3, 2), (9, 2), (2, 1)]
        );
    }
}
