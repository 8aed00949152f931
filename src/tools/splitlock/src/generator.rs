//! The generator loop: lock operations at a given rate until a deadline, per thread.

use std::thread;
use std::time::{Duration, Instant};

/// How long to wait before the next operation so that `done` operations since `elapsed`
/// ago keep to `per_second`; `None` when one is due now. Operation n is due at n / rate
/// seconds, so a late thread catches up in a burst instead of losing the time.
pub(crate) fn wait_before_next(done: u64, per_second: f64, elapsed: Duration) -> Option<Duration> {
    // Too far ahead to represent: not due before the deadline, which bounds the sleep.
    let due = Duration::try_from_secs_f64(done as f64 / per_second).unwrap_or(Duration::MAX);
    due.checked_sub(elapsed).filter(|wait| !wait.is_zero())
}

/// What one thread did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ThreadReport {
    /// Operations completed.
    pub(crate) operations: u64,
    /// Time from start to the thread's last check of the clock.
    pub(crate) elapsed: Duration,
}

impl ThreadReport {
    /// Operations per second.
    pub(crate) fn rate(&self) -> f64 {
        rate(self.operations, self.elapsed)
    }
}

/// `count` per second over `elapsed`, 0 for no time.
pub(crate) fn rate(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Runs `operation` until `duration` has passed since `start` or `stopped()` says so, at
/// most `per_second` times a second if given (else as fast as it goes).
pub(crate) fn drive(
    start: Instant,
    duration: Duration,
    per_second: Option<f64>,
    mut operation: impl FnMut(),
    stopped: impl Fn() -> bool,
) -> ThreadReport {
    let mut operations = 0;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration || stopped() {
            return ThreadReport {
                operations,
                elapsed,
            };
        }
        if let Some(wait) = per_second.and_then(|rate| wait_before_next(operations, rate, elapsed))
        {
            thread::sleep(wait.min(duration - elapsed));
            continue;
        }
        operation();
        operations += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn pacing_spreads_operations_evenly() {
        let ms = Duration::from_millis;
        assert_eq!(
            wait_before_next(0, 10.0, ms(0)),
            None,
            "the first is due at once"
        );
        assert_eq!(wait_before_next(1, 10.0, ms(0)), Some(ms(100)));
        assert_eq!(wait_before_next(1, 10.0, ms(40)), Some(ms(60)));
        assert_eq!(wait_before_next(1, 10.0, ms(100)), None);
        assert_eq!(wait_before_next(3, 10.0, ms(250)), Some(ms(50)));
        assert_eq!(wait_before_next(3, 10.0, ms(900)), None, "late: catch up");
        assert_eq!(wait_before_next(1, 1e-300, ms(0)), Some(Duration::MAX));
    }

    #[test]
    fn rates() {
        let report = ThreadReport {
            operations: 300,
            elapsed: Duration::from_millis(1500),
        };
        assert_eq!(report.rate(), 200.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }

    /// The loop, driving an aligned atomic add (the only lock this test may take).
    #[test]
    fn drive_keeps_the_rate_and_the_deadline() {
        let counter = AtomicU32::new(0);
        let start = Instant::now();
        let report = drive(
            start,
            Duration::from_millis(300),
            Some(100.0),
            || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            || false,
        );
        assert_eq!(u64::from(counter.load(Ordering::SeqCst)), report.operations);
        // 100/s for 0.3 s: operations due at 0, 10, ..., 290 ms.
        assert!((25..=31).contains(&report.operations), "{report:?}");
        assert!(report.elapsed >= Duration::from_millis(300));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn drive_stops_when_told() {
        let counter = AtomicU32::new(0);
        let report = drive(
            Instant::now(),
            Duration::from_secs(60),
            None,
            || {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            || counter.load(Ordering::SeqCst) >= 1000,
        );
        assert_eq!(report.operations, 1000);
    }
}
