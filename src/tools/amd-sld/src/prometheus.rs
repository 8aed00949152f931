//! `amd-sld export --prometheus`: the Prometheus text exposition format, for
//! node_exporter's textfile collector.
//!
//! A collector must never break: a module that is not loaded is `amd_sld_up 0`, a missing
//! file is a missing metric, and the root-only offender table is left out with a comment
//! when it cannot be read.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use amd_sld_logic::record::Offender;

use crate::cgroup::Cgroups;
use crate::failure::Failure;
use crate::records;
use crate::snapshot::{ArmedCpus, PolicyReading, Snapshot, Unit, COUNTERS};
use crate::sysfs::Sysfs;

/// The label value for something this module version does not report.
const UNKNOWN: &str = "unknown";

/// Cgroups exported by name in `amd_sld_cgroup_bus_locks`: the ones with the most bus locks
/// in the offender table. The rest are summed under [`OTHER_CGROUP`], so that a host with
/// many containers adds at most this many + 1 series (the offender family is bounded by the
/// table itself: 16 processes, each labelled with its own cgroup).
pub(crate) const CGROUP_LABELS: usize = 8;

/// The `cgroup` label of every cgroup beyond the first [`CGROUP_LABELS`].
pub(crate) const OTHER_CGROUP: &str = "other";

/// The `cgroup` label of each offender, bounded: the [`CGROUP_LABELS`] cgroups with the
/// most bus locks (ties by name) keep their path, the others become [`OTHER_CGROUP`].
fn bounded_cgroup_labels(offenders: &[Offender], cgroups: &Cgroups) -> Vec<String> {
    let names: Vec<String> = offenders.iter().map(|o| cgroups.name(o.cgroup)).collect();
    let mut totals: Vec<(String, u64)> = Vec::new();
    for (name, offender) in names.iter().zip(offenders) {
        match totals.iter_mut().find(|(n, _)| n == name) {
            Some((_, total)) => *total = total.saturating_add(offender.bus_locks),
            None => totals.push((name.clone(), offender.bus_locks)),
        }
    }
    totals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    totals.truncate(CGROUP_LABELS);
    names
        .into_iter()
        .map(|name| {
            if totals.iter().any(|(kept, _)| *kept == name) {
                name
            } else {
                OTHER_CGROUP.to_owned()
            }
        })
        .collect()
}

/// The offender table, or why it is not exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OffenderTable {
    Read(Vec<Offender>),
    Unavailable(String),
}

/// A label value escaped as the exposition format requires: backslash, double quote and
/// line feed.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `{name="value",...}` with escaped values.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape_label_value(value)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A metric family: its HELP and TYPE lines, then its samples (`labels value`).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, value) in samples {
        out.push_str(&format!("{name}{labels} {value}\n"));
    }
}

/// Milliseconds as exact decimal seconds ("1.234"): no float rounding in a counter.
fn seconds_from_ms(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The whole exposition for one snapshot and the offender table.
pub(crate) fn render(snapshot: &Snapshot, offenders: &OffenderTable, cgroups: &Cgroups) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "amd_sld_up",
        "gauge",
        "Whether the amd_sld kernel module is loaded (1) or not (0).",
        &[(String::new(), u8::from(snapshot.loaded).to_string())],
    );
    if !snapshot.loaded {
        return out;
    }

    let policy = match &snapshot.policy {
        Some(PolicyReading::Valid(policy)) => policy.to_string(),
        Some(PolicyReading::Unrecognised(text)) => text.clone(),
        None => UNKNOWN.to_owned(),
    };
    let info = labels(&[
        ("policy", &policy),
        ("source", snapshot.source.as_deref().unwrap_or(UNKNOWN)),
        (
            "requested_source",
            snapshot.requested_source.as_deref().unwrap_or(UNKNOWN),
        ),
    ]);
    family(
        &mut out,
        "amd_sld_info",
        "gauge",
        "The policy, the bus-lock source in effect and the source asked for; always 1.",
        &[(info, "1".to_owned())],
    );

    for (spec, value) in COUNTERS.iter().zip(snapshot.counters) {
        let Some(value) = value else {
            continue;
        };
        let value = match spec.unit {
            Unit::Events => value.to_string(),
            Unit::Milliseconds => seconds_from_ms(value),
        };
        family(
            &mut out,
            spec.metric,
            "counter",
            spec.help,
            &[(String::new(), value)],
        );
    }

    if let Some(ArmedCpus::Valid { count, .. }) = &snapshot.armed_cpus {
        family(
            &mut out,
            "amd_sld_armed_cpus",
            "gauge",
            "CPUs on which bus-lock detection is armed (0 with policy off).",
            &[(String::new(), count.to_string())],
        );
    }

    match offenders {
        OffenderTable::Read(offenders) => {
            let cgroup_labels = bounded_cgroup_labels(offenders, cgroups);
            let samples: Vec<(String, String)> = offenders
                .iter()
                .map(|offender| {
                    let pid = offender.pid.to_string();
                    let comm = offender.comm.to_string();
                    // The offender's own path, not the bounded label: the family holds at
                    // most 16 series whatever the labels, and a label that turned into
                    // "other" when its cgroup fell out of the top 8 would start a new
                    // series and break rate().
                    let cgroup = cgroups.name(offender.cgroup);
                    (
                        labels(&[("pid", &pid), ("comm", &comm), ("cgroup", &cgroup)]),
                        offender.bus_locks.to_string(),
                    )
                })
                .collect();
            family(
                &mut out,
                "amd_sld_offender_bus_locks",
                "gauge",
                "Bus locks of the processes with the most since load (top 16; a count may be \
                 over-estimated by at most the smallest one listed).",
                &samples,
            );
            let mut per_cgroup: Vec<(String, u64)> = Vec::new();
            for (cgroup, offender) in cgroup_labels.iter().zip(offenders) {
                match per_cgroup.iter_mut().find(|(name, _)| name == cgroup) {
                    Some((_, total)) => *total = total.saturating_add(offender.bus_locks),
                    None => per_cgroup.push((cgroup.clone(), offender.bus_locks)),
                }
            }
            // Most first, "other" last.
            per_cgroup.sort_by(|a, b| {
                (a.0 == OTHER_CGROUP, std::cmp::Reverse(a.1), &a.0).cmp(&(
                    b.0 == OTHER_CGROUP,
                    std::cmp::Reverse(b.1),
                    &b.0,
                ))
            });
            let samples: Vec<(String, String)> = per_cgroup
                .iter()
                .map(|(cgroup, total)| (labels(&[("cgroup", cgroup)]), total.to_string()))
                .collect();
            family(
                &mut out,
                "amd_sld_cgroup_bus_locks",
                "gauge",
                "Bus locks of the offender table's processes per cgroup v2 (the 8 cgroups \
                 with the most by path, the rest summed under cgroup=\"other\").",
                &samples,
            );
        }
        OffenderTable::Unavailable(why) => {
            out.push_str(&format!(
                "# amd_sld_offender_bus_locks not exported: {why}\n"
            ));
        }
    }
    out
}

/// Reads everything to export. Only an unreadable counter fails; the offender table is
/// optional.
pub(crate) fn collect(sysfs: &Sysfs) -> Result<String, Failure> {
    let snapshot = Snapshot::read(sysfs)?;
    let offenders = if snapshot.loaded {
        match records::read_top(sysfs) {
            Ok(Some(offenders)) => OffenderTable::Read(offenders),
            Ok(None) => {
                OffenderTable::Unavailable("this module version has no top file".to_owned())
            }
            Err(Failure::PermissionDenied(_)) => {
                OffenderTable::Unavailable("reading top needs root".to_owned())
            }
            Err(failure) => OffenderTable::Unavailable(failure.to_string().replace('\n', " ")),
        }
    } else {
        OffenderTable::Unavailable(String::new())
    };
    let cgroups = match &offenders {
        OffenderTable::Read(_) => Cgroups::scan(sysfs),
        OffenderTable::Unavailable(_) => Cgroups::default(),
    };
    Ok(render(&snapshot, &offenders, &cgroups))
}

/// Replaces `path` with `contents` atomically: the textfile collector may read at any
/// moment and must never see half a file. The temporary file is in the same directory (a
/// rename does not cross file systems) and its name does not end in `.prom`, so the
/// collector ignores it.
pub(crate) fn write_atomically(path: &Path, contents: &str) -> Result<(), Failure> {
    let file_name = path
        .file_name()
        .ok_or_else(|| Failure::Usage(format!("--output {}: not a file name", path.display())))?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temporary = directory.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temporary)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    };
    write().map_err(|err| {
        let _ = fs::remove_file(&temporary);
        let message = format!("cannot write {}: {err}", path.display());
        if err.kind() == io::ErrorKind::PermissionDenied {
            Failure::PermissionDenied(message)
        } else {
            Failure::Runtime(message)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sysfs::FakeSysfs;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(
            labels(&[("pid", "1"), ("comm", "say \"hi\"")]),
            r#"{pid="1",comm="say \"hi\""}"#
        );
    }

    #[test]
    fn milliseconds_become_exact_seconds() {
        assert_eq!(seconds_from_ms(0), "0.000");
        assert_eq!(seconds_from_ms(3400), "3.400");
        assert_eq!(seconds_from_ms(u64::MAX), "18446744073709551.615");
    }

    #[test]
    fn full_exposition() {
        let fake = FakeSysfs::loaded();
        fake.set_counter("bus_locks", 1234);
        fake.set_counter("throttled_ms", 3400);
        fake.write(
            "sys/module/amd_sld/parameters/split_lock_detect",
            "ratelimit:10\n",
        );
        // A comm with a backslash and a quote: escaped by the record format (\x5c), then
        // for the exposition format.
        fake.write(
            "sys/kernel/amd_sld/top",
            "pid=4242 comm=a\\x5cb\"c bus_locks=1000 guest=0 first_ms=1 last_ms=2 cgroup=0\n",
        );
        let text = collect(&Sysfs::new(fake.root())).unwrap();
        assert_eq!(
            text,
            r#"# HELP amd_sld_up Whether the amd_sld kernel module is loaded (1) or not (0).
# TYPE amd_sld_up gauge
amd_sld_up 1
# HELP amd_sld_info The policy, the bus-lock source in effect and the source asked for; always 1.
# TYPE amd_sld_info gauge
amd_sld_info{policy="ratelimit:10",source="bld",requested_source="auto"} 1
# HELP amd_sld_bus_locks_total User-mode bus locks amd_sld detected since it was loaded.
# TYPE amd_sld_bus_locks_total counter
amd_sld_bus_locks_total 1234
# HELP amd_sld_warned_total Bus locks handled with a (rate-limited) kernel log warning.
# TYPE amd_sld_warned_total counter
amd_sld_warned_total 0
# HELP amd_sld_killed_total Bus locks answered with SIGBUS (policy fatal).
# TYPE amd_sld_killed_total counter
amd_sld_killed_total 0
# HELP amd_sld_throttled_total Bus locks whose task was made to sleep (policy ratelimit, over budget).
# TYPE amd_sld_throttled_total counter
amd_sld_throttled_total 0
# HELP amd_sld_throttled_seconds_total Time throttled tasks spent sleeping.
# TYPE amd_sld_throttled_seconds_total counter
amd_sld_throttled_seconds_total 3.400
# HELP amd_sld_guest_bus_locks_total Bus locks in KVM guests: exact beside the trap (source bld+pmu(guest)), sampled with source pmu.
# TYPE amd_sld_guest_bus_locks_total counter
amd_sld_guest_bus_locks_total 0
# HELP amd_sld_events_dropped_total Bus-lock records the module could not write (counters still count every bus lock).
# TYPE amd_sld_events_dropped_total counter
amd_sld_events_dropped_total 0
# HELP amd_sld_armed_cpus CPUs on which bus-lock detection is armed (0 with policy off).
# TYPE amd_sld_armed_cpus gauge
amd_sld_armed_cpus 4
# HELP amd_sld_offender_bus_locks Bus locks of the processes with the most since load (top 16; a count may be over-estimated by at most the smallest one listed).
# TYPE amd_sld_offender_bus_locks gauge
amd_sld_offender_bus_locks{pid="4242",comm="a\\x5cb\"c",cgroup="unknown"} 1000
# HELP amd_sld_cgroup_bus_locks Bus locks of the offender table's processes per cgroup v2 (the 8 cgroups with the most by path, the rest summed under cgroup="other").
# TYPE amd_sld_cgroup_bus_locks gauge
amd_sld_cgroup_bus_locks{cgroup="unknown"} 1000
"#
        );
    }

    #[test]
    fn cgroup_labels_are_bounded_the_rest_summed_as_other() {
        // 12 processes in 12 cgroups, the one of pid p with p bus locks, plus a second
        // process in the heaviest cgroup.
        let mut offenders: Vec<Offender> = (1..=12)
            .map(|p| {
                Offender::parse(&format!(
                    "pid={p} comm=x bus_locks={p} guest=0 first_ms=1 last_ms=1 cgroup={p}"
                ))
                .unwrap()
            })
            .collect();
        offenders.push(
            Offender::parse("pid=99 comm=y bus_locks=5 guest=0 first_ms=1 last_ms=1 cgroup=12")
                .unwrap(),
        );
        let pairs: Vec<(u64, String)> = (1..=12).map(|p| (p, format!("/c{p}"))).collect();
        let pairs: Vec<(u64, &str)> = pairs.iter().map(|(p, n)| (*p, n.as_str())).collect();
        let cgroups = Cgroups::from_pairs(&pairs);
        let fake = FakeSysfs::loaded();
        let snapshot = Snapshot::read(&Sysfs::new(fake.root())).unwrap();
        let text = render(&snapshot, &OffenderTable::Read(offenders), &cgroups);
        let per_cgroup: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("amd_sld_cgroup_bus_locks{"))
            .collect();
        assert_eq!(per_cgroup.len(), CGROUP_LABELS + 1, "{text}");
        assert_eq!(
            per_cgroup[0],
            "amd_sld_cgroup_bus_locks{cgroup=\"/c12\"} 17"
        );
        // /c1../c4 (1 + 2 + 3 + 4 bus locks) are beyond the first 8.
        assert_eq!(
            per_cgroup[CGROUP_LABELS],
            "amd_sld_cgroup_bus_locks{cgroup=\"other\"} 10"
        );
        // Offenders keep their own cgroup, summed under "other" only per cgroup.
        assert!(text.contains("amd_sld_offender_bus_locks{pid=\"1\",comm=\"x\",cgroup=\"/c1\"} 1"));
        assert!(
            text.contains("amd_sld_offender_bus_locks{pid=\"99\",comm=\"y\",cgroup=\"/c12\"} 5")
        );
    }

    #[test]
    fn every_sample_has_help_and_type() {
        let fake = FakeSysfs::loaded();
        let text = collect(&Sysfs::new(fake.root())).unwrap();
        let mut documented = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                documented.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(documented.iter().any(|d| d == name), "{name} has no TYPE");
            }
        }
    }

    #[test]
    fn an_older_module_or_no_module_still_exports() {
        let fake = FakeSysfs::loaded();
        for name in ["guest_bus_locks", "dropped", "source", "top"] {
            fake.remove(&format!("sys/kernel/amd_sld/{name}"));
        }
        fake.remove("sys/module/amd_sld/parameters/source");
        let text = collect(&Sysfs::new(fake.root())).unwrap();
        assert!(text.contains(
            "amd_sld_info{policy=\"warn\",source=\"unknown\",requested_source=\"unknown\"} 1\n"
        ));
        assert!(!text.contains("amd_sld_guest_bus_locks_total"));
        assert!(text.ends_with(
            "# amd_sld_offender_bus_locks not exported: this module version has no top file\n"
        ));

        let empty = FakeSysfs::empty();
        assert_eq!(
            collect(&Sysfs::new(empty.root())).unwrap(),
            "# HELP amd_sld_up Whether the amd_sld kernel module is loaded (1) or not (0).\n\
             # TYPE amd_sld_up gauge\namd_sld_up 0\n"
        );
    }

    #[test]
    fn output_is_replaced_atomically() {
        let fake = FakeSysfs::empty();
        let path = fake.root().join("amd_sld.prom");
        fs::write(&path, "old\n").unwrap();
        write_atomically(&path, "new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        let leftovers: Vec<_> = fs::read_dir(fake.root())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let missing_dir = fake.root().join("no/such/dir/amd_sld.prom");
        assert_eq!(
            write_atomically(&missing_dir, "x").unwrap_err().exit_code(),
            1
        );
    }
}
