// SPDX-License-Identifier: GPL-2.0

//! What happens when the PMU reports bus locks: the policy, applied to the sampled task.
//!
//! [`on_sample`] runs in the counter's overflow handler, in NMI context: it may only use
//! atomics. Everything else (the log line, SIGBUS, the sleep of `ratelimit:N`) is deferred
//! to [`on_return`], which runs in the sampled task itself on its way back to user mode or
//! into its guest: the task attributed is the task that was running when the counter
//! overflowed, whatever ran on that CPU since.

use crate::control::{self, THROTTLE};
use crate::escape::{until_nul, Escaped};
use crate::ffi::pr_warn;
use crate::ffi::{self, NmiWork, Sample};
use crate::policy::Policy;
use crate::record::{Action, Source};
use crate::report::{self, Context, Sighting};
use crate::stats;

/// The PMU source's counters: their overflows go to [`on_sample`], the work it defers to
/// [`on_return`].
pub(crate) struct Pmu;

impl ffi::PmuHandler for Pmu {
    fn on_sample(sample: &Sample) {
        on_sample(sample);
    }

    fn on_return(work: &NmiWork) {
        on_return(&Deferred::from_work(work));
    }
}

/// Work for the sampled task, merged across samples until it runs.
struct Deferred {
    count: u64,
    action: Action,
    guest: bool,
    ip: u64,
    /// `ratelimit:N`: sleep until this `CLOCK_MONOTONIC` µs.
    until_us: u64,
    /// The record of the sample `ip` is from (the latest merged), to add its mapping to
    /// (`crate::eventlog::RecordId` as a word).
    seq: u64,
}

impl Deferred {
    /// Actions in order of severity, so that merged samples keep the strongest.
    const ACTIONS: [Action; 4] = [Action::None, Action::Warn, Action::Throttle, Action::Kill];

    /// The work as queued: the action as a byte that orders by severity.
    fn to_work(&self) -> NmiWork {
        NmiWork {
            count: self.count,
            severity: Self::ACTIONS
                .iter()
                .position(|&action| action == self.action)
                .unwrap_or(0) as u8,
            guest: self.guest,
            ip: self.ip,
            until_us: self.until_us,
            seq: self.seq,
        }
    }

    /// Reassembles a work from its queued form.
    fn from_work(work: &NmiWork) -> Self {
        Deferred {
            count: work.count,
            action: Self::ACTIONS
                .get(usize::from(work.severity))
                .copied()
                .unwrap_or(Action::None),
            guest: work.guest,
            ip: work.ip,
            until_us: work.until_us,
            seq: work.seq,
        }
    }
}

/// Entry from the overflow handler. NMI context.
fn on_sample(sample: &Sample) {
    if sample.count == 0 {
        return;
    }
    // Beside the trap, the guest-only counters' exact tallies are `guest_bus_locks`
    // (`crate::arming::guest_bus_locks`); with the PMU alone, the guest samples' counts.
    if sample.guest && !control::guest_only_counters(ffi::this_cpu()) {
        stats::GUEST_BUS_LOCKS.add(sample.count);
    }
    // Read once: the action and the booking must follow the same policy, even across a
    // switch that lands meanwhile.
    let policy = control::policy();
    let wanted = match policy {
        Policy::Off => Action::None,
        Policy::Warn => Action::Warn,
        Policy::Fatal => Action::Kill,
        Policy::Ratelimit(_) => Action::Throttle,
    };
    // The sampler counts user mode only, so every sample is of bus locks the task made in
    // user (or guest user) mode, even when the NMI finds it in the kernel: on 6.13+ the
    // kernel traps the same bus lock itself and the NMI lands in its #DB handler. The work
    // runs as the task returns to user mode or re-enters its guest; a kernel thread never
    // does (only skid makes one the interrupted task), so its samples are recorded only.
    let actionable = !sample.kernel_thread;
    // Numbered before the clock is read (the one read of this sample). The work also adds
    // the mapping of the IP to this record.
    let record = report::begin(Context::Nmi);
    let seq = record.id();
    let mut action = Action::None;
    if actionable && wanted != Action::None {
        let rate = match policy {
            Policy::Ratelimit(rate) => Some(rate.per_second()),
            _ => None,
        };
        let now_us = record.now_ns() / 1000;
        let until_us = rate.map_or(0, |rate| THROTTLE.book(now_us, sample.count, rate));
        let work = Deferred {
            count: sample.count,
            action: wanted,
            guest: sample.guest,
            ip: sample.ip,
            until_us,
            seq,
        };
        if ffi::defer_from_nmi::<Pmu>(&work.to_work()).is_ok() {
            action = wanted;
        } else if let Some(rate) = rate {
            // No slot free, or the task is exiting: nobody sleeps for this booking.
            THROTTLE.refund(sample.count, rate);
        }
    }
    let sighting = Sighting {
        source: Source::Pmu,
        guest: sample.guest,
        ip: sample.ip,
        count: sample.count,
    };
    // Guest mode has no host mapping (ip 0 then).
    let map = if sample.guest {
        None
    } else {
        record.cached_mapping(sample.ip)
    };
    record.finish(&sighting, action, map);
}

/// Runs in the sampled task, in process context, before it returns to user or guest mode.
fn on_return(work: &Deferred) {
    // ip is 0 for guest mode: no mapping of the host's then.
    report::complete_current(work.seq, work.ip);
    match work.action {
        Action::None => {}
        Action::Warn => {
            stats::WARNED.inc();
            log(work, "");
        }
        Action::Kill => {
            stats::KILLED.inc();
            log(work, ", sending SIGBUS");
            ffi::force_sigbus_current();
        }
        Action::Throttle => {
            stats::THROTTLED.inc();
            crate::throttle::sleep_until(work.until_us);
            stats::WARNED.inc();
            log(work, "");
        }
    }
}

/// `PMU: <comm>/<pid> caused N bus locks`, in the spirit of the trap's line, rate limited
/// with it. A vCPU thread's bus locks in guest mode say so, and name the VMM process and the
/// vCPU thread: `... in guest mode (guest of VMM pid <tgid>, vCPU thread <tid>)`.
fn log(work: &Deferred, suffix: &str) {
    crate::trap::log_limited(|| {
        let comm = ffi::current_comm();
        let (tid, tgid) = ffi::current_ids();
        if work.guest {
            pr_warn!(
                "PMU: {}/{} caused {} bus locks in guest mode (guest of VMM pid {}, vCPU thread {}){}\n",
                Escaped(until_nul(&comm)),
                tid,
                work.count,
                tgid,
                tid,
                suffix
            );
        } else {
            pr_warn!(
                "PMU: {}/{} caused {} bus locks{}\n",
                Escaped(until_nul(&comm)),
                tid,
                work.count,
                suffix
            );
        }
    });
}
