//! `amd-sld top`: the processes with the most bus locks, refreshed until interrupted; per
//! process, or per cgroup v2 (`--by cgroup`), optionally of one cgroup subtree only.

use std::collections::HashMap;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use amd_sld_logic::record::Offender;

use crate::cgroup::Cgroups;
use crate::clock;
use crate::failure::Failure;
use crate::records::{self, TOP_FILE};
use crate::sysfs::Sysfs;
use crate::table::{self, Align, Column};

/// Rows the module keeps in `top` (docs/ABI/sysfs-kernel-amd_sld). When the table is full,
/// its Space-Saving counts may be over-estimates, which the view says.
const TOP_CAPACITY: usize = 16;

/// ANSI: cursor home, clear screen.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// What a row stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum GroupBy {
    /// One row per process (the module's table as is).
    Process,
    /// One row per cgroup v2: its processes' rows summed.
    Cgroup,
}

/// How the table is shown.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// Only processes whose cgroup v2 is this path or below it.
    pub(crate) cgroup: Option<String>,
    /// Rows per process or per cgroup.
    pub(crate) by: GroupBy,
}

impl Default for View {
    fn default() -> Self {
        View {
            cgroup: None,
            by: GroupBy::Process,
        }
    }
}

/// One row: a process, or a cgroup's processes summed.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    /// What the rates of two refreshes are matched by: the pid, or the cgroup's name.
    key: String,
    /// The leading cells (PID and COMM, or CGROUP and PROCESSES).
    cells: [String; 2],
    bus_locks: u64,
    guest: bool,
    first_ms: u64,
    last_ms: u64,
    cgroup: String,
}

/// The rows of `offenders` as `view` asks: filtered by cgroup, grouped, most bus locks
/// first.
fn rows(offenders: &[Offender], cgroups: &Cgroups, view: &View) -> Vec<Row> {
    let kept = offenders.iter().filter(|offender| {
        view.cgroup
            .as_deref()
            .map_or(true, |prefix| cgroups.is_under(offender.cgroup, prefix))
    });
    match view.by {
        GroupBy::Process => kept
            .map(|offender| Row {
                key: offender.pid.to_string(),
                // The record's escaped form: no byte of it can move the terminal's cursor.
                cells: [offender.pid.to_string(), offender.comm.to_string()],
                bus_locks: offender.bus_locks,
                guest: offender.guest,
                first_ms: offender.first_ms,
                last_ms: offender.last_ms,
                cgroup: cgroups.name(offender.cgroup),
            })
            .collect(),
        GroupBy::Cgroup => {
            let mut groups: Vec<(Row, usize)> = Vec::new();
            for offender in kept {
                let name = cgroups.name(offender.cgroup);
                match groups.iter_mut().find(|(row, _)| row.key == name) {
                    Some((row, processes)) => {
                        *processes += 1;
                        row.bus_locks = row.bus_locks.saturating_add(offender.bus_locks);
                        row.guest |= offender.guest;
                        row.first_ms = row.first_ms.min(offender.first_ms);
                        row.last_ms = row.last_ms.max(offender.last_ms);
                    }
                    None => groups.push((
                        Row {
                            key: name.clone(),
                            cells: [name.clone(), String::new()],
                            bus_locks: offender.bus_locks,
                            guest: offender.guest,
                            first_ms: offender.first_ms,
                            last_ms: offender.last_ms,
                            cgroup: name,
                        },
                        1,
                    )),
                }
            }
            let mut rows: Vec<Row> = groups
                .into_iter()
                .map(|(mut row, processes)| {
                    row.cells[1] = processes.to_string();
                    row
                })
                .collect();
            rows.sort_by(|a, b| b.bus_locks.cmp(&a.bus_locks).then(a.key.cmp(&b.key)));
            rows
        }
    }
}

/// One refresh of the table, kept for the next one's rates.
struct Refresh {
    at: Instant,
    bus_locks: HashMap<String, u64>,
}

/// Bus locks per second of each row since the previous refresh; `None` for a row not in
/// it, on the first refresh, or whose count went down (module reloaded).
fn row_rates(previous: Option<&Refresh>, current: &[Row], now: Instant) -> Vec<Option<f64>> {
    current
        .iter()
        .map(|row| {
            let previous = previous?;
            let seconds = now.duration_since(previous.at).as_secs_f64();
            let before = *previous.bus_locks.get(&row.key)?;
            (seconds > 0.0 && row.bus_locks >= before)
                .then(|| (row.bus_locks - before) as f64 / seconds)
        })
        .collect()
}

/// The table: one row per process or cgroup, `rates` in the same order. `full`: the
/// module's table is full (its counts may be over-estimates).
fn render(rows: &[Row], rates: &[Option<f64>], now_ms: u64, by: GroupBy, full: bool) -> String {
    if rows.is_empty() {
        return "no bus locks recorded since the module was loaded\n".to_owned();
    }
    let column = |title, align| Column { title, align };
    let mut columns = match by {
        GroupBy::Process => vec![column("PID", Align::Right), column("COMM", Align::Left)],
        GroupBy::Cgroup => vec![
            column("CGROUP", Align::Left),
            column("PROCESSES", Align::Right),
        ],
    };
    columns.extend([
        column("BUS_LOCKS", Align::Right),
        column("RATE/S", Align::Right),
        column("GUEST", Align::Left),
        column("FIRST SEEN", Align::Right),
        column("LAST SEEN", Align::Right),
    ]);
    if by == GroupBy::Process {
        columns.push(column("CGROUP", Align::Left));
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .zip(rates)
        .map(|(row, rate)| {
            let mut cells = row.cells.to_vec();
            cells.extend([
                row.bus_locks.to_string(),
                rate.map_or("-".to_owned(), |rate| format!("{rate:.1}")),
                if row.guest { "yes" } else { "no" }.to_owned(),
                clock::ago(now_ms, row.first_ms),
                clock::ago(now_ms, row.last_ms),
            ]);
            if by == GroupBy::Process {
                cells.push(row.cgroup.clone());
            }
            cells
        })
        .collect();
    let mut out = table::render(&columns, &cells);
    if full {
        out.push_str(match by {
            GroupBy::Process => {
                "(table full: a process may have inherited the count of the one it replaced, \
                 so counts can be over-estimated by at most the smallest count shown)\n"
            }
            GroupBy::Cgroup => {
                "(table full: a process may have inherited the count of the one it replaced, \
                 so a row can be over-estimated by at most the smallest process count, once \
                 per process in it)\n"
            }
        });
    }
    out
}

/// Prints the table once (`once`) or every `interval` until interrupted; `clear_screen`
/// repaints a terminal instead of scrolling.
pub(crate) fn run(
    sysfs: &Sysfs,
    interval: Duration,
    once: bool,
    clear_screen: bool,
    view: &View,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    sysfs.require_loaded()?;
    let mut previous: Option<Refresh> = None;
    loop {
        let offenders =
            records::read_top(sysfs)?.ok_or_else(|| records::missing(sysfs, TOP_FILE))?;
        // Scanned at every refresh: cgroups come and go.
        let cgroups = Cgroups::scan(sysfs);
        let rows = rows(&offenders, &cgroups, view);
        let now = Instant::now();
        let now_ms = clock::monotonic_ms();
        let rates = row_rates(previous.as_ref(), &rows, now);
        let mut screen = String::new();
        if clear_screen {
            screen.push_str(CLEAR_SCREEN);
        }
        if !once {
            let what = match view.by {
                GroupBy::Process => "processes",
                GroupBy::Cgroup => "cgroups",
            };
            screen.push_str(&format!(
                "amd_sld: {what} with the most bus locks since load; every {:.1} s, Ctrl-C quits\n\n",
                interval.as_secs_f64()
            ));
        }
        let full = offenders.len() >= TOP_CAPACITY;
        screen.push_str(&render(&rows, &rates, now_ms, view.by, full));
        if !once && !clear_screen {
            screen.push('\n');
        }
        out.write_all(screen.as_bytes())
            .and_then(|()| out.flush())
            .map_err(Failure::output)?;
        if once {
            return Ok(());
        }
        previous = Some(Refresh {
            at: now,
            bus_locks: rows
                .iter()
                .map(|row| (row.key.clone(), row.bus_locks))
                .collect(),
        });
        thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sysfs::FakeSysfs;

    const TWO_OFFENDERS: &str = "\
pid=4242 comm=split\\x20lock bus_locks=90000 guest=0 first_ms=1000 last_ms=64000 cgroup=7
pid=77 comm=qemu-system-x86 bus_locks=1200 guest=1 first_ms=5000 last_ms=65000 cgroup=8
pid=78 comm=other bus_locks=800 guest=0 first_ms=4000 last_ms=66000 cgroup=8
";

    fn cgroups() -> Cgroups {
        Cgroups::from_pairs(&[(1, "/"), (7, "/jobs/batch"), (8, "/machine/vm1")])
    }

    fn process_rows() -> Vec<Row> {
        rows(&offenders(), &cgroups(), &View::default())
    }

    fn offenders() -> Vec<Offender> {
        TWO_OFFENDERS
            .lines()
            .map(|line| Offender::parse(line).unwrap())
            .collect()
    }

    #[test]
    fn table_shows_escaped_names_rates_and_ages() {
        let table = render(
            &process_rows(),
            &[Some(1500.0), None, None],
            66_000,
            GroupBy::Process,
            false,
        );
        let expected = [
            " PID  COMM             BUS_LOCKS  RATE/S  GUEST  FIRST SEEN  LAST SEEN  CGROUP",
            "4242  split\\x20lock        90000  1500.0  no      1m05s ago     2s ago  /jobs/batch",
            "  77  qemu-system-x86       1200       -  yes     1m01s ago     1s ago  /machine/vm1",
            "  78  other                  800       -  no      1m02s ago     0s ago  /machine/vm1",
        ];
        assert_eq!(table, expected.join("\n") + "\n");
    }

    #[test]
    fn rows_by_cgroup_sum_their_processes_and_filter_by_prefix() {
        let by_cgroup = View {
            cgroup: None,
            by: GroupBy::Cgroup,
        };
        let rows = rows(&offenders(), &cgroups(), &by_cgroup);
        let table = render(&rows, &[None, None], 66_000, GroupBy::Cgroup, false);
        let expected = [
            "CGROUP        PROCESSES  BUS_LOCKS  RATE/S  GUEST  FIRST SEEN  LAST SEEN",
            "/jobs/batch           1      90000       -  no      1m05s ago     2s ago",
            "/machine/vm1          2       2000       -  yes     1m02s ago     0s ago",
        ];
        assert_eq!(table, expected.join("\n") + "\n");
        let only = View {
            cgroup: Some("/machine".to_owned()),
            by: GroupBy::Process,
        };
        let pids: Vec<String> = super::rows(&offenders(), &cgroups(), &only)
            .into_iter()
            .map(|row| row.key)
            .collect();
        assert_eq!(pids, ["77", "78"]);
        let none = View {
            cgroup: Some("/mach".to_owned()),
            by: GroupBy::Cgroup,
        };
        assert!(super::rows(&offenders(), &cgroups(), &none).is_empty());
    }

    #[test]
    fn rates_come_from_the_previous_refresh_of_the_same_pid() {
        let now = Instant::now();
        let previous = Refresh {
            at: now - Duration::from_secs(2),
            bus_locks: HashMap::from([("4242".to_owned(), 80_000), ("77".to_owned(), 5000)]),
        };
        let current = process_rows();
        assert_eq!(row_rates(None, &current, now), [None, None, None]);
        // 77 went from 5000 down to 1200: the module was reloaded, no rate.
        assert_eq!(
            row_rates(Some(&previous), &current, now),
            [Some(5000.0), None, None]
        );
    }

    #[test]
    fn a_full_table_warns_about_over_estimates() {
        let text = render(&process_rows(), &[None; 3], 65_000, GroupBy::Process, true);
        assert!(text.ends_with("smallest count shown)\n"), "{text}");
    }

    #[test]
    fn once_prints_one_table_without_clearing() {
        let fake = FakeSysfs::loaded();
        fake.write("sys/kernel/amd_sld/top", TWO_OFFENDERS);
        let mut out = Vec::new();
        run(
            &Sysfs::new(fake.root()),
            Duration::from_secs(2),
            true,
            false,
            &View::default(),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(" PID  COMM"), "{text}");
        assert!(!text.contains('\x1b'));

        let mut out = Vec::new();
        run(
            &Sysfs::new(fake.root()),
            Duration::from_secs(2),
            true,
            true,
            &View::default(),
            &mut out,
        )
        .unwrap();
        assert!(out.starts_with(CLEAR_SCREEN.as_bytes()));
    }

    #[test]
    fn empty_missing_and_unloaded() {
        let fake = FakeSysfs::loaded();
        let sysfs = Sysfs::new(fake.root());
        let mut out = Vec::new();
        run(
            &sysfs,
            Duration::from_secs(1),
            true,
            false,
            &View::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "no bus locks recorded since the module was loaded\n"
        );
        fake.remove("sys/kernel/amd_sld/top");
        let err = run(
            &sysfs,
            Duration::from_secs(1),
            true,
            false,
            &View::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 1);
        fake.remove("sys/module/amd_sld");
        let err = run(
            &sysfs,
            Duration::from_secs(1),
            true,
            false,
            &View::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 3);
    }
}
