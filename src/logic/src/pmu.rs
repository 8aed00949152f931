//! The PMU source: which event to count and how often to sample it (`ratelimit:N` paces
//! its samples with `crate::ratelimit::Pacer`).

/// `ls_locks` (PMCx025), "retired lock instructions", on AMD family 17h (Zen 2) to 1Ah (Zen 5).
pub const LS_LOCKS_EVENT: u64 = 0x25;
/// Unit mask of `ls_locks.bus_lock`: "lock instructions that caused a bus lock".
pub const LS_LOCKS_BUS_LOCK_UMASK: u64 = 0x01;

/// `perf_event_attr::type` of a raw, model-specific event (`PERF_TYPE_RAW`).
pub const PERF_TYPE_RAW: u32 = 4;
/// `perf_event_attr::pinned`: always on the PMU, never multiplexed with other events.
pub const PERF_ATTR_FLAG_PINNED: u64 = 1 << 2;
/// `perf_event_attr::freq`: `sample_period` holds a frequency, and perf adapts the period.
pub const PERF_ATTR_FLAG_FREQ: u64 = 1 << 10;

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

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn bus_lock_event_config_matches_perf_list() {
        // `perf list` on Zen 2-5: ls_locks.bus_lock, "event=0x25,umask=0x1".
        assert_eq!(BUS_LOCK_CONFIG, 0x0125);
        assert_eq!(amd_raw_config(0x1c0, 0x3), 0x1_0000_03c0);
    }
}
