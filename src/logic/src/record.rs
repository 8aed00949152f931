//! The line formats of `/sys/kernel/amd_sld/events` and `/sys/kernel/amd_sld/top`.
//!
//! The kernel module formats with [`Event`]'s and [`Offender`]'s `Display`; the `amd-sld`
//! CLI parses with [`Event::parse`] and [`Offender::parse`]. Both sides use this one file, so
//! the format cannot drift. A line is space-separated `key=value` tokens in a fixed order;
//! `comm` is escaped so that it never holds a space, a backslash or a non-printable byte.
//! Parsers ignore keys they do not know, so that a later module may append keys.

use core::fmt;

/// `TASK_COMM_LEN`: the longest task name, terminating NUL included.
pub const COMM_LEN: usize = 16;

/// Where a bus lock was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The Bus Lock Detect #DB trap (Zen 5 and later).
    Bld,
    /// The `ls_locks.bus_lock` PMU event (Zen 2 and later, guests included).
    Pmu,
}

impl Source {
    /// The word used in records, parameters and `/sys/kernel/amd_sld/source`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Bld => "bld",
            Source::Pmu => "pmu",
        }
    }

    fn from_word(word: &str) -> Option<Source> {
        match word {
            "bld" => Some(Source::Bld),
            "pmu" => Some(Source::Pmu),
            _ => None,
        }
    }
}

/// What amd_sld did about a record's bus locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Counted only (policy `off` while a counter still ran, or a kernel-mode bus lock).
    None,
    /// Logged (policy `warn`, or `ratelimit:N` within budget).
    Warn,
    /// SIGBUS sent (policy `fatal`).
    Kill,
    /// The task was made to sleep (policy `ratelimit:N`, over budget).
    Throttle,
}

impl Action {
    /// The word used in records.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Warn => "warn",
            Action::Kill => "kill",
            Action::Throttle => "throttle",
        }
    }

    fn from_word(word: &str) -> Option<Action> {
        match word {
            "none" => Some(Action::None),
            "warn" => Some(Action::Warn),
            "kill" => Some(Action::Kill),
            "throttle" => Some(Action::Throttle),
            _ => None,
        }
    }
}

/// A task name as the kernel keeps it: up to 15 bytes, NUL-padded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Comm(pub [u8; COMM_LEN]);

impl Comm {
    /// The name from a byte string, cut at the first NUL and at 15 bytes.
    pub fn new(name: &[u8]) -> Comm {
        let mut comm = [0u8; COMM_LEN];
        for (slot, &byte) in comm
            .iter_mut()
            .zip(name.iter().take_while(|&&b| b != 0))
            .take(COMM_LEN - 1)
        {
            *slot = byte;
        }
        Comm(comm)
    }

    /// The name as the kernel keeps it (`task_struct::comm`, as read), cut at its first NUL
    /// and at 15 bytes: the same as [`Comm::new`] of those 16 bytes, in a few word
    /// operations rather than a loop over the bytes (the #DB notifier reads one per trap).
    pub fn from_raw(raw: [u8; COMM_LEN]) -> Comm {
        const ONES: u128 = u128::MAX / 255;
        const HIGHS: u128 = ONES << 7;
        let value = u128::from_le_bytes(raw);
        // Bit 7 of each zero byte, and maybe of bytes above the first zero byte (borrows):
        // the lowest one set is exactly the first zero byte's.
        let zeros = value.wrapping_sub(ONES) & !value & HIGHS;
        let kept = if zeros == 0 {
            u128::MAX >> 8
        } else {
            (1u128 << (zeros.trailing_zeros() - 7)) - 1
        };
        Comm((value & kept).to_le_bytes())
    }

    /// The name's bytes, without padding.
    pub fn as_bytes(&self) -> &[u8] {
        crate::escape::until_nul(&self.0)
    }

    fn parse(text: &str) -> Option<Comm> {
        let mut out = [0u8; COMM_LEN];
        unescape_into(text, &mut out).then_some(Comm(out))
    }
}

/// Parses text escaped by [`write_escaped`] into `out`, NUL-padded: false if it is malformed,
/// holds a NUL, or has more than `out.len() - 1` bytes.
fn unescape_into(text: &str, out: &mut [u8]) -> bool {
    let mut len = 0;
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        let value = if byte == b'\\' {
            let (Some(b'x'), Some(high), Some(low)) = (bytes.next(), bytes.next(), bytes.next())
            else {
                return false;
            };
            let (Some(high), Some(low)) = (hex_digit(high), hex_digit(low)) else {
                return false;
            };
            high << 4 | low
        } else {
            byte
        };
        if value == 0 || len + 1 >= out.len() {
            return false;
        }
        out[len] = value;
        len += 1;
    }
    true
}

/// Printable ASCII but space and backslash as is, everything else as `\xNN`: a token that
/// never holds a space, a backslash or a non-printable byte.
fn write_escaped(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &byte in bytes {
        if byte.is_ascii_graphic() && byte != b'\\' {
            write!(f, "{}", char::from(byte))?;
        } else {
            write!(f, "\\x{byte:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Comm {
    /// Printable ASCII but space and backslash as is, everything else as `\xNN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.as_bytes())
    }
}

/// The longest file name kept for a mapping, terminating NUL included.
pub const MAP_NAME_LEN: usize = 32;

/// Where a user IP was: the file mapped there (its base name, up to `MAP_NAME_LEN - 1`
/// bytes, longer names cut) and the IP's offset into that file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The file's base name, NUL-padded; never empty.
    pub name: [u8; MAP_NAME_LEN],
    /// `ip - vm_start + vm_pgoff * PAGE_SIZE`: the IP's offset into the file.
    pub offset: u64,
}

impl Mapping {
    /// The mapping of `name` (cut at its first NUL and at `MAP_NAME_LEN - 1` bytes) at
    /// `offset`, or `None` for an empty name.
    pub fn new(name: &[u8], offset: u64) -> Option<Mapping> {
        let mut out = [0u8; MAP_NAME_LEN];
        for (slot, &byte) in out
            .iter_mut()
            .zip(name.iter().take_while(|&&b| b != 0))
            .take(MAP_NAME_LEN - 1)
        {
            *slot = byte;
        }
        (out[0] != 0).then_some(Mapping { name: out, offset })
    }

    /// The name's bytes, without padding.
    pub fn name_bytes(&self) -> &[u8] {
        crate::escape::until_nul(&self.name)
    }

    /// Whether the name may have been cut (it has the longest length kept).
    pub fn name_may_be_cut(&self) -> bool {
        self.name_bytes().len() == MAP_NAME_LEN - 1
    }

    fn parse(text: &str) -> Result<Option<Mapping>, BadRecord> {
        if text == "-" {
            return Ok(None);
        }
        let (name, offset) = text.rsplit_once('+').ok_or(BadRecord)?;
        let mut out = [0u8; MAP_NAME_LEN];
        if name.is_empty() || !unescape_into(name, &mut out) {
            return Err(BadRecord);
        }
        Ok(Some(Mapping {
            name: out,
            offset: hex(offset)?,
        }))
    }
}

/// `<name>+0x<offset>`, the name escaped as `comm`, or `-` for none.
struct MapToken<'a>(&'a Option<Mapping>);

impl fmt::Display for MapToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("-"),
            Some(mapping) => {
                write_escaped(f, mapping.name_bytes())?;
                write!(f, "+{:#x}", mapping.offset)
            }
        }
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|d| d as u8)
}

/// One line of `/sys/kernel/amd_sld/events`: bus locks attributed to one task at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the record since load, from 0; a gap between two lines read means the
    /// records in between were overwritten before they were read.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` time of the bus lock, in milliseconds.
    pub ms: u64,
    /// The CPU that saw it.
    pub cpu: u32,
    /// Thread-group ID (the process) of the task.
    pub pid: i32,
    /// Thread ID of the task.
    pub tid: i32,
    /// The task's name.
    pub comm: Comm,
    /// The detector that saw it.
    pub source: Source,
    /// The task was running a KVM guest (its vCPU thread was in guest mode).
    pub guest: bool,
    /// Instruction pointer: the user IP after the locked instruction (trap), the sampled
    /// IP (PMU; the guest RIP where perf provides it), or 0 where none is known.
    pub ip: u64,
    /// Bus locks this record stands for: 1 for a trap, the sample period for the PMU.
    pub count: u64,
    /// What amd_sld did.
    pub action: Action,
    /// The file mapped at `ip` and the offset into it, once the task's own deferred work
    /// has looked it up (`None` until then, and for good where there is none to find).
    pub map: Option<Mapping>,
    /// The task's cgroup v2: the ID of its cgroup on the default hierarchy (the kernfs node
    /// ID, which is the inode number of the cgroup's directory in a cgroup2 mount; 1 is the
    /// root), or 0 where none is known (a kernel without `CONFIG_CGROUPS`, an older module).
    pub cgroup: u64,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seq={} ms={} cpu={} pid={} tid={} comm={} source={} guest={} ip={:#x} count={} action={} cgroup={} map={}",
            self.seq,
            self.ms,
            self.cpu,
            self.pid,
            self.tid,
            self.comm,
            self.source.as_str(),
            u8::from(self.guest),
            self.ip,
            self.count,
            self.action.as_str(),
            self.cgroup,
            MapToken(&self.map)
        )
    }
}

/// Why a record line was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadRecord;

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed amd_sld record")
    }
}

/// Splits a record line into `key=value` pairs.
fn fields(line: &str) -> impl Iterator<Item = Result<(&str, &str), BadRecord>> {
    line.trim_end_matches('\n')
        .split(' ')
        .map(|token| token.split_once('=').ok_or(BadRecord))
}

fn number<T: core::str::FromStr>(text: &str) -> Result<T, BadRecord> {
    text.parse().map_err(|_| BadRecord)
}

fn flag(text: &str) -> Result<bool, BadRecord> {
    match text {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(BadRecord),
    }
}

fn hex(text: &str) -> Result<u64, BadRecord> {
    let digits = text.strip_prefix("0x").ok_or(BadRecord)?;
    u64::from_str_radix(digits, 16).map_err(|_| BadRecord)
}

/// Takes a required field out of an `Option`.
fn required<T>(value: Option<T>) -> Result<T, BadRecord> {
    value.ok_or(BadRecord)
}

impl Event {
    /// Parses one line of the `events` file; unknown keys are ignored, missing ones are not.
    pub fn parse(line: &str) -> Result<Event, BadRecord> {
        let (mut seq, mut ms, mut cpu, mut pid, mut tid, mut comm) =
            (None, None, None, None, None, None);
        let (mut source, mut guest, mut ip, mut count, mut action) = (None, None, None, None, None);
        // Absent before the module had it: no mapping known.
        let mut map = None;
        let mut cgroup = 0;
        for field in fields(line) {
            let (key, value) = field?;
            match key {
                "seq" => seq = Some(number(value)?),
                "ms" => ms = Some(number(value)?),
                "cpu" => cpu = Some(number(value)?),
                "pid" => pid = Some(number(value)?),
                "tid" => tid = Some(number(value)?),
                "comm" => comm = Some(Comm::parse(value).ok_or(BadRecord)?),
                "source" => source = Some(Source::from_word(value).ok_or(BadRecord)?),
                "guest" => guest = Some(flag(value)?),
                "ip" => ip = Some(hex(value)?),
                "count" => count = Some(number(value)?),
                "action" => action = Some(Action::from_word(value).ok_or(BadRecord)?),
                "map" => map = Mapping::parse(value)?,
                "cgroup" => cgroup = number(value)?,
                _ => {}
            }
        }
        Ok(Event {
            seq: required(seq)?,
            ms: required(ms)?,
            cpu: required(cpu)?,
            pid: required(pid)?,
            tid: required(tid)?,
            comm: required(comm)?,
            source: required(source)?,
            guest: required(guest)?,
            ip: required(ip)?,
            count: required(count)?,
            action: required(action)?,
            map,
            cgroup,
        })
    }
}

/// One line of `/sys/kernel/amd_sld/top`: a process's bus locks since it was first seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offender {
    /// Thread-group ID.
    pub pid: i32,
    /// The name of the task last seen.
    pub comm: Comm,
    /// Bus locks attributed to it.
    pub bus_locks: u64,
    /// Some of them were taken in guest mode (a VM's vCPU thread).
    pub guest: bool,
    /// `CLOCK_MONOTONIC` ms of the first bus lock recorded for it.
    pub first_ms: u64,
    /// `CLOCK_MONOTONIC` ms of the last.
    pub last_ms: u64,
    /// The cgroup v2 ID of its last bus lock (as [`Event::cgroup`]; 0: unknown).
    pub cgroup: u64,
}

impl fmt::Display for Offender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid={} comm={} bus_locks={} guest={} first_ms={} last_ms={} cgroup={}",
            self.pid,
            self.comm,
            self.bus_locks,
            u8::from(self.guest),
            self.first_ms,
            self.last_ms,
            self.cgroup
        )
    }
}

impl Offender {
    /// Parses one line of the `top` file; unknown keys are ignored, missing ones are not.
    pub fn parse(line: &str) -> Result<Offender, BadRecord> {
        let (mut pid, mut comm, mut bus_locks) = (None, None, None);
        let (mut guest, mut first_ms, mut last_ms) = (None, None, None);
        let mut cgroup = 0;
        for field in fields(line) {
            let (key, value) = field?;
            match key {
                "pid" => pid = Some(number(value)?),
                "comm" => comm = Some(Comm::parse(value).ok_or(BadRecord)?),
                "bus_locks" => bus_locks = Some(number(value)?),
                "guest" => guest = Some(flag(value)?),
                "first_ms" => first_ms = Some(number(value)?),
                "last_ms" => last_ms = Some(number(value)?),
                "cgroup" => cgroup = number(value)?,
                _ => {}
            }
        }
        Ok(Offender {
            pid: required(pid)?,
            comm: required(comm)?,
            bus_locks: required(bus_locks)?,
            guest: required(guest)?,
            first_ms: required(first_ms)?,
            last_ms: required(last_ms)?,
            cgroup,
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::format;

    fn event() -> Event {
        Event {
            seq: 7,
            ms: 123_456,
            cpu: 2,
            pid: 345,
            tid: 346,
            comm: Comm::new(b"python3"),
            source: Source::Bld,
            guest: false,
            ip: 0x40_1234,
            count: 1,
            action: Action::Warn,
            map: None,
            cgroup: 4242,
        }
    }

    #[test]
    fn event_line_is_stable() {
        assert_eq!(
            format!("{}", event()),
            "seq=7 ms=123456 cpu=2 pid=345 tid=346 comm=python3 source=bld guest=0 ip=0x401234 count=1 action=warn cgroup=4242 map=-"
        );
        let mapped = Event {
            map: Mapping::new(b"libc.so.6", 0x8a2c1),
            ..event()
        };
        let line = format!("{mapped}");
        assert!(
            line.ends_with(" action=warn cgroup=4242 map=libc.so.6+0x8a2c1"),
            "{line}"
        );
        assert_eq!(Event::parse(&line), Ok(mapped));
    }

    #[test]
    fn map_names_are_escaped_cut_and_may_hold_a_plus() {
        let odd = Mapping::new(b"libstdc++ x\\\n.so", 16).unwrap();
        let event = Event {
            map: Some(odd),
            ..event()
        };
        let line = format!("{event}");
        assert!(
            line.ends_with(" map=libstdc++\\x20x\\x5c\\x0a.so+0x10"),
            "{line}"
        );
        assert_eq!(Event::parse(&line), Ok(event));
        let long = Mapping::new(&[b'a'; 40], 0).unwrap();
        assert_eq!(long.name_bytes().len(), MAP_NAME_LEN - 1);
        assert!(long.name_may_be_cut());
        assert_eq!(Mapping::new(b"", 1), None);
        assert_eq!(Mapping::new(b"\0x", 1), None);
        // A record of an older module has no map key; "-" is none; junk is refused.
        let old = format!("{}", event).replace(" map=libstdc++\\x20x\\x5c\\x0a.so+0x10", "");
        assert_eq!(Event::parse(&old).map(|e| e.map), Ok(None));
        for bad in ["map=", "map=+0x1", "map=a+1", "map=a", "map=a\\x00+0x1"] {
            let line = format!("{}", event)
                .replace(" map=libstdc++\\x20x\\x5c\\x0a.so+0x10", &format!(" {bad}"));
            assert_eq!(Event::parse(&line), Err(BadRecord), "{bad}");
        }
    }

    #[test]
    fn offender_line_is_stable() {
        let offender = Offender {
            pid: 9,
            comm: Comm::new(b"qemu-system-x86"),
            bus_locks: 100_000,
            guest: true,
            first_ms: 5,
            last_ms: 10,
            cgroup: 77,
        };
        let line = format!("{offender}");
        assert_eq!(
            line,
            "pid=9 comm=qemu-system-x86 bus_locks=100000 guest=1 first_ms=5 last_ms=10 cgroup=77"
        );
        assert_eq!(Offender::parse(&line), Ok(offender));
    }

    #[test]
    fn lines_of_a_module_without_cgroups_parse_as_cgroup_0() {
        let old = "seq=7 ms=123456 cpu=2 pid=345 tid=346 comm=python3 source=bld guest=0 ip=0x401234 count=1 action=warn";
        assert_eq!(
            Event::parse(old),
            Ok(Event {
                cgroup: 0,
                ..event()
            })
        );
        let old = "pid=9 comm=x bus_locks=1 guest=0 first_ms=5 last_ms=10";
        assert_eq!(Offender::parse(old).map(|o| o.cgroup), Ok(0));
        let bad = format!("{}", event()).replace("cgroup=4242", "cgroup=x");
        assert_eq!(Event::parse(&bad), Err(BadRecord));
    }

    #[test]
    fn comm_escapes_what_would_break_the_line() {
        assert_eq!(
            format!("{}", Comm::new(b"a b\\c\n\xff")),
            "a\\x20b\\x5cc\\x0a\\xff"
        );
        assert_eq!(
            Comm::new(b"0123456789abcdefgh").as_bytes(),
            b"0123456789abcde"
        );
        assert_eq!(Comm::new(b"ab\0cd").as_bytes(), b"ab");
    }

    #[test]
    fn parsers_ignore_unknown_keys_and_reject_missing_or_bad_ones() {
        let line = format!("{} future=1\n", event());
        assert_eq!(Event::parse(&line), Ok(event()));
        assert_eq!(Event::parse("seq=1 ms=2"), Err(BadRecord));
        let bad = format!("{}", event()).replace("guest=0", "guest=2");
        assert_eq!(Event::parse(&bad), Err(BadRecord));
        let bad = format!("{}", event()).replace("ip=0x", "ip=");
        assert_eq!(Event::parse(&bad), Err(BadRecord));
        assert_eq!(Event::parse(""), Err(BadRecord));
        assert_eq!(
            Offender::parse("pid=1 comm=\\x00 bus_locks=1 guest=0 first_ms=1 last_ms=1"),
            Err(BadRecord)
        );
    }

    fn any_event() -> impl Strategy<Value = Event> {
        (
            (
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                any::<i32>(),
                any::<i32>(),
            ),
            proptest::collection::vec(1u8..=255, 0..20),
            (
                any::<bool>(),
                any::<bool>(),
                any::<u64>(),
                any::<u64>(),
                0u8..4,
                any::<u64>(),
            ),
            (proptest::collection::vec(1u8..=255, 0..40), any::<u64>()),
        )
            .prop_map(
                |(
                    (seq, ms, cpu, pid, tid),
                    name,
                    (pmu, guest, ip, count, action, cgroup),
                    (file, offset),
                )| Event {
                    seq,
                    ms,
                    cpu,
                    pid,
                    tid,
                    comm: Comm::new(&name),
                    source: if pmu { Source::Pmu } else { Source::Bld },
                    guest,
                    ip,
                    count,
                    action: [Action::None, Action::Warn, Action::Kill, Action::Throttle]
                        [usize::from(action)],
                    map: Mapping::new(&file, offset),
                    cgroup,
                },
            )
    }

    proptest! {
        #[test]
        fn comm_from_raw_is_comm_new(raw in proptest::array::uniform16(proptest::prop_oneof![Just(0u8), any::<u8>()])) {
            prop_assert_eq!(Comm::from_raw(raw), Comm::new(&raw));
        }

        #[test]
        fn events_round_trip(event in any_event()) {
            let line = format!("{event}");
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(line.split(' ').count(), 13);
            prop_assert_eq!(Event::parse(&line), Ok(event));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = Event::parse(&text);
            let _ = Offender::parse(&text);
        }
    }
}
