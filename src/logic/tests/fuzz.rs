//! `make stress`'s host fuzzing: a million inputs or more through every parser that reads
//! untrusted text, none of which may panic; the policy parser is also checked against an
//! oracle written here from the documented grammar, not from the parser.
//!
//! Ignored by `cargo test` (about half a minute in release mode); run with
//! `cargo test --release -p amd-sld-logic --test fuzz -- --ignored`. `AMD_SLD_FUZZ_CASES`
//! sets the number of cases per test (default 1,000,000).

use amd_sld_logic::capability::Requested;
use amd_sld_logic::cpulist;
use amd_sld_logic::policy::Policy;
use amd_sld_logic::record::{Event, Offender};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("AMD_SLD_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// The grammar of docs/ABI/sysfs-kernel-amd_sld, independently of `Policy::parse`: the
/// canonical text of the policy the input sets, or `None` for an input to refuse.
fn oracle(input: &[u8]) -> Option<String> {
    let value = match input.last() {
        Some(b'\n') => &input[..input.len() - 1],
        _ => input,
    };
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    if ["off", "warn", "fatal"].contains(&text) {
        return Some(text.to_owned());
    }
    let digits = text.strip_prefix("ratelimit:")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rate: u64 = digits.parse().ok()?;
    (1..=1000)
        .contains(&rate)
        .then(|| format!("ratelimit:{rate}"))
}

/// Inputs near the valid ones as well as noise: raw bytes alone would almost never reach
/// the rate's range checks.
fn policy_input() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just("off".to_owned()),
        Just("warn".to_owned()),
        Just("fatal".to_owned()),
        "ratelimit:[0-9]{0,12}",
        "ratelimit:[-+ ]?[0-9]{1,4}[ \n]?",
        "[a-zA-Z:]{1,12}",
    ];
    let mutated =
        (token.clone(), any::<usize>(), any::<u8>(), 0..4u8).prop_map(|(token, at, byte, how)| {
            let mut bytes = token.into_bytes();
            let at = at % (bytes.len() + 1);
            match how {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                2 if at < bytes.len() => bytes[at] = byte,
                _ => bytes.push(b'\n'),
            }
            bytes
        });
    prop_oneof![
        token.prop_map(String::into_bytes),
        mutated,
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 0..5000),
    ]
}

#[test]
#[ignore = "a million cases: make stress"]
fn policy_parser_agrees_with_the_documented_grammar() {
    runner()
        .run(&policy_input(), |input| {
            let parsed = Policy::parse(&input).ok().map(|policy| policy.to_string());
            prop_assert_eq!(parsed, oracle(&input), "input {:?}", input);
            Ok(())
        })
        .unwrap();
}

#[test]
#[ignore = "a million cases: make stress"]
fn source_parser_never_panics_and_accepts_only_its_three_words() {
    let input = prop_oneof![
        "(auto|bld|pmu)\n?",
        proptest::collection::vec(any::<u8>(), 0..24)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ];
    runner()
        .run(&input, |input| {
            let accepted = Requested::parse(input.as_bytes()).is_ok();
            let word = input.strip_suffix('\n').unwrap_or(&input);
            prop_assert_eq!(accepted, ["auto", "bld", "pmu"].contains(&word));
            Ok(())
        })
        .unwrap();
}

#[test]
#[ignore = "a million cases: make stress"]
fn record_and_cpulist_parsers_never_panic() {
    // What the CLI reads from sysfs: lines shaped like records, with any field damaged.
    let line = prop_oneof![
        "seq=[0-9]{1,21} ms=[0-9]{1,21} cpu=[0-9]{1,11} pid=-?[0-9]{1,11} tid=[0-9]{1,11} comm=[ -~]{0,20} source=(bld|pmu|x) guest=[0-3] ip=0x[0-9a-fA-F]{0,18} count=[0-9]{1,21} action=(none|warn|kill|throttle|x)",
        "pid=-?[0-9]{1,11} comm=[ -~]{0,20} bus_locks=[0-9]{1,21} guest=[0-2] first_ms=[0-9]{1,21} last_ms=[0-9]{1,21}",
        "[ -~]{0,120}",
        "[0-9,\\-]{0,40}",
    ];
    runner()
        .run(&line, |line| {
            let _ = Event::parse(&line);
            let _ = Offender::parse(&line);
            let mut cpus = 0u64;
            let _ = cpulist::parse(&line, |_| cpus += 1);
            Ok(())
        })
        .unwrap();
}
