//! `amd-sld top`: the processes with the most bus locks, refreshed until interrupted.

use std::collections::HashMap;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use amd_sld_logic::record::Offender;

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

/// One refresh of the table, kept for the next one's rates.
struct Refresh {
    at: Instant,
    bus_locks: HashMap<i32, u64>,
}

/// Bus locks per second of each offender since the previous refresh; `None` for a
/// process not in it, on the first refresh, or whose count went down (module reloaded).
fn offender_rates(
    previous: Option<&Refresh>,
    current: &[Offender],
    now: Instant,
) -> Vec<Option<f64>> {
    current
        .iter()
        .map(|offender| {
            let previous = previous?;
            let seconds = now.duration_since(previous.at).as_secs_f64();
            let before = *previous.bus_locks.get(&offender.pid)?;
            (seconds > 0.0 && offender.bus_locks >= before)
                .then(|| (offender.bus_locks - before) as f64 / seconds)
        })
        .collect()
}

/// The table: one row per offender, `rates` in the same order.
fn render(offenders: &[Offender], rates: &[Option<f64>], now_ms: u64) -> String {
    if offenders.is_empty() {
        return "no bus locks recorded since the module was loaded\n".to_owned();
    }
    let columns = [
        Column {
            title: "PID",
            align: Align::Right,
        },
        Column {
            title: "COMM",
            align: Align::Left,
        },
        Column {
            title: "BUS_LOCKS",
            align: Align::Right,
        },
        Column {
            title: "RATE/S",
            align: Align::Right,
        },
        Column {
            title: "GUEST",
            align: Align::Left,
        },
        Column {
            title: "FIRST SEEN",
            align: Align::Right,
        },
        Column {
            title: "LAST SEEN",
            align: Align::Right,
        },
    ];
    let rows: Vec<Vec<String>> = offenders
        .iter()
        .zip(rates)
        .map(|(offender, rate)| {
            vec![
                offender.pid.to_string(),
                // The record's escaped form: no byte of it can move the terminal's cursor.
                offender.comm.to_string(),
                offender.bus_locks.to_string(),
                rate.map_or("-".to_owned(), |rate| format!("{rate:.1}")),
                if offender.guest { "yes" } else { "no" }.to_owned(),
                clock::ago(now_ms, offender.first_ms),
                clock::ago(now_ms, offender.last_ms),
            ]
        })
        .collect();
    let mut out = table::render(&columns, &rows);
    if offenders.len() >= TOP_CAPACITY {
        out.push_str(
            "(table full: a process may have inherited the count of the one it replaced, \
             so counts can be over-estimated by at most the smallest count shown)\n",
        );
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
    out: &mut dyn Write,
) -> Result<(), Failure> {
    sysfs.require_loaded()?;
    let mut previous: Option<Refresh> = None;
    loop {
        let offenders =
            records::read_top(sysfs)?.ok_or_else(|| records::missing(sysfs, TOP_FILE))?;
        let now = Instant::now();
        let now_ms = clock::monotonic_ms();
        let rates = offender_rates(previous.as_ref(), &offenders, now);
        let mut screen = String::new();
        if clear_screen {
            screen.push_str(CLEAR_SCREEN);
        }
        if !once {
            screen.push_str(&format!(
                "amd_sld: processes with the most bus locks since load; every {:.1} s, Ctrl-C quits\n\n",
                interval.as_secs_f64()
            ));
        }
        screen.push_str(&render(&offenders, &rates, now_ms));
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
            bus_locks: offenders
                .iter()
                .map(|offender| (offender.pid, offender.bus_locks))
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
pid=4242 comm=split\\x20lock bus_locks=90000 guest=0 first_ms=1000 last_ms=64000
pid=77 comm=qemu-system-x86 bus_locks=1200 guest=1 first_ms=5000 last_ms=65000
";

    fn offenders() -> Vec<Offender> {
        TWO_OFFENDERS
            .lines()
            .map(|line| Offender::parse(line).unwrap())
            .collect()
    }

    #[test]
    fn table_shows_escaped_names_rates_and_ages() {
        let table = render(&offenders(), &[Some(1500.0), None], 65_000);
        let expected = [
            " PID  COMM             BUS_LOCKS  RATE/S  GUEST  FIRST SEEN  LAST SEEN",
            "4242  split\\x20lock        90000  1500.0  no      1m04s ago     1s ago",
            "  77  qemu-system-x86       1200       -  yes     1m00s ago     0s ago",
        ];
        assert_eq!(table, expected.join("\n") + "\n");
    }

    #[test]
    fn rates_come_from_the_previous_refresh_of_the_same_pid() {
        let now = Instant::now();
        let previous = Refresh {
            at: now - Duration::from_secs(2),
            bus_locks: HashMap::from([(4242, 80_000), (77, 5000)]),
        };
        let current = offenders();
        assert_eq!(offender_rates(None, &current, now), [None, None]);
        // 77 went from 5000 down to 1200: the module was reloaded, no rate.
        assert_eq!(
            offender_rates(Some(&previous), &current, now),
            [Some(5000.0), None]
        );
    }

    #[test]
    fn a_full_table_warns_about_over_estimates() {
        let mut full = offenders();
        full.resize(TOP_CAPACITY, full[1]);
        let text = render(&full, &[None; TOP_CAPACITY], 65_000);
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
        run(&sysfs, Duration::from_secs(1), true, false, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "no bus locks recorded since the module was loaded\n"
        );
        fake.remove("sys/kernel/amd_sld/top");
        let err = run(&sysfs, Duration::from_secs(1), true, false, &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        fake.remove("sys/module/amd_sld");
        let err = run(&sysfs, Duration::from_secs(1), true, false, &mut Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), 3);
    }
}
