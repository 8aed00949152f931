//! `amd-sld`: the operator's command line for the amd_sld kernel module.
//!
//! Reads and changes the module's sysfs interface (docs/ABI/sysfs-kernel-amd_sld): status
//! and rates, the heaviest offenders, the bus-lock records, the policy and source, and a
//! Prometheus export. Every path is taken under `--sysfs-root`, so that tests can point it
//! at a fake tree.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod cgroup;
mod clock;
mod events;
mod failure;
mod prometheus;
mod records;
mod set;
mod snapshot;
mod status;
mod symbols;
mod sysfs;
mod table;
mod top;

#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod fake_sysfs;

use failure::{exit_codes_help, Failure};
use sysfs::Sysfs;

/// Longest accepted `--interval`: a day. Longer is a typo, not a polling period.
const MAX_INTERVAL_SECONDS: f64 = 86_400.0;

#[derive(Debug, Parser)]
#[command(
    name = "amd-sld",
    version,
    about = "Watch and control amd_sld, the AMD split-lock / bus-lock detector",
    after_help = exit_codes_help()
)]
struct Cli {
    /// Prefix of every sysfs path, and of /proc (for tests and chroots)
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "AMD_SLD_SYSFS_ROOT",
        default_value = "/"
    )]
    sysfs_root: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Module state, policy, source, armed CPUs, counters and their rates
    #[command(after_help = exit_codes_help())]
    Status(StatusArgs),
    /// The processes with the most bus locks, refreshed until Ctrl-C (needs root)
    #[command(after_help = exit_codes_help())]
    Top(TopArgs),
    /// The most recent bus-lock records, naming the function at each IP while its process
    /// lives; -f follows new ones (needs root)
    #[command(after_help = exit_codes_help())]
    Events(EventsArgs),
    /// Change the policy (off, warn, fatal, ratelimit:N) or the source (needs root)
    #[command(after_help = exit_codes_help())]
    Set(SetArgs),
    /// Export the counters for Prometheus (node_exporter textfile collector)
    #[command(after_help = exit_codes_help())]
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Seconds between the two counter readings that give the rates; 0: no rates
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_interval)]
    interval: Duration,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TopArgs {
    /// Seconds between refreshes
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_period)]
    interval: Duration,
    /// Print the table once and exit
    #[arg(long)]
    once: bool,
    /// Only processes whose cgroup v2 is PATH or below it (e.g. /system.slice)
    #[arg(long, value_name = "PATH")]
    cgroup: Option<String>,
    /// One row per process, or per cgroup v2 (the bus locks of its processes summed)
    #[arg(long, value_enum, default_value = "process")]
    by: top::GroupBy,
}

#[derive(Debug, Args)]
struct EventsArgs {
    /// Keep polling and print new records as they come; lost records are reported
    #[arg(short, long)]
    follow: bool,
    /// Seconds between polls with --follow
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_period)]
    interval: Duration,
    /// Print the kernel's lines unchanged (loss notices then go to stderr)
    #[arg(long)]
    raw: bool,
    /// Only records whose cgroup v2 is PATH or below it (e.g. /system.slice)
    #[arg(long, value_name = "PATH")]
    cgroup: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).args(["policy", "source"])))]
struct SetArgs {
    /// off, warn, fatal or ratelimit:N (1 <= N <= 1000 bus locks per second, system wide)
    policy: Option<String>,
    /// Change the detector instead: auto (the trap for the host and the PMU for KVM guests
    /// where the CPU has the trap, else the PMU), bld or pmu
    #[arg(long, value_name = "SOURCE", conflicts_with = "policy")]
    source: Option<String>,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Prometheus text format (the only format so far)
    #[arg(long, required = true)]
    prometheus: bool,
    /// Write to FILE atomically (temporary file and rename) instead of standard output
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Seconds as a duration: finite, 0 to a day.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a number of seconds"))?;
    if !(0.0..=MAX_INTERVAL_SECONDS).contains(&seconds) {
        return Err(format!("must be 0 to {MAX_INTERVAL_SECONDS} seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A polling period: as [`parse_interval`], but not 0, which would spin.
fn parse_period(text: &str) -> Result<Duration, String> {
    let period = parse_interval(text)?;
    if period < Duration::from_millis(10) {
        return Err("must be at least 0.01 seconds".to_owned());
    }
    Ok(period)
}

fn run(cli: Cli) -> Result<(), Failure> {
    let proc = cli.sysfs_root.join("proc");
    let sysfs = Sysfs::new(cli.sysfs_root);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Status(args) => status::run(&sysfs, args.interval, args.json, &mut out),
        Command::Top(args) => {
            let clear_screen = !args.once && stdout.is_terminal();
            let view = top::View {
                cgroup: args.cgroup,
                by: args.by,
            };
            top::run(
                &sysfs,
                args.interval,
                args.once,
                clear_screen,
                &view,
                &mut out,
            )
        }
        Command::Events(args) => {
            let mut notices = io::stderr();
            let mut printer = events::Printer::new(args.raw, &mut out, &mut notices)
                .resolving(proc)
                .scanning_cgroups(&sysfs, args.cgroup);
            events::run(&sysfs, args.follow, args.interval, &mut printer)
        }
        Command::Set(args) => {
            let change = match (args.policy, args.source) {
                (Some(policy), None) => set::Change::Policy(policy),
                (None, Some(source)) => set::Change::Source(source),
                // clap's "change" group lets exactly one through.
                _ => unreachable!("clap requires exactly one of <POLICY> and --source"),
            };
            set::run(&sysfs, &change, &mut out)
        }
        Command::Export(args) => {
            let text = prometheus::collect(&sysfs)?;
            match args.output {
                Some(path) => prometheus::write_atomically(&path, &text),
                None => io::Write::write_all(&mut out, text.as_bytes()).map_err(Failure::output),
            }
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if failure != Failure::OutputClosed {
                eprintln!("amd-sld: {failure}");
            }
            ExitCode::from(failure.exit_code())
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
    fn intervals() {
        assert_eq!(parse_interval("0"), Ok(Duration::ZERO));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["-1", "NaN", "inf", "1e9", "x", ""] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
        assert!(parse_period("0").is_err());
        assert_eq!(parse_period("2"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn set_takes_exactly_one_change() {
        let parse = |args: &[&str]| Cli::try_parse_from(["amd-sld", "set"].iter().chain(args));
        assert!(parse(&["warn"]).is_ok());
        assert!(parse(&["--source", "pmu"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["warn", "--source", "pmu"]).is_err());
    }
}
