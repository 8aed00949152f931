//! CLOCK_MONOTONIC, the clock of the `ms`, `first_ms` and `last_ms` fields of the records.
//!
//! In a time namespace with a monotonic offset the process's clock and the kernel's differ
//! by that offset; amd-sld is a host tool and assumes the host's namespace.

use rustix::time::{clock_gettime, ClockId};

/// CLOCK_MONOTONIC now, in milliseconds, as the module stamps its records.
pub(crate) fn monotonic_ms() -> u64 {
    let now = clock_gettime(ClockId::Monotonic);
    // CLOCK_MONOTONIC is never negative.
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanoseconds = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds * 1000 + nanoseconds / 1_000_000
}

/// How long before `now_ms` the moment `then_ms` was, as "42s ago", "5m03s ago",
/// "2h10m ago" or "3d04h ago". A time after `now_ms` reads "0s ago".
pub(crate) fn ago(now_ms: u64, then_ms: u64) -> String {
    let seconds = now_ms.saturating_sub(then_ms) / 1000;
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    if minutes == 0 {
        format!("{seconds}s ago")
    } else if hours == 0 {
        format!("{minutes}m{:02}s ago", seconds % 60)
    } else if days == 0 {
        format!("{hours}h{:02}m ago", minutes % 60)
    } else {
        format!("{days}d{:02}h ago", hours % 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ago_picks_the_two_largest_units() {
        assert_eq!(ago(10_000, 10_000), "0s ago");
        assert_eq!(ago(10_000, 20_000), "0s ago");
        assert_eq!(ago(52_999, 10_000), "42s ago");
        assert_eq!(ago(303_000, 0), "5m03s ago");
        assert_eq!(ago((2 * 3600 + 10 * 60 + 59) * 1000, 0), "2h10m ago");
        assert_eq!(ago((3 * 86_400 + 4 * 3600) * 1000, 0), "3d04h ago");
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let first = monotonic_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(monotonic_ms() >= first + 5);
    }
}
