//! `splitlock`: a split-lock reproducer and a memory-throughput victim, to see amd_sld act
//! and to see what bus locks cost everyone else.
//!
//! Real split locks stall every core of the physical machine, so they are refused outside
//! QEMU's TCG emulator unless `--allow-real-host` is given (see `safety`). `--victim` alone
//! takes no locks and is safe anywhere.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

#[allow(unsafe_code)]
mod arch;
mod generator;
mod safety;
mod victim;

use arch::{LockTarget, MAX_THREADS};
use generator::ThreadReport;
use safety::{Permit, PermitReason};

/// Exit code: done.
const EXIT_OK: u8 = 0;
/// Exit code: a system call or the environment failed.
const EXIT_RUNTIME: u8 = 1;
/// Exit code: invalid command line (clap's own code for usage errors too).
const EXIT_USAGE: u8 = 2;
/// Exit code: real split locks refused on this machine.
const EXIT_REFUSED: u8 = 3;

/// Longest accepted `--duration`: a day.
const MAX_DURATION_SECONDS: f64 = 86_400.0;

fn exit_codes_help() -> String {
    format!(
        "Real split locks run only under QEMU TCG, or with --allow-real-host: on bare metal, and \
         equally in a KVM or cloud VM, each one locks the bus of the physical host and stalls \
         every core on it, other tenants' included.\n\n\
         Exit codes:\n  {EXIT_OK}  done\n  {EXIT_RUNTIME}  runtime error\n  \
         {EXIT_USAGE}  usage error\n  {EXIT_REFUSED}  real split locks refused on this machine\n"
    )
}

#[derive(Debug, Parser)]
#[command(
    name = "splitlock",
    version,
    about = "Generate split locks and measure their victims",
    after_help = exit_codes_help()
)]
struct Cli {
    /// Locks per second, all threads together; 0: as fast as possible
    #[arg(long, value_name = "N", default_value_t = 0)]
    rate: u64,
    /// Generator threads [default: 1, or 0 with --victim: the victim alone]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=MAX_THREADS as i64))]
    threads: Option<u16>,
    /// How long to run, in seconds
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_duration)]
    duration: Duration,
    /// Also run the victim: memory copy throughput, reported every second (takes no locks)
    #[arg(long)]
    victim: bool,
    /// Size of the victim's buffer, in MiB: larger than the last-level cache
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=65_536))]
    victim_mib: u32,
    /// Count SIGBUS (policy fatal) and end that thread's loop, instead of dying of it
    #[arg(long)]
    catch_sigbus: bool,
    /// Generate real split locks outside QEMU TCG: only on a machine that is yours alone
    #[arg(long)]
    allow_real_host: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= MAX_DURATION_SECONDS) {
        return Err(format!(
            "must be more than 0 and at most {MAX_DURATION_SECONDS} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Why the run stopped early, and the exit code for it.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn runtime(message: String) -> Failure {
        Failure {
            code: EXIT_RUNTIME,
            message,
        }
    }
}

/// What the generator threads take, and why they may.
fn describe(permit: &Permit) -> &'static str {
    match permit.reason() {
        PermitReason::QemuTcg => "real split locks (QEMU TCG: emulated, harmless)",
        PermitReason::OperatorAllowed => {
            "REAL split locks (--allow-real-host: this host's bus will be locked)"
        }
    }
}

/// A generator thread's outcome.
struct Outcome {
    report: ThreadReport,
    sigbus: u64,
}

/// One generator thread: its own operand, its own share of the rate.
fn generate(
    index: usize,
    permit: &Permit,
    start: Instant,
    cli: &Cli,
    per_thread_rate: Option<f64>,
) -> Outcome {
    if cli.catch_sigbus {
        arch::claim_sigbus_slot(index);
    }
    let target = LockTarget::new();
    let report = generator::drive(
        start,
        cli.duration,
        per_thread_rate,
        || target.split_locked_add(permit),
        || cli.catch_sigbus && arch::sigbus_count(index) > 0,
    );
    Outcome {
        report,
        sigbus: if cli.catch_sigbus {
            arch::sigbus_count(index)
        } else {
            0
        },
    }
}

fn plural(count: u64, word: &str) -> String {
    format!("{count} {word}{}", if count == 1 { "" } else { "s" })
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let threads = usize::from(cli.threads.unwrap_or(if cli.victim { 0 } else { 1 }));
    if threads == 0 && !cli.victim {
        return Err(Failure {
            code: EXIT_USAGE,
            message: "nothing to do: --threads 0 without --victim".to_owned(),
        });
    }

    // Decide before anything runs: a refusal must leave the machine untouched.
    let permit = if threads > 0 {
        Some(
            safety::decide(&arch::cpuid_facts(), cli.allow_real_host).map_err(|refusal| {
                Failure {
                    code: EXIT_REFUSED,
                    message: refusal.to_string(),
                }
            })?,
        )
    } else {
        None
    };
    if cli.catch_sigbus {
        arch::install_sigbus_handler()
            .map_err(|err| Failure::runtime(format!("cannot handle SIGBUS: {err}")))?;
    }

    let per_thread_rate = (cli.rate > 0 && threads > 0).then(|| cli.rate as f64 / threads as f64);
    if let Some(permit) = &permit {
        let rate = match cli.rate {
            0 => "as fast as possible".to_owned(),
            rate => format!("{rate}/s in total"),
        };
        println!(
            "splitlock: {}, {}, {rate}, for {:.1} s",
            plural(threads as u64, "thread"),
            describe(permit),
            cli.duration.as_secs_f64()
        );
    }
    if cli.victim {
        println!(
            "splitlock: victim copying one half of a {} MiB buffer onto the other, MB/s every second",
            cli.victim_mib
        );
    }

    let start = Instant::now();
    let (outcomes, victim) = thread::scope(|scope| {
        let victim = cli.victim.then(|| {
            scope.spawn(|| {
                victim::run(cli.victim_mib as usize, cli.duration, |sample| {
                    println!(
                        "victim: {:6.1} s  {:9.0} MB/s",
                        sample.at.as_secs_f64(),
                        sample.mb_per_second
                    );
                })
            })
        });
        let generators: Vec<_> = permit
            .iter()
            .flat_map(|permit| (0..threads).map(move |index| (index, permit)))
            .map(|(index, permit)| {
                scope.spawn(move || generate(index, permit, start, cli, per_thread_rate))
            })
            .collect();
        let outcomes: Vec<Outcome> = generators
            .into_iter()
            .map(|handle| handle.join().expect("a generator thread panicked"))
            .collect();
        (
            outcomes,
            victim.map(|handle| handle.join().expect("the victim thread panicked")),
        )
    });

    if !outcomes.is_empty() {
        for (index, outcome) in outcomes.iter().enumerate() {
            let ended = if outcome.sigbus > 0 {
                ", ended by SIGBUS"
            } else {
                ""
            };
            println!(
                "thread {index}: {} in {:.2} s ({:.1}/s){ended}",
                plural(outcome.report.operations, "lock"),
                outcome.report.elapsed.as_secs_f64(),
                outcome.report.rate()
            );
        }
        let total: u64 = outcomes.iter().map(|o| o.report.operations).sum();
        let elapsed = outcomes
            .iter()
            .map(|o| o.report.elapsed)
            .max()
            .unwrap_or_default();
        let sigbus: u64 = outcomes.iter().map(|o| o.sigbus).sum();
        println!(
            "total: locks={total} elapsed_ms={} rate={:.1}/s sigbus={sigbus}",
            elapsed.as_millis(),
            generator::rate(total, elapsed)
        );
    }
    if let Some(summary) = victim {
        println!(
            "victim: mean {:.0} MB/s over {:.1} s",
            summary.mean_mb_per_second(),
            summary.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(failure) => {
            eprintln!("splitlock: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0.2"), Ok(Duration::from_millis(200)));
        for bad in ["0", "-1", "NaN", "inf", "90000", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thread_count_is_bounded_by_the_sigbus_slots() {
        let parse = |threads: &str| Cli::try_parse_from(["splitlock", "--threads", threads]);
        assert!(parse("256").is_ok());
        assert!(parse("257").is_err());
    }
}
