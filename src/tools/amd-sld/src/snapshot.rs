//! One reading of the module's state and counters: what `status` shows and `export`
//! exports.

use std::time::Duration;

use amd_sld_logic::cpulist;
use amd_sld_logic::policy::Policy;

use crate::failure::Failure;
use crate::sysfs::{one_line, Parameter, Sysfs};

/// How a counter file's value is expressed in Prometheus' base units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A number of events.
    Events,
    /// Milliseconds, exported as seconds.
    Milliseconds,
}

/// A counter file of /sys/kernel/amd_sld and its Prometheus counter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CounterSpec {
    /// The file name, also the name `status` shows.
    pub(crate) file: &'static str,
    /// The Prometheus metric name.
    pub(crate) metric: &'static str,
    /// The metric's `# HELP` text.
    pub(crate) help: &'static str,
    pub(crate) unit: Unit,
}

/// The counter of records the module could not write, which `events` also watches.
pub(crate) const DROPPED_FILE: &str = "dropped";

/// Every counter of the ABI, in the order `status` shows them.
pub(crate) const COUNTERS: [CounterSpec; 7] = [
    CounterSpec {
        file: "bus_locks",
        metric: "amd_sld_bus_locks_total",
        help: "User-mode bus locks amd_sld detected since it was loaded.",
        unit: Unit::Events,
    },
    CounterSpec {
        file: "warned",
        metric: "amd_sld_warned_total",
        help: "Bus locks handled with a (rate-limited) kernel log warning.",
        unit: Unit::Events,
    },
    CounterSpec {
        file: "killed",
        metric: "amd_sld_killed_total",
        help: "Bus locks answered with SIGBUS (policy fatal).",
        unit: Unit::Events,
    },
    CounterSpec {
        file: "throttled",
        metric: "amd_sld_throttled_total",
        help: "Bus locks whose task was made to sleep (policy ratelimit, over budget).",
        unit: Unit::Events,
    },
    CounterSpec {
        file: "throttled_ms",
        metric: "amd_sld_throttled_seconds_total",
        help: "Time throttled tasks spent sleeping.",
        unit: Unit::Milliseconds,
    },
    CounterSpec {
        file: "guest_bus_locks",
        metric: "amd_sld_guest_bus_locks_total",
        help: "Bus locks in KVM guests: exact beside the trap (source bld+pmu(guest)), sampled with source pmu.",
        unit: Unit::Events,
    },
    CounterSpec {
        file: DROPPED_FILE,
        metric: "amd_sld_events_dropped_total",
        help: "Bus-lock records the module could not write (counters still count every bus lock).",
        unit: Unit::Events,
    },
];

/// The value of every counter of [`COUNTERS`], `None` where the module has no such file.
pub(crate) type CounterValues = [Option<u64>; COUNTERS.len()];

/// The policy parameter as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PolicyReading {
    /// A policy [`Policy::parse`] accepts.
    Valid(Policy),
    /// Something else: shown as read, so that a mismatch between module and tool is seen.
    Unrecognised(String),
}

/// /sys/kernel/amd_sld/armed_cpus as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ArmedCpus {
    /// A valid cpulist (maybe empty) and the number of CPUs in it.
    Valid { list: String, count: usize },
    /// Not a cpulist: shown as read.
    Malformed(String),
}

impl ArmedCpus {
    fn parse(text: &str) -> ArmedCpus {
        let list = one_line(text);
        let mut count = 0;
        match cpulist::parse(list, |_| count += 1) {
            Ok(()) => ArmedCpus::Valid {
                list: list.to_owned(),
                count,
            },
            Err(cpulist::Malformed) => ArmedCpus::Malformed(list.to_owned()),
        }
    }
}

/// Everything `status` and `export` show, read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// /sys/module/amd_sld exists. When false, every other field is `None`.
    pub(crate) loaded: bool,
    pub(crate) policy: Option<PolicyReading>,
    /// The `source` parameter: what was asked for.
    pub(crate) requested_source: Option<String>,
    /// /sys/kernel/amd_sld/source: the detector in effect.
    pub(crate) source: Option<String>,
    pub(crate) armed_cpus: Option<ArmedCpus>,
    pub(crate) counters: CounterValues,
}

impl Snapshot {
    /// Reads the module's state. A module that is not loaded is a snapshot saying so.
    pub(crate) fn read(sysfs: &Sysfs) -> Result<Snapshot, Failure> {
        if !sysfs.module_loaded() {
            return Ok(Snapshot {
                loaded: false,
                policy: None,
                requested_source: None,
                source: None,
                armed_cpus: None,
                counters: [None; COUNTERS.len()],
            });
        }
        let policy = sysfs.read_parameter(Parameter::Policy)?.map(|text| {
            match Policy::parse(text.as_bytes()) {
                Ok(policy) => PolicyReading::Valid(policy),
                Err(_) => PolicyReading::Unrecognised(text),
            }
        });
        Ok(Snapshot {
            loaded: true,
            policy,
            requested_source: sysfs.read_parameter(Parameter::Source)?,
            source: sysfs
                .read_stat("source")?
                .map(|text| one_line(&text).to_owned()),
            armed_cpus: sysfs
                .read_stat("armed_cpus")?
                .map(|text| ArmedCpus::parse(&text)),
            counters: read_counters(sysfs)?,
        })
    }
}

/// Reads every counter of [`COUNTERS`].
pub(crate) fn read_counters(sysfs: &Sysfs) -> Result<CounterValues, Failure> {
    let mut values = [None; COUNTERS.len()];
    for (value, spec) in values.iter_mut().zip(COUNTERS.iter()) {
        *value = sysfs.read_counter(spec.file)?;
    }
    Ok(values)
}

/// Per-second rates of every counter between two readings `elapsed` apart.
///
/// A rate is `None` where either reading lacks the counter, or where it went down: the
/// module was reloaded in between and its counters restarted from 0.
pub(crate) fn rates(
    first: &CounterValues,
    second: &CounterValues,
    elapsed: Duration,
) -> [Option<f64>; COUNTERS.len()] {
    let seconds = elapsed.as_secs_f64();
    let mut rates = [None; COUNTERS.len()];
    for ((rate, before), after) in rates.iter_mut().zip(first).zip(second) {
        if let (Some(before), Some(after)) = (before, after) {
            if seconds > 0.0 && after >= before {
                *rate = Some((after - before) as f64 / seconds);
            }
        }
    }
    rates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sysfs::{FakeSysfs, COUNTER_FILES};
    use amd_sld_logic::policy::Rate;

    #[test]
    fn counter_table_covers_the_abi_exactly_once() {
        let files: Vec<&str> = COUNTERS.iter().map(|spec| spec.file).collect();
        assert_eq!(files, COUNTER_FILES);
        for spec in COUNTERS {
            assert!(spec.metric.starts_with("amd_sld_") && spec.metric.ends_with("_total"));
            assert_eq!(
                spec.metric.ends_with("_seconds_total"),
                spec.unit == Unit::Milliseconds
            );
        }
    }

    #[test]
    fn reads_a_loaded_module() {
        let fake = FakeSysfs::loaded();
        fake.write(
            "sys/module/amd_sld/parameters/split_lock_detect",
            "ratelimit:10\n",
        );
        fake.set_counter("bus_locks", 42);
        fake.write("sys/kernel/amd_sld/armed_cpus", "0-3,8\n");
        let snapshot = Snapshot::read(&Sysfs::new(fake.root())).unwrap();
        assert!(snapshot.loaded);
        assert_eq!(
            snapshot.policy,
            Some(PolicyReading::Valid(Policy::Ratelimit(
                Rate::new(10).unwrap()
            )))
        );
        assert_eq!(snapshot.requested_source.as_deref(), Some("auto"));
        assert_eq!(snapshot.source.as_deref(), Some("bld"));
        assert_eq!(
            snapshot.armed_cpus,
            Some(ArmedCpus::Valid {
                list: "0-3,8".to_owned(),
                count: 5
            })
        );
        assert_eq!(snapshot.counters[0], Some(42));
    }

    #[test]
    fn an_older_module_lacks_files_without_failing() {
        let fake = FakeSysfs::loaded();
        for name in ["guest_bus_locks", "dropped", "source", "events", "top"] {
            fake.remove(&format!("sys/kernel/amd_sld/{name}"));
        }
        fake.remove("sys/module/amd_sld/parameters/source");
        fake.write("sys/kernel/amd_sld/armed_cpus", "\n");
        fake.write("sys/module/amd_sld/parameters/split_lock_detect", "bogus\n");
        let snapshot = Snapshot::read(&Sysfs::new(fake.root())).unwrap();
        assert_eq!(snapshot.source, None);
        assert_eq!(snapshot.requested_source, None);
        assert_eq!(
            snapshot.policy,
            Some(PolicyReading::Unrecognised("bogus".to_owned()))
        );
        assert_eq!(
            snapshot.armed_cpus,
            Some(ArmedCpus::Valid {
                list: String::new(),
                count: 0
            })
        );
        assert_eq!(
            snapshot.counters,
            [Some(0), Some(0), Some(0), Some(0), Some(0), None, None]
        );
    }

    #[test]
    fn not_loaded_is_a_snapshot_not_an_error() {
        let fake = FakeSysfs::empty();
        let snapshot = Snapshot::read(&Sysfs::new(fake.root())).unwrap();
        assert!(!snapshot.loaded);
        assert_eq!(snapshot.counters, [None; 7]);
    }

    #[test]
    fn malformed_cpulist_is_kept_as_read() {
        assert_eq!(
            ArmedCpus::parse("3-1\n"),
            ArmedCpus::Malformed("3-1".to_owned())
        );
    }

    #[test]
    fn rates_are_per_second_and_absent_when_unknowable() {
        let first = [
            Some(100),
            Some(0),
            None,
            Some(5),
            Some(1000),
            Some(7),
            Some(0),
        ];
        let second = [
            Some(350),
            Some(0),
            Some(3),
            Some(4),
            Some(1500),
            None,
            Some(0),
        ];
        let rates = rates(&first, &second, Duration::from_millis(500));
        assert_eq!(
            rates,
            [
                Some(500.0),
                Some(0.0),
                None,
                None,
                Some(1000.0),
                None,
                Some(0.0)
            ]
        );
        assert_eq!(
            super::rates(&first, &first, Duration::ZERO),
            [None; 7],
            "no time, no rate"
        );
    }
}
