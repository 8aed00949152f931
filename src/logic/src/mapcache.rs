//! A CPU's cache of the last mapping looked up for a bus-lock record (`map=`), so that a
//! task trapping again in the same file mapping gets its record completed in the #DB
//! notifier or the NMI, without a task work and its mmap lock.
//!
//! The task's work fills it in process context (possibly preempted, possibly on another
//! CPU than the trap's: it fills the cache of the CPU it runs on); the notifier reads it
//! with interrupts off and may interrupt a fill. So the one entry is a seqlock with a
//! try-claim: a writer that finds another at work gives up (the cache keeps what it had), a
//! reader that finds a writer at work, or the word changed while it read, takes it as a
//! miss. Nothing waits.
//!
//! Staleness: an entry is keyed by the address space (the `mm_struct` pointer) and the
//! process (tgid) and holds the VMA's range, its file's base name and the file offset of
//! its start, as found under the mmap lock. A hit names that file even if the task has
//! since unmapped that range and mapped another file there (no mmap-lock is taken in the
//! notifier): the name is the one of the last lookup of that range on that CPU, refreshed by
//! the next miss. An mm freed and reallocated to another process is told apart by the tgid.

use core::sync::atomic::{fence, AtomicU64, Ordering};

use crate::eventlog::PackedMapping;
use crate::record::{Mapping, MAP_NAME_LEN};

/// Words of the entry: mm, tgid, start, end, file offset of start, the name.
const WORDS: usize = 5 + MAP_NAME_LEN / 8;

/// A mapping's name as 4 words, little-endian (the order of the slots of src/logic
/// eventlog.rs too).
pub fn name_words(name: &[u8; MAP_NAME_LEN]) -> [u64; 4] {
    let (low, high) = name.split_at(16);
    let low = u128::from_le_bytes(low.try_into().unwrap_or([0; 16]));
    let high = u128::from_le_bytes(high.try_into().unwrap_or([0; 16]));
    [
        low as u64,
        (low >> 64) as u64,
        high as u64,
        (high >> 64) as u64,
    ]
}

/// The inverse of [`name_words`].
pub fn name_bytes([a, b, c, d]: [u64; 4]) -> [u8; MAP_NAME_LEN] {
    let low = (u128::from(a) | u128::from(b) << 64).to_le_bytes();
    let high = (u128::from(c) | u128::from(d) << 64).to_le_bytes();
    let mut name = [0u8; MAP_NAME_LEN];
    let (first, second) = name.split_at_mut(16);
    first.copy_from_slice(&low);
    second.copy_from_slice(&high);
    name
}

/// What a lookup found, to cache: the VMA's range and the file offset of its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// The address space, as an opaque identity (its `mm_struct` pointer).
    pub mm: u64,
    /// The process.
    pub tgid: i32,
    /// `vm_start`.
    pub start: u64,
    /// `vm_end` (exclusive).
    pub end: u64,
    /// `vm_pgoff * PAGE_SIZE`: the file offset mapped at `start`.
    pub file_offset: u64,
    /// The file's base name, NUL-padded, as in [`Mapping::name`].
    pub name: [u8; MAP_NAME_LEN],
}

impl Vma {
    /// The mapping of `ip` in this VMA, if it is inside.
    pub fn mapping_of(&self, ip: u64) -> Option<Mapping> {
        (self.start <= ip && ip < self.end)
            .then(|| Mapping::new(&self.name, ip - self.start + self.file_offset))
            .flatten()
    }
}

/// One CPU's last lookup.
///
/// # Invariants
///
/// `sequence` is even between fills, odd while one writer fills `words`; 0: never filled.
pub struct MapCache {
    sequence: AtomicU64,
    words: [AtomicU64; WORDS],
}

impl Default for MapCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MapCache {
    /// An empty cache.
    pub const fn new() -> Self {
        MapCache {
            sequence: AtomicU64::new(0),
            words: [const { AtomicU64::new(0) }; WORDS],
        }
    }

    /// The mapping of `ip` in address space `mm` of process `tgid`, if the cached VMA is
    /// of that process and holds `ip`. Never waits: a fill at work is a miss.
    pub fn lookup(&self, mm: u64, tgid: i32, ip: u64) -> Option<Mapping> {
        self.lookup_packed(mm, tgid, ip)?.mapping()
    }

    /// [`lookup`](Self::lookup), as the words a ring stores (no byte is copied).
    pub fn lookup_packed(&self, mm: u64, tgid: i32, ip: u64) -> Option<PackedMapping> {
        let before = self.sequence.load(Ordering::Acquire);
        if before == 0 || before % 2 == 1 {
            return None;
        }
        let word = |i: usize| self.words[i].load(Ordering::Relaxed);
        // The key and the range first: a miss reads at most four words.
        if word(0) != mm || word(1) != u64::from(tgid as u32) {
            return None;
        }
        let (start, end) = (word(2), word(3));
        if ip < start || ip >= end {
            return None;
        }
        let offset = ip - start + word(4);
        let name = [word(5), word(6), word(7), word(8)];
        fence(Ordering::Acquire);
        // A name was checked non-empty when cached (`fill`).
        (self.sequence.load(Ordering::Relaxed) == before).then(|| PackedMapping::new(name, offset))
    }

    /// Caches `vma`; false (nothing changed) if another writer is at work, or its name is
    /// empty (no mapping to name).
    pub fn fill(&self, vma: &Vma) -> bool {
        if vma.name[0] == 0 {
            return false;
        }
        let current = self.sequence.load(Ordering::Relaxed);
        if current % 2 == 1
            || self
                .sequence
                .compare_exchange(current, current + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return false;
        }
        fence(Ordering::Release);
        let [a, b, c, d] = name_words(&vma.name);
        let words = [
            vma.mm,
            u64::from(vma.tgid as u32),
            vma.start,
            vma.end,
            vma.file_offset,
            a,
            b,
            c,
            d,
        ];
        for (slot, word) in self.words.iter().zip(words) {
            slot.store(word, Ordering::Relaxed);
        }
        self.sequence.store(current + 2, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::sync::Arc;

    fn vma(mm: u64, tgid: i32, start: u64, name: &[u8]) -> Vma {
        let mut padded = [0u8; MAP_NAME_LEN];
        padded[..name.len()].copy_from_slice(name);
        Vma {
            mm,
            tgid,
            start,
            end: start + 0x1000,
            file_offset: 0x3000,
            name: padded,
        }
    }

    #[test]
    fn hits_only_its_own_process_and_range() {
        let cache = MapCache::new();
        assert_eq!(cache.lookup(1, 2, 0x400000), None, "empty");
        assert!(cache.fill(&vma(1, 2, 0x400000, b"a.out")));
        assert_eq!(cache.lookup(1, 2, 0x400123), Mapping::new(b"a.out", 0x3123));
        assert_eq!(cache.lookup(1, 2, 0x401000), None, "past the end");
        assert_eq!(cache.lookup(1, 2, 0x3fffff), None, "before the start");
        assert_eq!(cache.lookup(9, 2, 0x400123), None, "another mm");
        assert_eq!(
            cache.lookup(1, 3, 0x400123),
            None,
            "another process, same mm"
        );
        assert!(cache.fill(&vma(1, 2, 0x500000, b"libc.so.6")));
        assert_eq!(cache.lookup(1, 2, 0x400123), None, "replaced");
        assert_eq!(
            cache.lookup(1, 2, 0x500010),
            Mapping::new(b"libc.so.6", 0x3010)
        );
    }

    #[test]
    fn a_fill_at_work_is_a_miss_and_refuses_a_second_writer() {
        let cache = MapCache::new();
        assert!(cache.fill(&vma(1, 2, 0x400000, b"a.out")));
        let even = cache.sequence.load(Ordering::Relaxed);
        cache.sequence.store(even + 1, Ordering::Relaxed);
        assert_eq!(cache.lookup(1, 2, 0x400000), None);
        assert!(!cache.fill(&vma(1, 2, 0x500000, b"b")));
        cache.sequence.store(even, Ordering::Relaxed);
        assert!(cache.lookup(1, 2, 0x400000).is_some());
    }

    #[test]
    fn concurrent_fills_never_give_a_torn_entry() {
        let cache = Arc::new(MapCache::new());
        let writers: std::vec::Vec<_> = (0..2u64)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for n in 0..50_000u64 {
                        let k = t * 1_000_000 + n;
                        let name = std::format!("f{k}");
                        cache.fill(&vma(k, k as i32, k << 12, name.as_bytes()));
                    }
                })
            })
            .collect();
        while !writers.iter().all(|w| w.is_finished()) {
            for k in (0..50_000u64)
                .step_by(997)
                .chain((1_000_000..1_050_000).step_by(991))
            {
                if let Some(found) = cache.lookup(k, k as i32, k << 12) {
                    assert_eq!(
                        found,
                        Mapping::new(std::format!("f{k}").as_bytes(), 0x3000).unwrap()
                    );
                }
            }
        }
        writers.into_iter().for_each(|w| w.join().unwrap());
    }
}
