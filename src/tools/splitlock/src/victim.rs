//! The victim: memory copy throughput, to watch what bus locks do to everyone else.
//!
//! A bus lock stalls the memory traffic of every core, so a streaming copy over a buffer
//! larger than the caches is the workload that shows it most plainly. Safe anywhere: it
//! takes no locks.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::generator::rate;

/// Bytes in a MiB.
const MIB: usize = 1 << 20;
/// Throughput is reported in MB/s (10^6 bytes), as memory bandwidth usually is.
const BYTES_PER_MB: f64 = 1e6;
/// One line of output per this much time.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Throughput over one reporting interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sample {
    /// End of the interval, since the start.
    pub(crate) at: Duration,
    /// MB copied per second during the interval.
    pub(crate) mb_per_second: f64,
}

/// The whole run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Summary {
    pub(crate) elapsed: Duration,
    pub(crate) copied_bytes: u64,
}

impl Summary {
    /// Mean MB copied per second over the run.
    pub(crate) fn mean_mb_per_second(&self) -> f64 {
        rate(self.copied_bytes, self.elapsed) / BYTES_PER_MB
    }
}

/// Copies one half of a `buffer_mib` MiB buffer onto the other, again and again, for
/// `duration`, calling `report` once a second with that second's throughput.
pub(crate) fn run(
    buffer_mib: usize,
    duration: Duration,
    mut report: impl FnMut(Sample),
) -> Summary {
    let half = buffer_mib * MIB / 2;
    // Written once before timing, so that page faults are not measured.
    let mut buffer = vec![0x5a_u8; 2 * half];
    let start = Instant::now();
    let mut interval_start = start;
    let mut interval_bytes: u64 = 0;
    let mut copied_bytes: u64 = 0;
    loop {
        let now = Instant::now();
        if now - interval_start >= REPORT_EVERY {
            report(Sample {
                at: now - start,
                mb_per_second: rate(interval_bytes, now - interval_start) / BYTES_PER_MB,
            });
            interval_start = now;
            interval_bytes = 0;
        }
        if now - start >= duration {
            return Summary {
                elapsed: now - start,
                copied_bytes,
            };
        }
        let (source, destination) = buffer.split_at_mut(half);
        destination.copy_from_slice(source);
        // Keep the copy: the buffer is never read, which would let the optimiser drop it.
        black_box(&mut buffer);
        interval_bytes += half as u64;
        copied_bytes += half as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_copies_and_reports_a_mean() {
        let mut samples = Vec::new();
        let summary = run(4, Duration::from_millis(200), |sample| samples.push(sample));
        assert!(summary.elapsed >= Duration::from_millis(200));
        assert!(summary.copied_bytes >= 2 * MIB as u64, "{summary:?}");
        assert!(summary.mean_mb_per_second() > 0.0);
        assert!(samples.is_empty(), "no full second, no per-second line");
    }
}
