//! `amd-sld events`: the module's most recent bus-lock records, once or followed.
//!
//! The module keeps the last few records of each CPU and source in a ring of its own and
//! numbers them (`seq`) from 0 since load, per ring: a record is known by its CPU, its
//! source and its seq. The file shows the newest of all rings merged in time order. A
//! follower that polls too slowly for a storm misses records; the seq gap in a ring says
//! how many, and that loss is always printed, never skipped over.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::thread;
use std::time::Duration;

use amd_sld_logic::record::{Action, Event, Source};

use crate::cgroup::Cgroups;
use crate::failure::Failure;
use crate::records::{self, EventLine, EVENTS_FILE};
use crate::snapshot::DROPPED_FILE;
use crate::symbols::Resolver;
use crate::sysfs::Sysfs;

/// What a follower does with one record, or with a discontinuity before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Records `first..first + count` of the ring of `cpu` and `source` were overwritten
    /// before they could be read.
    Lost {
        cpu: u32,
        source: Source,
        first: u64,
        count: u64,
    },
    /// The seq numbers went back: the module was reloaded and numbers from 0 again.
    Restarted,
    /// Print the record at this index of the batch.
    Show(usize),
}

/// A ring of the module: records are numbered per CPU and source.
type Ring = (u32, &'static str);

fn ring_of(event: &Event) -> Ring {
    (event.cpu, event.source.as_str())
}

/// Remembers, per ring, the next seq to print across reads of the `events` file, and the
/// time of the last record printed.
#[derive(Debug, Default)]
pub(crate) struct Follower {
    next_seq: HashMap<Ring, (u64, u64)>,
}

impl Follower {
    /// A follower that has printed the records of `event`'s ring up to `event` itself.
    #[cfg(test)]
    fn after(event: &Event) -> Self {
        Follower {
            next_seq: HashMap::from([(ring_of(event), (event.seq + 1, event.ms))]),
        }
    }

    /// The steps for one read of the file (oldest record first): records already printed
    /// are skipped, each gap in a ring is reported before the record after it.
    pub(crate) fn accept(&mut self, batch: &[Event]) -> Vec<Step> {
        let mut steps = Vec::new();
        // A record numbered as one already printed but newer than the last printed of its
        // ring: the rings were emptied by a reload and number from 0 again. (A ring's newest
        // record may be missing from one read, held back while another CPU writes one that
        // will sort before it: that is not a reload, and its number is not reused.)
        let went_back = batch.iter().any(|event| {
            self.next_seq
                .get(&ring_of(event))
                .is_some_and(|&(next, last_ms)| event.seq < next && event.ms > last_ms)
        });
        if went_back {
            steps.push(Step::Restarted);
            self.next_seq.clear();
        }
        for (index, event) in batch.iter().enumerate() {
            let ring = ring_of(event);
            if let Some(&(next, _)) = self.next_seq.get(&ring) {
                if event.seq < next {
                    continue;
                }
                if event.seq > next {
                    steps.push(Step::Lost {
                        cpu: event.cpu,
                        source: event.source,
                        first: next,
                        count: event.seq - next,
                    });
                }
            }
            steps.push(Step::Show(index));
            self.next_seq
                .insert(ring, (event.seq.saturating_add(1), event.ms));
        }
        steps
    }
}

/// Tracks the `dropped` counter: records the module could not even write (a storm).
#[derive(Debug, Default)]
pub(crate) struct DroppedWatch {
    last: Option<u64>,
}

impl DroppedWatch {
    /// Records dropped since the previous reading, so that each is reported once: the
    /// first reading reports those since load, and so does a decrease (module reloaded).
    pub(crate) fn update(&mut self, dropped: Option<u64>) -> Option<u64> {
        let now = dropped?;
        let increase = match self.last {
            Some(before) if now >= before => now - before,
            _ => now,
        };
        self.last = Some(now);
        (increase > 0).then_some(increase)
    }
}

fn action_text(action: Action) -> &'static str {
    match action {
        Action::None => "counted",
        Action::Warn => "warned",
        Action::Kill => "killed (SIGBUS)",
        Action::Throttle => "throttled",
    }
}

/// One record as a readable line, timestamped like dmesg (seconds of CLOCK_MONOTONIC),
/// with the task's cgroup v2 path; `code` names the code at the IP
/// (`lockwait __lll_lock_wait_private+0x1c`, or `libc.so.6+0x8a2c1`: crate::symbols).
pub(crate) fn describe(event: &Event, cgroups: &Cgroups, code: Option<&str>) -> String {
    let plural = if event.count == 1 { "" } else { "s" };
    let guest = if event.guest { ", in a KVM guest" } else { "" };
    let ip = match (event.ip, code) {
        (0, _) => "ip unknown".to_owned(),
        (ip, None) => format!("ip {ip:#x}"),
        (ip, Some(code)) => format!("ip {ip:#x} in {code}"),
    };
    format!(
        "[{:>5}.{:03}] #{} cpu {} {} (pid {}, tid {}, cgroup {}): {} bus lock{plural} ({}{guest}), {ip}, {}",
        event.ms / 1000,
        event.ms % 1000,
        event.seq,
        event.cpu,
        event.comm,
        event.pid,
        event.tid,
        cgroups.name(event.cgroup),
        event.count,
        event.source.as_str(),
        action_text(event.action),
    )
}

fn describe_step(step: Step) -> Option<String> {
    match step {
        Step::Lost {
            cpu,
            source,
            first,
            count,
        } => Some(format!(
            "-- {count} record{} of cpu {cpu} ({}) lost (seq {first}..{}): overwritten before \
             they were read; poll faster (--interval) --",
            if count == 1 { "" } else { "s" },
            source.as_str(),
            first + count - 1
        )),
        Step::Restarted => Some("-- seq went back: the module was reloaded --".to_owned()),
        Step::Show(_) => None,
    }
}

/// Output of the `events` command: records and loss notices.
pub(crate) struct Printer<'a> {
    raw: bool,
    cgroups: Cgroups,
    /// `--cgroup`: only records of this cgroup v2 path or below.
    cgroup_prefix: Option<String>,
    /// Scan the cgroup2 mount again when a record names a cgroup not seen yet (one made
    /// since the last scan, with `--follow`).
    rescan: bool,
    /// Cgroup IDs a rescan has already looked for.
    cgroups_looked_for: HashSet<u64>,
    out: &'a mut dyn Write,
    notices: &'a mut dyn Write,
    /// Names the code of each record shown (not with `raw`).
    resolver: Option<Resolver>,
}

impl<'a> Printer<'a> {
    /// With `raw`, records are the kernel's lines unchanged and loss notices go to
    /// `notices` (stderr), so that `out` stays exactly the kernel's format.
    pub(crate) fn new(
        raw: bool,
        out: &'a mut dyn Write,
        notices: &'a mut dyn Write,
    ) -> Printer<'a> {
        Printer {
            raw,
            cgroups: Cgroups::default(),
            cgroup_prefix: None,
            rescan: false,
            cgroups_looked_for: HashSet::new(),
            out,
            notices,
            resolver: None,
        }
    }

    /// Names the code of each record through the processes under `proc` (`/proc`).
    pub(crate) fn resolving(self, proc: impl Into<std::path::PathBuf>) -> Printer<'a> {
        Printer {
            resolver: Some(Resolver::new(proc)),
            ..self
        }
    }

    /// Shows cgroups by `cgroups`' paths and, with `prefix`, only records whose cgroup is
    /// `prefix` or below it (tests: a map given by hand, never rescanned).
    #[cfg(test)]
    pub(crate) fn with_cgroups(mut self, cgroups: Cgroups, prefix: Option<String>) -> Self {
        self.cgroups = cgroups;
        self.cgroup_prefix = prefix;
        self
    }

    /// Resolves cgroups by scanning `sysfs`'s cgroup2 mount, now and whenever a record
    /// names a cgroup the last scan did not see.
    pub(crate) fn scanning_cgroups(mut self, sysfs: &Sysfs, prefix: Option<String>) -> Self {
        self.cgroups = Cgroups::scan(sysfs);
        self.cgroup_prefix = prefix;
        self.rescan = true;
        self
    }

    /// Scans again if one of `batch`'s cgroups has no path yet and was not looked for
    /// before: a cgroup removed before it was ever seen (an exited pod) or outside this
    /// tool's cgroup namespace costs one scan, not one per poll.
    fn refresh_cgroups(&mut self, sysfs: &Sysfs, batch: &[Event]) {
        if !self.rescan {
            return;
        }
        let mut unresolved = batch
            .iter()
            .map(|event| event.cgroup)
            .filter(|&id| id != 0 && self.cgroups.path(id).is_none())
            .peekable();
        if unresolved.peek().is_none() {
            return;
        }
        let unseen: Vec<u64> = unresolved
            .filter(|id| !self.cgroups_looked_for.contains(id))
            .collect();
        if unseen.is_empty() {
            return;
        }
        self.cgroups_looked_for.extend(unseen);
        self.cgroups.merge(Cgroups::scan(sysfs));
    }

    fn notice(&mut self, text: &str) -> Result<(), Failure> {
        let sink = if self.raw {
            &mut *self.notices
        } else {
            &mut *self.out
        };
        writeln!(sink, "{text}").map_err(Failure::output)
    }

    fn print(&mut self, steps: &[Step], batch: &[EventLine]) -> Result<(), Failure> {
        for &step in steps {
            match step {
                Step::Show(index) => {
                    let record = &batch[index];
                    if let Some(prefix) = &self.cgroup_prefix {
                        if !self.cgroups.is_under(record.event.cgroup, prefix) {
                            continue;
                        }
                    }
                    let text = if self.raw {
                        record.line.clone()
                    } else {
                        let code = self
                            .resolver
                            .as_mut()
                            .and_then(|resolver| resolver.describe(&record.event));
                        describe(&record.event, &self.cgroups, code.as_deref())
                    };
                    writeln!(self.out, "{text}").map_err(Failure::output)?;
                }
                other => {
                    if let Some(text) = describe_step(other) {
                        self.notice(&text)?;
                    }
                }
            }
        }
        self.out.flush().map_err(Failure::output)
    }

    fn dropped(&mut self, count: u64) -> Result<(), Failure> {
        self.notice(&format!(
            "-- {count} record{} dropped by the module under contention, never written \
             (the counters still count those bus locks) --",
            if count == 1 { "" } else { "s" }
        ))
    }
}

/// One read of `events`: the records, or why there are none to read.
fn read_batch(sysfs: &Sysfs) -> Result<Vec<EventLine>, Failure> {
    records::read_events(sysfs)?.ok_or_else(|| records::missing(sysfs, EVENTS_FILE))
}

/// Prints the records; with `follow`, keeps polling every `interval` for new ones.
pub(crate) fn run(
    sysfs: &Sysfs,
    follow: bool,
    interval: Duration,
    printer: &mut Printer<'_>,
) -> Result<(), Failure> {
    sysfs.require_loaded()?;
    let mut follower = Follower::default();
    let mut dropped = DroppedWatch::default();
    loop {
        let batch = read_batch(sysfs)?;
        let events: Vec<Event> = batch.iter().map(|record| record.event).collect();
        let steps = follower.accept(&events);
        printer.refresh_cgroups(sysfs, &events);
        printer.print(&steps, &batch)?;
        if let Some(count) = dropped.update(sysfs.read_counter(DROPPED_FILE)?) {
            printer.dropped(count)?;
        }
        if !follow {
            return Ok(());
        }
        thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sysfs::FakeSysfs;
    use amd_sld_logic::record::Comm;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            ms: 123_456 + seq,
            cpu: 2,
            pid: 345,
            tid: 346,
            comm: Comm::new(b"python3"),
            source: Source::Bld,
            guest: false,
            ip: 0x40_1234,
            count: 1,
            cgroup: 7,
            action: Action::Warn,
            map: None,
        }
    }

    fn batch(seqs: impl IntoIterator<Item = u64>) -> Vec<Event> {
        seqs.into_iter().map(event).collect()
    }

    #[test]
    fn follower_prints_each_record_once() {
        let mut follower = Follower::default();
        assert_eq!(
            follower.accept(&batch(5..8)),
            [Step::Show(0), Step::Show(1), Step::Show(2)],
            "the first read shows the whole ring, no loss before it"
        );
        assert_eq!(follower.accept(&batch(5..8)), []);
        assert_eq!(
            follower.accept(&batch(6..10)),
            [Step::Show(2), Step::Show(3)]
        );
        assert_eq!(follower.accept(&[]), []);
    }

    #[test]
    fn follower_reports_every_gap() {
        let mut follower = Follower::default();
        follower.accept(&batch(0..3));
        // The ring moved on by 40 records between two reads: 3..=39 were overwritten.
        assert_eq!(
            follower.accept(&batch(40..42)),
            [
                Step::Lost {
                    cpu: 2,
                    source: Source::Bld,
                    first: 3,
                    count: 37
                },
                Step::Show(0),
                Step::Show(1)
            ]
        );
        // A gap inside one read is reported too.
        assert_eq!(
            follower.accept(&batch([42, 45])),
            [
                Step::Show(0),
                Step::Lost {
                    cpu: 2,
                    source: Source::Bld,
                    first: 43,
                    count: 2
                },
                Step::Show(1)
            ]
        );
    }

    /// Rings number their records apart: records of several CPUs and sources, merged in
    /// time order, are each printed once, and a gap is one ring's own.
    #[test]
    fn follower_numbers_records_per_cpu_and_source() {
        let on = |cpu: u32, source: Source, seq: u64| Event {
            cpu,
            source,
            ..event(seq)
        };
        let mut follower = Follower::default();
        let first = [
            on(0, Source::Bld, 7),
            on(1, Source::Bld, 7),
            on(0, Source::Pmu, 0),
            on(0, Source::Bld, 8),
        ];
        assert_eq!(
            follower.accept(&first),
            [Step::Show(0), Step::Show(1), Step::Show(2), Step::Show(3)]
        );
        let second = [
            on(1, Source::Bld, 7),
            on(0, Source::Bld, 8),
            on(1, Source::Bld, 8),
            on(0, Source::Bld, 11),
        ];
        assert_eq!(
            follower.accept(&second),
            [
                Step::Show(2),
                Step::Lost {
                    cpu: 0,
                    source: Source::Bld,
                    first: 9,
                    count: 2
                },
                Step::Show(3)
            ]
        );
    }

    #[test]
    fn follower_notices_a_reload() {
        let mut follower = Follower::default();
        follower.accept(&batch(0..50));
        // After a reload: numbered from 0 again, and later than anything printed.
        let reloaded: Vec<Event> = batch(0..2)
            .into_iter()
            .map(|event| Event {
                ms: event.ms + 1000,
                ..event
            })
            .collect();
        assert_eq!(
            follower.accept(&reloaded),
            [Step::Restarted, Step::Show(0), Step::Show(1)]
        );
    }

    #[test]
    fn a_newest_record_held_back_once_is_not_a_reload() {
        let mut follower = Follower::default();
        follower.accept(&batch(0..4));
        // The next read holds seq 3 back (another CPU is writing a record that may sort
        // before it): nothing to print, nothing lost, no reload.
        assert_eq!(follower.accept(&batch(0..3)), []);
        assert_eq!(follower.accept(&batch(0..5)), [Step::Show(4)]);
    }

    #[test]
    fn dropped_watch_reports_increases_only() {
        let mut watch = DroppedWatch::default();
        assert_eq!(watch.update(Some(0)), None);
        assert_eq!(watch.update(Some(7)), Some(7));
        assert_eq!(watch.update(Some(7)), None);
        assert_eq!(watch.update(Some(10)), Some(3));
        assert_eq!(watch.update(None), None, "not available");
        assert_eq!(watch.update(Some(2)), Some(2), "reloaded: all since load");
        assert_eq!(watch.update(Some(3)), Some(1));
        let mut first = DroppedWatch::default();
        assert_eq!(
            first.update(Some(5)),
            Some(5),
            "since load, at the first read"
        );
    }

    #[test]
    fn readable_lines() {
        assert_eq!(
            describe(&event(7), &Cgroups::from_pairs(&[(7, "/jobs/a")]), None),
            "[  123.463] #7 cpu 2 python3 (pid 345, tid 346, cgroup /jobs/a): 1 bus lock (bld), ip 0x401234, warned"
        );
        assert_eq!(
            describe(
                &event(7),
                &Cgroups::from_pairs(&[(7, "/jobs/a")]),
                Some("libc.so.6 __lll_lock_wait_private+0x1c")
            ),
            "[  123.463] #7 cpu 2 python3 (pid 345, tid 346, cgroup /jobs/a): 1 bus lock (bld), \
             ip 0x401234 in libc.so.6 __lll_lock_wait_private+0x1c, warned"
        );
        let pmu = Event {
            source: Source::Pmu,
            guest: true,
            ip: 0,
            count: 10_000,
            action: Action::None,
            comm: Comm::new(b"CPU 0/KVM"),
            ..event(8)
        };
        assert_eq!(
            describe(&pmu, &Cgroups::default(), None),
            "[  123.464] #8 cpu 2 CPU\\x200/KVM (pid 345, tid 346, cgroup cgroup-id:7): 10000 bus locks (pmu, in a KVM guest), ip unknown, counted"
        );
    }

    #[test]
    fn a_cgroup_prefix_keeps_only_its_records() {
        let fake = FakeSysfs::loaded();
        let a = "seq=1 ms=1 cpu=0 pid=1 tid=1 comm=a source=bld guest=0 ip=0x1 count=1 action=warn cgroup=7";
        let b = "seq=2 ms=2 cpu=0 pid=2 tid=2 comm=b source=bld guest=0 ip=0x1 count=1 action=warn cgroup=8";
        fake.write("sys/kernel/amd_sld/events", &format!("{a}\n{b}\n"));
        let (mut out, mut notices) = (Vec::new(), Vec::new());
        let cgroups = Cgroups::from_pairs(&[(7, "/jobs/a"), (8, "/other")]);
        let mut printer = Printer::new(true, &mut out, &mut notices)
            .with_cgroups(cgroups, Some("/jobs".to_owned()));
        run(
            &Sysfs::new(fake.root()),
            false,
            Duration::ZERO,
            &mut printer,
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("{a}\n"));
    }

    #[test]
    fn a_cgroup_made_after_the_first_scan_is_found_by_a_rescan() {
        use std::os::unix::fs::MetadataExt;
        let fake = FakeSysfs::loaded();
        let sysfs = Sysfs::new(fake.root());
        let (mut out, mut notices) = (Vec::new(), Vec::new());
        let mut printer =
            Printer::new(false, &mut out, &mut notices).scanning_cgroups(&sysfs, None);
        fake.write("sys/fs/cgroup/late/cgroup.procs", "");
        let id = std::fs::metadata(fake.root().join("sys/fs/cgroup/late"))
            .unwrap()
            .ino();
        fake.write(
            "sys/kernel/amd_sld/events",
            &format!("seq=1 ms=1 cpu=0 pid=1 tid=1 comm=a source=bld guest=0 ip=0x1 count=1 action=warn cgroup={id}\n"),
        );
        run(&sysfs, false, Duration::ZERO, &mut printer).unwrap();
        drop(printer);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("cgroup /late)"), "{text}");
    }

    fn run_once(fake: &FakeSysfs, raw: bool) -> (String, String) {
        let (mut out, mut notices) = (Vec::new(), Vec::new());
        let mut printer = Printer::new(raw, &mut out, &mut notices);
        run(
            &Sysfs::new(fake.root()),
            false,
            Duration::ZERO,
            &mut printer,
        )
        .unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(notices).unwrap(),
        )
    }

    #[test]
    fn raw_prints_the_kernel_lines_unchanged() {
        let fake = FakeSysfs::loaded();
        let lines = format!("{}\n{} future=1\n", event(1), event(2));
        fake.write("sys/kernel/amd_sld/events", &lines);
        let (out, notices) = run_once(&fake, true);
        assert_eq!(out, lines);
        assert_eq!(notices, "");
        let (out, _) = run_once(&fake, false);
        assert_eq!(out.lines().count(), 2);
        assert!(out.starts_with("[  123.457] #1 "), "{out}");
    }

    #[test]
    fn loss_notices_go_to_stderr_in_raw_mode() {
        let (mut out, mut notices) = (Vec::new(), Vec::new());
        let records: Vec<EventLine> = batch([3, 9])
            .into_iter()
            .map(|event| EventLine {
                event,
                line: event.to_string(),
            })
            .collect();
        let events: Vec<Event> = records.iter().map(|record| record.event).collect();
        let mut follower = Follower::after(&event(2));
        let steps = follower.accept(&events);
        Printer::new(true, &mut out, &mut notices)
            .print(&steps, &records)
            .unwrap();
        assert_eq!(out.split(|&b| b == b'\n').count(), 3);
        assert_eq!(
            String::from_utf8(notices).unwrap(),
            "-- 5 records of cpu 2 (bld) lost (seq 4..8): overwritten before they were read; poll faster (--interval) --\n"
        );
    }

    #[test]
    fn needs_the_module_and_the_file() {
        let fake = FakeSysfs::loaded();
        fake.remove("sys/kernel/amd_sld/events");
        let (mut out, mut notices) = (std::io::sink(), std::io::sink());
        let mut printer = Printer::new(false, &mut out, &mut notices);
        let sysfs = Sysfs::new(fake.root());
        assert_eq!(
            run(&sysfs, false, Duration::ZERO, &mut printer)
                .unwrap_err()
                .exit_code(),
            1
        );
        fake.remove("sys/module/amd_sld");
        assert_eq!(
            run(&sysfs, false, Duration::ZERO, &mut printer)
                .unwrap_err()
                .exit_code(),
            3
        );
    }
}
