//! The `split_lock_detect` policy: parsing, canonical form and a one-word encoding.
//!
//! Mirrors `sld_options[]` and `match_option()` in arch/x86/kernel/cpu/intel.c (Linux 6.12):
//! the same four options, the same 1..=1000 range for `ratelimit:N`, case-sensitive, and
//! `warn` as the default. Deliberately stricter in one place: the kernel reads the rate with
//! `sscanf("ratelimit:%d")`, which accepts `ratelimit:5x`, `ratelimit: 5` and `ratelimit:+5`;
//! a knob that root may write at run time accepts only ASCII digits, so that a typo is an
//! error rather than a silently different policy.

use core::fmt;

/// Smallest accepted `ratelimit:N`, bus locks per second.
pub const RATELIMIT_MIN: u32 = 1;
/// Largest accepted `ratelimit:N`, bus locks per second.
pub const RATELIMIT_MAX: u32 = 1000;
/// Longest accepted value, trailing newline excluded: the kernel copies the boot option
/// into `char arg[20]`.
pub const MAX_INPUT_LEN: usize = 19;

const RATELIMIT_PREFIX: &[u8] = b"ratelimit:";
const BOOT_OPTION: &[u8] = b"split_lock_detect=";

/// A system-wide bus-lock rate, in bus locks per second.
///
/// # Invariants
///
/// `RATELIMIT_MIN <= self.0 <= RATELIMIT_MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(u16);

impl Rate {
    /// Returns the rate `per_second`, or `None` outside `RATELIMIT_MIN..=RATELIMIT_MAX`.
    pub const fn new(per_second: u32) -> Option<Rate> {
        if per_second >= RATELIMIT_MIN && per_second <= RATELIMIT_MAX {
            // The invariant holds: checked just above, and 1000 fits in a u16.
            Some(Rate(per_second as u16))
        } else {
            None
        }
    }

    /// Bus locks allowed per second.
    pub const fn per_second(self) -> u32 {
        self.0 as u32
    }
}

/// What amd_sld does when a task takes a bus lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Detection disarmed.
    Off,
    /// Log the kernel's `#DB: <comm>/<pid> took a bus_lock trap` line, rate limited.
    #[default]
    Warn,
    /// Send the offending task a SIGBUS it cannot block or ignore.
    Fatal,
    /// Let at most N bus locks per second through, system wide; offenders sleep; plus `Warn`.
    Ratelimit(Rate),
}

/// Why a policy string was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but (at most) a newline.
    Empty,
    /// Longer than [`MAX_INPUT_LEN`] bytes.
    TooLong,
    /// Not one of `off`, `warn`, `fatal`, `ratelimit:N`.
    Unknown,
    /// `ratelimit:` with no number after it.
    MissingRate,
    /// `ratelimit:` followed by something other than decimal digits.
    RateNotANumber,
    /// `ratelimit:N` with N outside `RATELIMIT_MIN..=RATELIMIT_MAX`.
    RateOutOfRange,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty value"),
            ParseError::TooLong => write!(f, "longer than {MAX_INPUT_LEN} bytes"),
            ParseError::Unknown => {
                f.write_str("expected off, warn, fatal or ratelimit:N (lower case)")
            }
            ParseError::MissingRate => f.write_str("ratelimit: needs a rate, e.g. ratelimit:10"),
            ParseError::RateNotANumber => f.write_str("the rate must be decimal digits only"),
            ParseError::RateOutOfRange => {
                write!(
                    f,
                    "the rate must be {RATELIMIT_MIN} to {RATELIMIT_MAX} bus locks/s"
                )
            }
        }
    }
}

impl Policy {
    /// Parses a policy as written to the module parameter.
    ///
    /// One trailing newline is ignored, as `echo` writes it. Everything else must match a
    /// canonical option exactly; leading zeros in the rate are accepted, as the kernel does.
    pub fn parse(input: &[u8]) -> Result<Policy, ParseError> {
        let value = input.strip_suffix(b"\n").unwrap_or(input);
        if value.is_empty() {
            return Err(ParseError::Empty);
        }
        if value.len() > MAX_INPUT_LEN {
            return Err(ParseError::TooLong);
        }
        match value {
            b"off" => return Ok(Policy::Off),
            b"warn" => return Ok(Policy::Warn),
            b"fatal" => return Ok(Policy::Fatal),
            _ => {}
        }
        let digits = value
            .strip_prefix(RATELIMIT_PREFIX)
            .ok_or(ParseError::Unknown)?;
        if digits.is_empty() {
            return Err(ParseError::MissingRate);
        }
        // At most MAX_INPUT_LEN - 10 = 9 digits, so the value cannot overflow a u32.
        let mut rate: u32 = 0;
        for &byte in digits {
            if !byte.is_ascii_digit() {
                return Err(ParseError::RateNotANumber);
            }
            rate = rate * 10 + u32::from(byte - b'0');
        }
        Rate::new(rate)
            .map(Policy::Ratelimit)
            .ok_or(ParseError::RateOutOfRange)
    }

    /// The value of the kernel's own `split_lock_detect=` boot option in `cmdline` (the
    /// contents of /proc/cmdline), found as `sld_state_setup()` finds it with
    /// `cmdline_find_option()` (arch/x86/lib/cmdline.c): words are separated by bytes up
    /// to the space (`myisspace()`), the line ends at a NUL, a word must start with
    /// `split_lock_detect=`, and the last such word wins. `None` if there is none.
    pub fn boot_option(cmdline: &[u8]) -> Option<&[u8]> {
        let line = cmdline.split(|&byte| byte == 0).next().unwrap_or(&[]);
        line.split(|&byte| byte <= b' ')
            .filter_map(|word| word.strip_prefix(BOOT_OPTION))
            .next_back()
    }

    /// Whether bus-lock detection must be armed in the hardware for this policy.
    pub const fn arms_detection(self) -> bool {
        !matches!(self, Policy::Off)
    }

    /// Packs the policy into one word, so that the trap path can read it atomically.
    pub const fn to_bits(self) -> u32 {
        match self {
            Policy::Off => 0,
            Policy::Warn => 1,
            Policy::Fatal => 2,
            Policy::Ratelimit(rate) => 3 | (rate.per_second() << 2),
        }
    }

    /// Unpacks [`Policy::to_bits`]; `None` for a word it never produces.
    #[inline(always)]
    pub const fn from_bits(bits: u32) -> Option<Policy> {
        match bits & 3 {
            0 if bits == 0 => Some(Policy::Off),
            1 if bits == 1 => Some(Policy::Warn),
            2 if bits == 2 => Some(Policy::Fatal),
            3 => match Rate::new(bits >> 2) {
                Some(rate) => Some(Policy::Ratelimit(rate)),
                None => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for Policy {
    /// Writes the canonical form, which [`Policy::parse`] maps back to the same policy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Off => f.write_str("off"),
            Policy::Warn => f.write_str("warn"),
            Policy::Fatal => f.write_str("fatal"),
            Policy::Ratelimit(rate) => write!(f, "ratelimit:{}", rate.per_second()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn boot_option_is_the_last_split_lock_detect_word() {
        let find = Policy::boot_option;
        assert_eq!(find(b"console=ttyS0 quiet\n"), None);
        assert_eq!(find(b""), None);
        assert_eq!(find(b"split_lock_detect=fatal\n"), Some(&b"fatal"[..]));
        assert_eq!(
            find(b"ro split_lock_detect=off root=/dev/sda split_lock_detect=ratelimit:5\n"),
            Some(&b"ratelimit:5"[..])
        );
        // A word that only contains the option, or spells it otherwise, is not it.
        assert_eq!(
            find(b"xsplit_lock_detect=off split_lock_detect fatal"),
            None
        );
        assert_eq!(find(b"split_lock_detect= quiet"), Some(&b""[..]));
        // Tabs separate words; a NUL ends the line.
        assert_eq!(
            find(b"a\tsplit_lock_detect=warn\0split_lock_detect=off"),
            Some(&b"warn"[..])
        );
        // The value is parsed as the module parameter is; the kernel ignores what it does not
        // know (and keeps warn), amd_sld says so and keeps warn too.
        assert_eq!(
            Policy::parse(find(b"split_lock_detect=fatal").unwrap()),
            Ok(Policy::Fatal)
        );
        assert!(Policy::parse(find(b"split_lock_detect=bogus").unwrap()).is_err());
    }

    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::{format, string::String, vec::Vec};

    fn rate(n: u32) -> Policy {
        Policy::Ratelimit(Rate::new(n).unwrap())
    }

    #[test]
    fn accepts_the_kernels_options_with_or_without_newline() {
        for (text, want) in [
            ("off", Policy::Off),
            ("warn", Policy::Warn),
            ("fatal", Policy::Fatal),
            ("ratelimit:1", rate(1)),
            ("ratelimit:10", rate(10)),
            ("ratelimit:1000", rate(1000)),
            ("ratelimit:0010", rate(10)),
        ] {
            assert_eq!(Policy::parse(text.as_bytes()), Ok(want), "{text}");
            let echoed = format!("{text}\n");
            assert_eq!(Policy::parse(echoed.as_bytes()), Ok(want), "{echoed:?}");
        }
    }

    #[test]
    fn rejects_what_the_issue_lists_and_more() {
        use ParseError::*;
        for (text, want) in [
            ("", Empty),
            ("\n", Empty),
            ("ratelimit:0", RateOutOfRange),
            ("ratelimit:1001", RateOutOfRange),
            ("ratelimit:999999999", RateOutOfRange),
            ("ratelimit:", MissingRate),
            ("ratelimit:5x", RateNotANumber),
            ("ratelimit: 5", RateNotANumber),
            ("ratelimit:+5", RateNotANumber),
            ("ratelimit:-5", RateNotANumber),
            ("ratelimit:5\n\n", RateNotANumber),
            ("WARN", Unknown),
            ("Off", Unknown),
            ("warn ", Unknown),
            (" warn", Unknown),
            ("warnx", Unknown),
            ("ratelimit", Unknown),
            ("off\n\n", Unknown),
            ("\nwarn", Unknown),
            ("ratelimit:00000000010", TooLong),
            ("fatalfatalfatalfatal", TooLong),
        ] {
            assert_eq!(Policy::parse(text.as_bytes()), Err(want), "{text:?}");
        }
        assert_eq!(Policy::parse(b"war\0n"), Err(Unknown));
        assert_eq!(Policy::parse(&[0xff, 0xfe]), Err(Unknown));
    }

    #[test]
    fn default_is_warn_like_the_kernel() {
        assert_eq!(Policy::default(), Policy::Warn);
    }

    fn any_policy() -> impl Strategy<Value = Policy> {
        prop_oneof![
            Just(Policy::Off),
            Just(Policy::Warn),
            Just(Policy::Fatal),
            (RATELIMIT_MIN..=RATELIMIT_MAX).prop_map(rate),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn parse_never_panics_and_accepts_only_canonical_shapes(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(policy) = Policy::parse(&input) {
                // Whatever was accepted is the canonical form, maybe with leading zeros in
                // the rate and one trailing newline.
                let canonical = format!("{policy}");
                let trimmed = input.strip_suffix(b"\n").unwrap_or(&input);
                let text = String::from_utf8(trimmed.to_vec()).unwrap();
                let normalised = match text.strip_prefix("ratelimit:") {
                    Some(digits) => format!("ratelimit:{}", digits.trim_start_matches('0')),
                    None => text.clone(),
                };
                prop_assert_eq!(normalised, canonical);
            }
        }

        #[test]
        fn near_misses_of_valid_input_never_panic(
            policy in any_policy(),
            edit in 0usize..20,
            byte in any::<u8>(),
        ) {
            let mut text: Vec<u8> = format!("{policy}").into_bytes();
            let at = edit % (text.len() + 1);
            text.insert(at, byte);
            let _ = Policy::parse(&text);
            text.remove(at);
            if !text.is_empty() {
                let len = text.len();
                text[at % len] = byte;
            }
            let _ = Policy::parse(&text);
        }

        #[test]
        fn canonical_form_round_trips(policy in any_policy()) {
            let text = format!("{policy}");
            prop_assert_eq!(Policy::parse(text.as_bytes()), Ok(policy));
            let echoed = format!("{text}\n");
            prop_assert_eq!(Policy::parse(echoed.as_bytes()), Ok(policy));
        }

        #[test]
        fn bits_round_trip(policy in any_policy()) {
            prop_assert_eq!(Policy::from_bits(policy.to_bits()), Some(policy));
        }

        #[test]
        fn from_bits_never_invents_a_policy(bits in any::<u32>()) {
            if let Some(policy) = Policy::from_bits(bits) {
                prop_assert_eq!(policy.to_bits(), bits);
            }
        }
    }
}
