//! Reading the root-only record files `events` and `top`, parsed with the module's own
//! format code (amd_sld_logic::record).

use amd_sld_logic::escape::Escaped;
use amd_sld_logic::record::{Event, Offender};

use crate::failure::Failure;
use crate::sysfs::Sysfs;

/// The file of the most recent bus-lock records.
pub(crate) const EVENTS_FILE: &str = "events";
/// The file of the heaviest offenders.
pub(crate) const TOP_FILE: &str = "top";

/// An event and the kernel's line it was parsed from, for `--raw`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventLine {
    pub(crate) event: Event,
    pub(crate) line: String,
}

/// Parses every non-empty line with `parse`; a line it rejects is an error that quotes it:
/// the module and this tool disagree on the format, which must not pass unnoticed.
fn parse_lines<T>(
    name: &str,
    text: &str,
    parse: impl Fn(&str) -> Result<T, amd_sld_logic::record::BadRecord>,
) -> Result<Vec<T>, Failure> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            parse(line).map_err(|_| {
                Failure::Runtime(format!(
                    "unexpected line in {name}: \"{}\" (is amd-sld older than the module?)",
                    Escaped(line.as_bytes())
                ))
            })
        })
        .collect()
}

/// The records of `events`, oldest first, or `None` where this module version has no such
/// file.
pub(crate) fn read_events(sysfs: &Sysfs) -> Result<Option<Vec<EventLine>>, Failure> {
    let Some(text) = sysfs.read_stat(EVENTS_FILE)? else {
        return Ok(None);
    };
    parse_lines(EVENTS_FILE, &text, |line| {
        Event::parse(line).map(|event| EventLine {
            event,
            line: line.to_owned(),
        })
    })
    .map(Some)
}

/// The offenders of `top`, most bus locks first, or `None` where this module version has
/// no such file.
pub(crate) fn read_top(sysfs: &Sysfs) -> Result<Option<Vec<Offender>>, Failure> {
    let Some(text) = sysfs.read_stat(TOP_FILE)? else {
        return Ok(None);
    };
    parse_lines(TOP_FILE, &text, Offender::parse).map(Some)
}

/// Why a record file that a command needs is missing: the module went away, or it is a
/// version without that file.
pub(crate) fn missing(sysfs: &Sysfs, name: &str) -> Failure {
    if sysfs.module_loaded() {
        Failure::Runtime(format!(
            "this amd_sld module has no {} file: it predates bus-lock records; update the module",
            sysfs.stat_path(name).display()
        ))
    } else {
        Failure::not_loaded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sysfs::FakeSysfs;

    #[test]
    fn reads_both_files_and_quotes_a_bad_line() {
        let fake = FakeSysfs::loaded();
        let sysfs = Sysfs::new(fake.root());
        assert_eq!(read_events(&sysfs), Ok(Some(Vec::new())));
        fake.write(
            "sys/kernel/amd_sld/top",
            "pid=9 comm=a\\x20b bus_locks=5 guest=0 first_ms=1 last_ms=2\n",
        );
        let top = read_top(&sysfs).unwrap().unwrap();
        assert_eq!(top[0].comm.as_bytes(), b"a b");
        fake.write("sys/kernel/amd_sld/top", "pid=9 comm=x\n");
        let err = read_top(&sysfs).unwrap_err();
        assert!(err.to_string().contains("\"pid=9 comm=x\""), "{err}");
    }

    #[test]
    fn a_missing_file_says_whether_the_module_or_the_version_is_to_blame() {
        let fake = FakeSysfs::loaded();
        let sysfs = Sysfs::new(fake.root());
        fake.remove("sys/kernel/amd_sld/events");
        assert_eq!(read_events(&sysfs), Ok(None));
        assert_eq!(missing(&sysfs, EVENTS_FILE).exit_code(), 1);
        fake.remove("sys/module/amd_sld");
        assert_eq!(missing(&sysfs, EVENTS_FILE).exit_code(), 3);
    }
}
