//! The PMU source: which event to count, how often to sample it, and how `ratelimit:N`
//! paces tasks whose bus locks arrive as samples worth many bus locks each.

use core::sync::atomic::{AtomicU64, Ordering};

/// `ls_locks` (PMCx025), "retired lock instructions", on AMD family 17h (Zen 2) to 1Ah (Zen 5).
pub const LS_LOCKS_EVENT: u64 = 0x25;
/// Unit mask of `ls_locks.bus_lock`: "lock instructions that caused a bus lock".
pub const LS_LOCKS_BUS_LOCK_UMASK: u64 = 0x01;

/// `perf_event_attr::type` of a raw, model-specific event (`PERF_TYPE_RAW`).
pub const PERF_TYPE_RAW: u32 = 4;
/// `perf_event_attr::type` of a hardware breakpoint (`PERF_TYPE_BREAKPOINT`); the test build's
/// stand-in for the PMU event.
pub const PERF_TYPE_BREAKPOINT: u32 = 5;
/// `perf_event_attr::freq`: `sample_period` holds a frequency, and perf adapts the period.
pub const PERF_ATTR_FLAG_FREQ: u64 = 1 << 10;
/// `HW_BREAKPOINT_W`: trigger on writes.
pub const HW_BREAKPOINT_W: u32 = 2;
/// `HW_BREAKPOINT_LEN_4`.
pub const HW_BREAKPOINT_LEN_4: u64 = 4;

/// Overflow interrupts per second per CPU that perf's frequency mode aims for. Below this
/// many bus locks per second the period falls to 1 and every bus lock is attributed; above
/// it each sample stands for proportionally more, so a storm of any size costs about this
/// many interrupts per CPU per second once perf has adapted (within a tick or two).
pub const SAMPLE_FREQ_HZ: u64 = 100;

/// The `perf_event_attr::config` of a raw AMD core PMU event: event select bits 7:0 in
/// 7:0, bits 11:8 in 35:32, unit mask in 15:8 (`AMD64_RAW_EVENT_MASK`).
pub const fn amd_raw_config(event: u64, umask: u64) -> u64 {
    (event & 0xff) | (event & 0xf00) << 24 | (umask & 0xff) << 8
}

/// `perf_event_attr::config` of `ls_locks.bus_lock`.
pub const BUS_LOCK_CONFIG: u64 = amd_raw_config(LS_LOCKS_EVENT, LS_LOCKS_BUS_LOCK_UMASK);

/// A system-wide budget of N bus locks per second for bus locks seen after the fact, in
/// samples worth `count` each (the generic cell-rate algorithm): each sample books
/// `count / N` seconds on one shared timeline, and its task sleeps until its booking ends.
/// However many tasks share the budget, together they cannot book more than N bus locks a
/// second, and a task that made P bus locks sleeps at least P / N seconds. Because samples
/// report bus locks that already happened, each offender's first sample gets through before
/// it can be paced: over any interval, the excess is at most one sample per offender.
///
/// # Invariants
///
/// `booked_until_us` only grows (but for [`Pacer::reset`]).
#[derive(Debug)]
pub struct Pacer {
    booked_until_us: AtomicU64,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::new()
    }
}

impl Pacer {
    /// A pacer with nothing booked.
    pub const fn new() -> Self {
        Pacer {
            booked_until_us: AtomicU64::new(0),
        }
    }

    /// Forgets every booking, as a policy change does.
    pub fn reset(&self) {
        self.booked_until_us.store(0, Ordering::Relaxed);
    }

    /// Books `count` bus locks at `rate` per second from `now_us` on, and returns the time
    /// (µs) until which the task that made them must sleep. Lock-free; safe in NMI context.
    pub fn book(&self, now_us: u64, count: u64, rate: u32) -> u64 {
        let cost_us = count.saturating_mul(1_000_000) / u64::from(rate.max(1));
        let mut booked = self.booked_until_us.load(Ordering::Relaxed);
        loop {
            let end = booked.max(now_us).saturating_add(cost_us);
            match self.booked_until_us.compare_exchange_weak(
                booked,
                end,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return end,
                Err(actual) => booked = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn bus_lock_event_config_matches_perf_list() {
        // `perf list` on Zen 2-5: ls_locks.bus_lock, "event=0x25,umask=0x1".
        assert_eq!(BUS_LOCK_CONFIG, 0x0125);
        assert_eq!(amd_raw_config(0x1c0, 0x3), 0x1_0000_03c0);
    }

    #[test]
    fn one_task_sleeps_its_share_and_bookings_queue() {
        let pacer = Pacer::new();
        // 50 bus locks at 10/s: 5 s.
        assert_eq!(pacer.book(1_000_000, 50, 10), 6_000_000);
        // A second booking right after queues behind the first.
        assert_eq!(pacer.book(1_000_100, 10, 10), 7_000_000);
        // Once the timeline is idle, a booking starts now.
        assert_eq!(pacer.book(60_000_000, 1, 1000), 60_001_000);
        pacer.reset();
        assert_eq!(pacer.book(5, 1, 1), 1_000_005);
    }

    #[test]
    fn huge_samples_saturate_instead_of_wrapping() {
        let pacer = Pacer::new();
        assert_eq!(pacer.book(u64::MAX - 1, u64::MAX, 1), u64::MAX);
        assert_eq!(pacer.book(0, 1, 0), u64::MAX);
    }

    /// Offenders that make `per_sample` bus locks as fast as they can, then sleep as the
    /// pacer says, achieve the configured rate together, however many they are.
    #[test]
    fn offenders_together_get_the_budget() {
        for rate in [1u32, 10, 100, 1000] {
            for offenders in [1usize, 4] {
                let pacer = Pacer::new();
                let per_sample = u64::from(rate).div_ceil(4).max(1);
                let work_us = 1_000; // time to make one sample's worth of bus locks
                let mut next = std::vec![0u64; offenders];
                let mut made = std::vec![0u64; offenders];
                let horizon = 10_000_000;
                loop {
                    let (who, at) = next
                        .iter()
                        .copied()
                        .enumerate()
                        .min_by_key(|&(_, t)| t)
                        .unwrap();
                    if at >= horizon {
                        break;
                    }
                    made[who] += per_sample;
                    next[who] = pacer.book(at + work_us, per_sample, rate);
                }
                let total: u64 = made.iter().sum();
                // Samples report bus locks that already happened: each offender's first
                // sample is made before anything can pace it, the only excess allowed.
                let budget = u64::from(rate) * 10;
                let burst = offenders as u64 * per_sample;
                assert!(
                    total * 100 >= budget * 95 && total <= budget + burst,
                    "rate {rate}, {offenders} offenders: {total} bus locks for a budget of {budget}"
                );
                let fair: Vec<f64> = made.iter().map(|&m| m as f64 / total as f64).collect();
                assert!(fair.iter().all(|&f| f > 0.5 / offenders as f64), "{fair:?}");
            }
        }
    }
}
