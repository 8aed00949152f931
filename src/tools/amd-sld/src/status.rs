//! `amd-sld status`: is the module loaded, what does it do, and how often.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use amd_sld_logic::capability::InEffect;
use amd_sld_logic::escape::Escaped;

use crate::failure::Failure;
use crate::snapshot::{self, ArmedCpus, PolicyReading, Snapshot, COUNTERS};
use crate::sysfs::Sysfs;
use crate::table::{self, Align, Column};

/// Counter rates measured over an interval.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rates {
    /// The time between the two readings.
    pub(crate) interval: Duration,
    /// Per second, in [`COUNTERS`] order.
    pub(crate) per_second: [Option<f64>; COUNTERS.len()],
}

/// Reads the module's state; with a non-zero `interval`, reads the counters again after it
/// to compute rates. Prints text or JSON. A module that is not loaded is reported on
/// `out` and then as [`Failure::NotLoaded`].
pub(crate) fn run(
    sysfs: &Sysfs,
    interval: Duration,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let first_at = Instant::now();
    let mut snapshot = Snapshot::read(sysfs)?;
    let rates = if snapshot.loaded && !interval.is_zero() {
        thread::sleep(interval);
        let second_at = Instant::now();
        let second = snapshot::read_counters(sysfs)?;
        let elapsed = second_at - first_at;
        let per_second = snapshot::rates(&snapshot.counters, &second, elapsed);
        // Show the latest totals; a counter that vanished (unload) keeps its first reading.
        for (total, latest) in snapshot.counters.iter_mut().zip(second) {
            if latest.is_some() {
                *total = latest;
            }
        }
        Some(Rates {
            interval: elapsed,
            per_second,
        })
    } else {
        None
    };
    let text = if json {
        render_json(&snapshot, rates.as_ref())
    } else {
        render_text(&snapshot, rates.as_ref())
    };
    out.write_all(text.as_bytes()).map_err(Failure::output)?;
    if snapshot.loaded {
        Ok(())
    } else {
        Err(Failure::not_loaded())
    }
}

const NOT_AVAILABLE: &str = "n/a";

fn policy_text(policy: &Option<PolicyReading>) -> String {
    match policy {
        Some(PolicyReading::Valid(policy)) => policy.to_string(),
        Some(PolicyReading::Unrecognised(text)) => {
            format!(
                "\"{}\" (not a policy this tool knows)",
                Escaped(text.as_bytes())
            )
        }
        None => NOT_AVAILABLE.to_owned(),
    }
}

fn source_text(source: &Option<String>, requested: &Option<String>) -> String {
    let in_effect = match source {
        Some(source) => Escaped(source.as_bytes()).to_string(),
        None => NOT_AVAILABLE.to_owned(),
    };
    let text = match requested {
        Some(requested) => format!("{in_effect} (requested: {})", Escaped(requested.as_bytes())),
        None => in_effect,
    };
    match source.as_deref().and_then(InEffect::parse) {
        Some(known) => format!("{text}: {}", who_sees_what(known)),
        None => text,
    }
}

/// Which detector sees which bus locks, for the `source` line.
fn who_sees_what(source: InEffect) -> &'static str {
    match source {
        InEffect::Bld => "host tasks by the trap, each bus lock; KVM guests not covered",
        InEffect::Pmu => "host and KVM guests by the PMU, exact totals, sampled attribution",
        InEffect::BldAndGuestPmu => {
            "host tasks by the trap, each bus lock; KVM guests by the PMU, exact totals, \
             sampled attribution"
        }
    }
}

fn armed_text(armed: &Option<ArmedCpus>) -> String {
    match armed {
        Some(ArmedCpus::Valid { count: 0, .. }) => "none".to_owned(),
        Some(ArmedCpus::Valid { list, count: 1 }) => format!("{list} (1 CPU)"),
        Some(ArmedCpus::Valid { list, count }) => format!("{list} ({count} CPUs)"),
        Some(ArmedCpus::Malformed(text)) => {
            format!("\"{}\" (not a cpulist)", Escaped(text.as_bytes()))
        }
        None => NOT_AVAILABLE.to_owned(),
    }
}

/// The human-readable status.
pub(crate) fn render_text(snapshot: &Snapshot, rates: Option<&Rates>) -> String {
    if !snapshot.loaded {
        return "module      not loaded\n".to_owned();
    }
    let mut out = String::new();
    for (key, value) in [
        ("module", "loaded".to_owned()),
        ("policy", policy_text(&snapshot.policy)),
        (
            "source",
            source_text(&snapshot.source, &snapshot.requested_source),
        ),
        ("armed CPUs", armed_text(&snapshot.armed_cpus)),
    ] {
        out.push_str(&format!("{key:<12}{value}\n"));
    }
    out.push('\n');

    let mut columns = vec![
        Column {
            title: "COUNTER",
            align: Align::Left,
        },
        Column {
            title: "TOTAL",
            align: Align::Right,
        },
    ];
    if rates.is_some() {
        columns.push(Column {
            title: "PER SECOND",
            align: Align::Right,
        });
    }
    let rows: Vec<Vec<String>> = COUNTERS
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let mut row = vec![
                spec.file.to_owned(),
                snapshot.counters[index].map_or(NOT_AVAILABLE.to_owned(), |v| v.to_string()),
            ];
            if let Some(rates) = rates {
                row.push(
                    rates.per_second[index]
                        .map_or(NOT_AVAILABLE.to_owned(), |rate| format!("{rate:.1}")),
                );
            }
            row
        })
        .collect();
    out.push_str(&table::render(&columns, &rows));
    if let Some(rates) = rates {
        out.push_str(&format!(
            "\nrates over {:.2} s\n",
            rates.interval.as_secs_f64()
        ));
    }
    out
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_option(value: Option<String>) -> String {
    value.unwrap_or_else(|| "null".to_owned())
}

/// The status as one JSON object; unavailable values are `null`.
pub(crate) fn render_json(snapshot: &Snapshot, rates: Option<&Rates>) -> String {
    if !snapshot.loaded {
        return "{\"loaded\":false}\n".to_owned();
    }
    let policy = snapshot.policy.as_ref().map(|policy| match policy {
        PolicyReading::Valid(policy) => json_string(&policy.to_string()),
        PolicyReading::Unrecognised(text) => json_string(text),
    });
    let (armed_list, armed_count) = match &snapshot.armed_cpus {
        Some(ArmedCpus::Valid { list, count }) => {
            (Some(json_string(list)), Some(count.to_string()))
        }
        Some(ArmedCpus::Malformed(text)) => (Some(json_string(text)), None),
        None => (None, None),
    };
    let counters: Vec<String> = COUNTERS
        .iter()
        .zip(snapshot.counters)
        .map(|(spec, value)| {
            format!(
                "\"{}\":{}",
                spec.file,
                json_option(value.map(|v| v.to_string()))
            )
        })
        .collect();
    let rates = match rates {
        Some(rates) => {
            let per_second: Vec<String> = COUNTERS
                .iter()
                .zip(rates.per_second)
                .map(|(spec, rate)| {
                    format!(
                        "\"{}\":{}",
                        spec.file,
                        json_option(rate.map(|r| format!("{r:.3}")))
                    )
                })
                .collect();
            format!(
                "{{\"interval_seconds\":{:.3},\"per_second\":{{{}}}}}",
                rates.interval.as_secs_f64(),
                per_second.join(",")
            )
        }
        None => "null".to_owned(),
    };
    format!(
        "{{\"loaded\":true,\"policy\":{},\"requested_source\":{},\"source\":{},\
         \"armed_cpus\":{},\"armed_cpu_count\":{},\"counters\":{{{}}},\"rates\":{}}}\n",
        json_option(policy),
        json_option(snapshot.requested_source.as_deref().map(json_string)),
        json_option(snapshot.source.as_deref().map(json_string)),
        json_option(armed_list),
        json_option(armed_count),
        counters.join(","),
        rates
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sysfs::FakeSysfs;

    fn loaded_snapshot() -> Snapshot {
        let fake = FakeSysfs::loaded();
        fake.set_counter("bus_locks", 1234);
        fake.set_counter("throttled_ms", 3400);
        fake.remove("sys/kernel/amd_sld/guest_bus_locks");
        Snapshot::read(&Sysfs::new(fake.root())).unwrap()
    }

    #[test]
    fn text_status_is_aligned_and_says_what_is_missing() {
        let snapshot = loaded_snapshot();
        let rates = Rates {
            interval: Duration::from_secs(1),
            per_second: [
                Some(12.0),
                Some(11.5),
                Some(0.0),
                Some(0.5),
                Some(50.0),
                None,
                Some(0.0),
            ],
        };
        assert_eq!(
            render_text(&snapshot, Some(&rates)),
            "\
module      loaded
policy      warn
source      bld (requested: auto): host tasks by the trap, each bus lock; KVM guests not covered
armed CPUs  0-3 (4 CPUs)

COUNTER          TOTAL  PER SECOND
bus_locks         1234        12.0
warned               0        11.5
killed               0         0.0
throttled            0         0.5
throttled_ms      3400        50.0
guest_bus_locks    n/a         n/a
dropped              0         0.0

rates over 1.00 s
"
        );
        let without_rates = render_text(&snapshot, None);
        assert!(
            without_rates.contains("COUNTER          TOTAL\n"),
            "{without_rates}"
        );
        assert!(!without_rates.contains("rates over"));
    }

    #[test]
    fn odd_values_are_shown_escaped_not_hidden() {
        let mut snapshot = loaded_snapshot();
        snapshot.policy = Some(PolicyReading::Unrecognised("we\x1bird".to_owned()));
        snapshot.source = None;
        snapshot.armed_cpus = Some(ArmedCpus::Valid {
            list: String::new(),
            count: 0,
        });
        let text = render_text(&snapshot, None);
        assert!(text.contains("policy      \"we\\x1bird\" (not a policy this tool knows)\n"));
        assert!(text.contains("source      n/a (requested: auto)\n"));
        snapshot.source = Some("bld+pmu(guest)".to_owned());
        let text = render_text(&snapshot, None);
        assert!(text.contains(
            "source      bld+pmu(guest) (requested: auto): host tasks by the trap, each bus \
             lock; KVM guests by the PMU, exact totals, sampled attribution\n"
        ));
        assert!(text.contains("armed CPUs  none\n"));
    }

    #[test]
    fn json_status_uses_null_for_missing_values() {
        let snapshot = loaded_snapshot();
        let json = render_json(&snapshot, None);
        assert_eq!(
            json,
            "{\"loaded\":true,\"policy\":\"warn\",\"requested_source\":\"auto\",\"source\":\"bld\",\
             \"armed_cpus\":\"0-3\",\"armed_cpu_count\":4,\"counters\":{\"bus_locks\":1234,\
             \"warned\":0,\"killed\":0,\"throttled\":0,\"throttled_ms\":3400,\
             \"guest_bus_locks\":null,\"dropped\":0},\"rates\":null}\n"
        );
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn not_loaded_prints_and_fails_with_code_3() {
        let fake = FakeSysfs::empty();
        let mut out = Vec::new();
        let err = run(
            &Sysfs::new(fake.root()),
            Duration::from_secs(1),
            false,
            &mut out,
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 3);
        assert_eq!(String::from_utf8(out).unwrap(), "module      not loaded\n");
    }

    #[test]
    fn sampling_shows_the_latest_totals() {
        let fake = FakeSysfs::loaded();
        let mut out = Vec::new();
        run(
            &Sysfs::new(fake.root()),
            Duration::from_millis(20),
            true,
            &mut out,
        )
        .unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(
            json.contains("\"per_second\":{\"bus_locks\":0.000,"),
            "{json}"
        );
    }
}
