//! The kernel's cpulist format (`0-3,8,10-11`), as in /sys/devices/system/cpu/online.

use core::fmt;

/// Writes ascending CPU numbers as a cpulist: runs collapse into ranges, an empty set is "".
///
/// Numbers that are not strictly ascending start a new range rather than being reordered.
pub fn write<W: fmt::Write>(out: &mut W, cpus: impl IntoIterator<Item = u32>) -> fmt::Result {
    let mut run: Option<(u32, u32)> = None;
    let mut first = true;
    let mut flush = |out: &mut W, (start, end): (u32, u32)| -> fmt::Result {
        if !first {
            out.write_char(',')?;
        }
        first = false;
        if start == end {
            write!(out, "{start}")
        } else {
            write!(out, "{start}-{end}")
        }
    };
    for cpu in cpus {
        run = match run {
            Some((start, end)) if end.checked_add(1) == Some(cpu) => Some((start, cpu)),
            Some(done) => {
                flush(out, done)?;
                Some((cpu, cpu))
            }
            None => Some((cpu, cpu)),
        };
    }
    match run {
        Some(done) => flush(out, done),
        None => Ok(()),
    }
}

/// A cpulist that is not one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// Calls `visit` for every CPU of a cpulist, in the order written; a trailing newline is
/// allowed. Returns `Err(Malformed)` on malformed input, after visiting the CPUs before the
/// error.
pub fn parse(text: &str, mut visit: impl FnMut(u32)) -> Result<(), Malformed> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Ok(());
    }
    for part in text.split(',') {
        let (start, end) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let cpu = number(part)?;
                (cpu, cpu)
            }
        };
        if start > end {
            return Err(Malformed);
        }
        (start..=end).for_each(&mut visit);
    }
    Ok(())
}

fn number(text: &str) -> Result<u32, Malformed> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed);
    }
    text.parse().map_err(|_| Malformed)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::{string::String, vec::Vec};

    fn list(cpus: &[u32]) -> String {
        let mut out = String::new();
        write(&mut out, cpus.iter().copied()).unwrap();
        out
    }

    #[test]
    fn formats_like_the_kernel() {
        assert_eq!(list(&[]), "");
        assert_eq!(list(&[0]), "0");
        assert_eq!(list(&[0, 1, 2, 3]), "0-3");
        assert_eq!(list(&[0, 2, 3, 5, 7, 8, 9]), "0,2-3,5,7-9");
        assert_eq!(list(&[u32::MAX - 1, u32::MAX]), "4294967294-4294967295");
    }

    #[test]
    fn parses_and_rejects() {
        let mut seen = Vec::new();
        assert_eq!(parse("0-2,5\n", |c| seen.push(c)), Ok(()));
        assert_eq!(seen, [0, 1, 2, 5]);
        for bad in ["3-1", "a", "1,", ",1", "1--2", "-1", " 1"] {
            assert_eq!(parse(bad, |_| {}), Err(Malformed), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trips(set in proptest::collection::btree_set(0u32..200, 0..50)) {
            let cpus: Vec<u32> = set.into_iter().collect();
            let text = list(&cpus);
            let mut back = Vec::new();
            prop_assert_eq!(parse(&text, |c| back.push(c)), Ok(()));
            prop_assert_eq!(back, cpus);
        }
    }
}
