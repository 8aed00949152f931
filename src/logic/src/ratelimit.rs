//! Lock-free rate limits: [`RateLimiter`], a fixed window with the semantics of the kernel's
//! `___ratelimit()` (the log's 10 lines per 5 s), and [`Pacer`], the `ratelimit:N` budget.
//!
//! The kernel's limiter takes a spinlock and, when it is contended, answers "suppressed";
//! amd_sld consults its limits from the #DB notifier and the PMU's NMI on every CPU at
//! once, so each keeps its window or timeline in one atomic word and never waits or spins
//! on a lock.
//! [`RateLimiter`]'s semantics are the kernel's: a window opens at the first event after the
//! previous one expired, lets `burst` events through, and denies the rest until it expires.
//! Time is passed in so that tests can drive both with a fake clock.

use core::sync::atomic::{AtomicU64, Ordering};

/// Bits of the state word that hold the number of events let through in the window.
const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// The largest burst a [`RateLimiter`] can hold.
pub const MAX_BURST: u32 = (1 << COUNT_BITS) - 1;

/// What the limiter says about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let through. `suppressed` counts the events denied in earlier windows since the last
    /// verdict that reported them, so that a caller can say "N callbacks suppressed".
    Pass {
        /// Events denied since the last report.
        suppressed: u64,
    },
    /// Over budget in the current window.
    Deny,
}

impl Verdict {
    /// Whether the event was let through.
    pub const fn passed(self) -> bool {
        matches!(self, Verdict::Pass { .. })
    }
}

/// At most `burst` events per `interval_ms`, shared by all CPUs.
///
/// # Invariants
///
/// `state` is 0 before the first event; afterwards its high bits hold the window's start
/// time in milliseconds plus one, and its low [`COUNT_BITS`] the events passed in that window,
/// never more than `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    interval_ms: u64,
    burst: u64,
    state: AtomicU64,
    missed: AtomicU64,
}

impl RateLimiter {
    /// A limiter that lets `burst` events through per `interval_ms` milliseconds.
    ///
    /// `burst` is clamped to [`MAX_BURST`].
    pub const fn new(interval_ms: u64, burst: u32) -> Self {
        let burst = if burst > MAX_BURST { MAX_BURST } else { burst };
        RateLimiter {
            interval_ms,
            burst: burst as u64,
            state: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        }
    }

    /// The burst, after clamping.
    pub const fn burst(&self) -> u32 {
        // Stored from a u32 clamped to MAX_BURST, so it fits.
        self.burst as u32
    }

    /// Decides about one event happening at `now_ms`.
    pub fn check(&self, now_ms: u64) -> Verdict {
        match self.decide(now_ms) {
            Admission::Deny => {
                self.missed.fetch_add(1, Ordering::Relaxed);
                Verdict::Deny
            }
            Admission::Pass { opens_window } => Verdict::Pass {
                suppressed: if opens_window {
                    self.missed.swap(0, Ordering::Relaxed)
                } else {
                    0
                },
            },
        }
    }

    /// Decides about one event happening at `now_ms`, as [`check`](Self::check), but writes
    /// nothing when it denies, the common case in a storm: it only reads the shared word.
    /// The caller counts the events denied itself (per CPU, say) and reports them when a
    /// window opens.
    #[inline(always)]
    pub fn admit(&self, now_ms: u64) -> Admission {
        self.decide(now_ms)
    }

    #[inline(always)]
    fn decide(&self, now_ms: u64) -> Admission {
        let burst = self.burst;
        if burst == 0 {
            return Admission::Deny;
        }
        let stamp = (now_ms.wrapping_add(1)) << COUNT_BITS;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (next, opens_window) = if current == 0 {
                (stamp | 1, true)
            } else {
                let start_ms = (current >> COUNT_BITS).wrapping_sub(1);
                let count = current & COUNT_MASK;
                let expired =
                    now_ms.wrapping_sub(start_ms) >= self.interval_ms && now_ms >= start_ms;
                if expired {
                    (stamp | 1, true)
                } else if count < burst {
                    (current + 1, false)
                } else {
                    return Admission::Deny;
                }
            };
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Admission::Pass { opens_window },
                Err(actual) => current = actual,
            }
        }
    }
}

/// What [`RateLimiter::admit`] says about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Let through; `opens_window` if it opened a new window (time to report what was
    /// suppressed before).
    Pass {
        /// The event opened a window.
        opens_window: bool,
    },
    /// Over budget in the current window.
    Deny,
}

/// The system-wide budget of `ratelimit:N`, N bus locks per second, for both sources (the
/// generic cell-rate algorithm): each detection books `count / N` seconds on one shared
/// timeline, in the order detections arrive. A PMU sample (many bus locks, seen after the
/// fact) sleeps until its booking ends ([`Pacer::book`]); a trap (one bus lock) sleeps
/// until its booking starts ([`Pacer::admit_one`]), so that on an idle budget it is not
/// delayed at all.
///
/// However many tasks share the budget, together they cannot book more than N bus locks a
/// second, and a task that made P bus locks sleeps at least P / N seconds. Because samples
/// report bus locks that already happened, each offender's first sample gets through before
/// it can be paced: over any interval, the excess is at most one sample per offender.
///
/// One booking takes at most [`MAX_BOOKING_US`] (1 s) of the shared timeline: a PMU sample
/// can stand for thousands of bus locks (minutes at a low N), and the offenders after it,
/// bystanders with a single trap among them, would queue behind all of it. Its own task
/// still sleeps its whole share, P / N seconds. A booking whose task cannot be made to sleep
/// (no work item, the task is exiting) is given back with [`Pacer::refund`].
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

/// The most of the shared timeline that one booking takes, in µs: 1 s.
pub const MAX_BOOKING_US: u64 = 1_000_000;

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

    /// Books one bus lock that has just happened (a trap) at `rate` per second: `None` if
    /// its slot starts now, under budget; else the time (µs) its slot starts, until which
    /// its task must sleep. Offenders that share the budget are served in turn.
    pub fn admit_one(&self, now_us: u64, rate: u32) -> Option<u64> {
        let end = self.book(now_us, 1, rate);
        let start = end.saturating_sub(Self::cost_us(1, rate));
        (start > now_us).then_some(start)
    }

    /// Microseconds of the timeline that `count` bus locks take at `rate` per second.
    const fn cost_us(count: u64, rate: u32) -> u64 {
        let rate = if rate == 0 { 1 } else { rate as u64 };
        count.saturating_mul(1_000_000) / rate
    }

    /// Microseconds of the shared timeline that a booking of `count` takes: at most
    /// [`MAX_BOOKING_US`].
    const fn shared_cost_us(count: u64, rate: u32) -> u64 {
        let cost = Self::cost_us(count, rate);
        if cost > MAX_BOOKING_US {
            MAX_BOOKING_US
        } else {
            cost
        }
    }

    /// Books `count` bus locks at `rate` per second from `now_us` on, and returns the time
    /// (µs) until which the task that made them must sleep: the end of its booking, and at
    /// least its whole share `count / rate` from now. Lock-free; safe in NMI context.
    pub fn book(&self, now_us: u64, count: u64, rate: u32) -> u64 {
        let cost_us = Self::shared_cost_us(count, rate);
        let own_us = now_us.saturating_add(Self::cost_us(count, rate));
        let mut booked = self.booked_until_us.load(Ordering::Relaxed);
        loop {
            let end = booked.max(now_us).saturating_add(cost_us);
            match self.booked_until_us.compare_exchange_weak(
                booked,
                end,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return end.max(own_us),
                Err(actual) => booked = actual,
            }
        }
    }

    /// Gives back the booking of `count` at `rate` that [`Pacer::book`] or
    /// [`Pacer::admit_one`] (`count` 1) made, when its task could not be made to sleep: the
    /// next booking starts that much earlier. Lock-free; safe in NMI context.
    pub fn refund(&self, count: u64, rate: u32) {
        let cost_us = Self::shared_cost_us(count, rate);
        let _ = self
            .booked_until_us
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |booked| {
                Some(booked.saturating_sub(cost_us))
            });
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn passes(limiter: &RateLimiter, now_ms: u64) -> bool {
        limiter.check(now_ms).passed()
    }

    #[test]
    fn admit_writes_nothing_when_it_denies() {
        let limiter = RateLimiter::new(5000, 2);
        assert_eq!(limiter.admit(0), Admission::Pass { opens_window: true });
        assert_eq!(
            limiter.admit(1),
            Admission::Pass {
                opens_window: false
            }
        );
        let state = limiter.state.load(Ordering::Relaxed);
        assert_eq!(limiter.admit(2), Admission::Deny);
        assert_eq!(limiter.state.load(Ordering::Relaxed), state);
        assert_eq!(limiter.missed.load(Ordering::Relaxed), 0);
        assert_eq!(limiter.admit(5000), Admission::Pass { opens_window: true });
    }

    #[test]
    fn lets_burst_through_per_window_then_denies() {
        let limiter = RateLimiter::new(1000, 3);
        assert!(passes(&limiter, 5));
        assert!(passes(&limiter, 6));
        assert!(passes(&limiter, 1004));
        assert!(!passes(&limiter, 1004));
        // The window opened at 5 ms expires at 1005 ms, as jiffies-based ___ratelimit does.
        assert_eq!(limiter.check(1005), Verdict::Pass { suppressed: 1 });
        assert!(passes(&limiter, 1006));
        assert!(passes(&limiter, 1007));
        assert!(!passes(&limiter, 1008));
    }

    #[test]
    fn window_opens_at_the_first_event_after_expiry() {
        let limiter = RateLimiter::new(100, 1);
        assert!(passes(&limiter, 0));
        assert!(!passes(&limiter, 99));
        assert!(passes(&limiter, 250));
        assert!(!passes(&limiter, 349));
        assert!(passes(&limiter, 350));
    }

    #[test]
    fn suppressed_events_are_reported_once() {
        let limiter = RateLimiter::new(5000, 10);
        for t in 0..25 {
            let _ = limiter.check(t);
        }
        assert_eq!(limiter.check(6000), Verdict::Pass { suppressed: 15 });
        assert_eq!(limiter.check(6001), Verdict::Pass { suppressed: 0 });
    }

    #[test]
    fn zero_burst_denies_everything_and_huge_bursts_are_clamped() {
        let limiter = RateLimiter::new(1000, 0);
        assert!(!passes(&limiter, 0));
        assert_eq!(RateLimiter::new(1, u32::MAX).burst(), MAX_BURST);
    }

    #[test]
    fn a_clock_that_goes_backwards_never_opens_a_window_early() {
        let limiter = RateLimiter::new(1000, 1);
        assert!(passes(&limiter, 5000));
        assert!(!passes(&limiter, 10));
        assert!(passes(&limiter, 6000));
    }

    /// Callers that retry every `retry_ms` after a denial get `burst` events per window
    /// together, to within 5%, however many they are.
    #[test]
    fn throttled_offenders_achieve_the_configured_rate() {
        for rate in [1u32, 10, 100, 1000] {
            for offenders in [1usize, 4] {
                let limiter = RateLimiter::new(1000, rate);
                let retry_ms = 20;
                // Each offender's next attempt time; an offender that passes tries again
                // at once (1 ms later), one that is denied sleeps retry_ms.
                let mut next: Vec<u64> = (0..offenders as u64).collect();
                let mut passed = std::vec![0u64; offenders];
                let horizon = 10_000;
                loop {
                    let (who, &at) = next.iter().enumerate().min_by_key(|(_, t)| **t).unwrap();
                    if at >= horizon {
                        break;
                    }
                    if passes(&limiter, at) {
                        passed[who] += 1;
                        next[who] = at + 1;
                    } else {
                        next[who] = at + retry_ms;
                    }
                }
                let total: u64 = passed.iter().sum();
                let ratio = total as f64 / (f64::from(rate) * 10.0);
                assert!(
                    (0.95..=1.0).contains(&ratio),
                    "rate {rate}, {offenders} offenders: ratio {ratio}"
                );
            }
        }
    }

    #[test]
    fn concurrent_callers_never_exceed_the_burst() {
        let limiter = std::sync::Arc::new(RateLimiter::new(u64::MAX / 4, 1000));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || (0..10_000).filter(|_| passes(&limiter, 7)).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn one_task_sleeps_its_share_and_bookings_queue() {
        let pacer = Pacer::new();
        // 5 bus locks at 10/s: 0.5 s.
        assert_eq!(pacer.book(1_000_000, 5, 10), 1_500_000);
        // A second booking right after queues behind the first.
        assert_eq!(pacer.book(1_000_100, 10, 10), 2_500_000);
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

    /// Runs `offenders` for 10 simulated seconds, always the one due first: `act(at)` makes
    /// that offender's next bus locks at `at` µs and returns how many, and when it may go on.
    /// Returns each offender's bus locks.
    fn run_offenders(offenders: usize, mut act: impl FnMut(u64) -> (u64, u64)) -> Vec<u64> {
        let mut next = std::vec![0u64; offenders];
        let mut made = std::vec![0u64; offenders];
        while let Some((who, at)) = next
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(_, t)| t)
            .filter(|&(_, at)| at < 10_000_000)
        {
            let (count, resume) = act(at);
            made[who] += count;
            next[who] = resume;
        }
        made
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
                let made = run_offenders(offenders, |at| {
                    (per_sample, pacer.book(at + work_us, per_sample, rate))
                });
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

    /// Issue 13, item 11: a sample of 10000 bus locks at 10/s is 1000 s of budget. Its task
    /// sleeps all of it, but a bystander's single trap right after waits at most 1 s.
    #[test]
    fn one_sample_books_at_most_a_second_of_the_shared_budget() {
        let pacer = Pacer::new();
        assert_eq!(pacer.book(1_000_000, 10_000, 10), 1_001_000_000);
        let wait = pacer.admit_one(1_000_001, 10).unwrap();
        assert!(wait <= 2_000_000, "a bystander waits until {wait} µs");
        assert_eq!(wait, 2_000_000);
        // Small samples book all of their share, as before.
        assert_eq!(pacer.book(5_000_000, 3, 10), 5_300_000);
    }

    /// Issue 13, item 11: a booking whose task cannot be made to sleep (no work item, the
    /// task exiting) is given back: the next offender gets the slot it would have had.
    #[test]
    fn a_booking_given_back_frees_its_slot() {
        let pacer = Pacer::new();
        assert_eq!(pacer.admit_one(5_000_000, 10), None);
        // This trap's deferral fails: it gives its slot back.
        assert_eq!(pacer.admit_one(5_000_001, 10), Some(5_100_000));
        pacer.refund(1, 10);
        assert_eq!(pacer.admit_one(5_000_002, 10), Some(5_100_000));
        // A sample's (capped) booking likewise.
        let pacer = Pacer::new();
        let end = pacer.book(0, 10_000, 10);
        assert_eq!(end, 1_000_000_000);
        pacer.refund(10_000, 10);
        assert_eq!(pacer.admit_one(1, 10), None);
    }

    #[test]
    fn a_trap_on_an_idle_budget_passes_and_the_next_waits_its_turn() {
        let pacer = Pacer::new();
        assert_eq!(pacer.admit_one(5_000_000, 10), None);
        // Right after: its slot starts 100 ms later.
        assert_eq!(pacer.admit_one(5_000_001, 10), Some(5_100_000));
        // A second offender queues behind it.
        assert_eq!(pacer.admit_one(5_000_002, 10), Some(5_200_000));
        // Once the timeline is idle again, no wait.
        assert_eq!(pacer.admit_one(9_000_000, 10), None);
    }

    /// Offenders that trap as fast as they can and sleep as `admit_one` says get N bus
    /// locks per second together, in equal shares.
    #[test]
    fn trapping_offenders_get_the_rate_in_equal_shares() {
        for rate in [1u32, 10, 100, 1000] {
            for offenders in [1usize, 4] {
                let pacer = Pacer::new();
                let made = run_offenders(offenders, |at| {
                    (1, pacer.admit_one(at + 10, rate).unwrap_or(at + 10))
                });
                let total: u64 = made.iter().sum();
                let budget = u64::from(rate) * 10;
                assert!(
                    total >= budget && total <= budget + offenders as u64,
                    "rate {rate}, {offenders} offenders: {total} for a budget of {budget}"
                );
                let (min, max) = (made.iter().min().unwrap(), made.iter().max().unwrap());
                assert!(max - min <= 1, "rate {rate}: shares {made:?}");
            }
        }
    }
}
