//! The built `amd-sld` binary against fake sysfs trees: exit codes, messages, output.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::FakeSysfs;

const BINARY: &str = env!("CARGO_BIN_EXE_amd-sld");

fn amd_sld(root: &Path, args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("--sysfs-root")
        .arg(root)
        .args(args)
        .env_remove("AMD_SLD_SYSFS_ROOT")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn event_line(seq: u64) -> String {
    format!(
        "seq={seq} ms={} cpu=1 pid=4242 tid=4243 comm=splitlock source=bld guest=0 \
         ip=0x401000 count=1 action=warn\n",
        1_000 + seq
    )
}

#[test]
fn every_command_says_when_the_module_is_not_loaded() {
    let fake = FakeSysfs::empty();
    for args in [
        &["status"][..],
        &["status", "--json", "--interval", "0"],
        &["top", "--once"],
        &["events"],
        &["set", "warn"],
        &["set", "--source", "auto"],
    ] {
        let output = amd_sld(fake.root(), args);
        assert_eq!(output.status.code(), Some(3), "{args:?}");
        assert!(
            stderr(&output).contains("amd_sld is not loaded"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    // A collector must not break: the exporter says "down" and succeeds.
    let output = amd_sld(fake.root(), &["export", "--prometheus"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).ends_with("amd_sld_up 0\n"));
}

#[test]
fn status_reads_the_tree_and_the_environment_variable() {
    let fake = FakeSysfs::loaded();
    fake.set_counter("bus_locks", 77);
    let output = Command::new(BINARY)
        .args(["status", "--interval", "0"])
        .env("AMD_SLD_SYSFS_ROOT", fake.root())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("module      loaded\npolicy      warn\n"),
        "{text}"
    );
    assert!(text.contains("\nbus_locks           77\n"), "{text}");
}

#[test]
fn set_validates_writes_and_reports() {
    let fake = FakeSysfs::loaded();
    let output = amd_sld(fake.root(), &["set", "ratelimit:5x"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("decimal digits only"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        fake.read("sys/module/amd_sld/parameters/split_lock_detect"),
        "warn\n"
    );

    let output = amd_sld(fake.root(), &["set", "fatal"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "split_lock_detect: warn -> fatal\n");

    let output = amd_sld(fake.root(), &["set", "--source", "acpi"]);
    assert_eq!(output.status.code(), Some(2));
    fake.remove("sys/module/amd_sld/parameters/source");
    let output = amd_sld(fake.root(), &["set", "--source", "pmu"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no source parameter"));
}

#[test]
fn usage_errors_exit_2_and_help_lists_exit_codes() {
    let fake = FakeSysfs::loaded();
    assert_eq!(amd_sld(fake.root(), &["set"]).status.code(), Some(2));
    assert_eq!(amd_sld(fake.root(), &["export"]).status.code(), Some(2));
    assert_eq!(
        amd_sld(fake.root(), &["top", "--interval", "0"])
            .status
            .code(),
        Some(2)
    );
    for command in ["status", "top", "events", "set", "export"] {
        let help = amd_sld(fake.root(), &[command, "--help"]);
        assert_eq!(help.status.code(), Some(0));
        assert!(
            stdout(&help).contains("3  the amd_sld module is not loaded"),
            "{command}"
        );
    }
}

#[test]
fn export_writes_the_textfile_atomically() {
    let fake = FakeSysfs::loaded();
    fake.set_counter("bus_locks", 9);
    let target = fake.root().join("amd_sld.prom");
    let output = amd_sld(
        fake.root(),
        &[
            "export",
            "--prometheus",
            "--output",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    let text = fs::read_to_string(&target).unwrap();
    assert!(text.contains("\namd_sld_bus_locks_total 9\n"), "{text}");
    let mode = fs::metadata(&target).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "readable by node_exporter");
}

#[test]
fn top_once_prints_one_table() {
    let fake = FakeSysfs::loaded();
    fake.write(
        "sys/kernel/amd_sld/top",
        "pid=4242 comm=splitlock bus_locks=500 guest=0 first_ms=1 last_ms=2\n",
    );
    let output = amd_sld(fake.root(), &["top", "--once"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("4242  splitlock"), "{text}");
    assert!(!text.contains('\x1b'), "no ANSI when not a terminal");
}

/// Runs `events -f` and checks that records are printed once each and that records lost
/// between two polls are reported.
#[test]
fn events_follow_reports_lost_records() {
    let fake = FakeSysfs::loaded();
    let ring: String = (0..3).map(event_line).collect();
    fake.write("sys/kernel/amd_sld/events", &ring);
    let mut child = Command::new(BINARY)
        .arg("--sysfs-root")
        .arg(fake.root())
        .args(["events", "--follow", "--interval", "0.05"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let reader = BufReader::new(child.stdout.take().unwrap());
    thread::spawn(move || {
        for line in reader.lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next_line = || received.recv_timeout(Duration::from_secs(10));

    for seq in 0..3 {
        assert!(next_line().unwrap().contains(&format!("] #{seq} cpu 1")));
    }
    // The ring moved on by more than it holds before the next poll: 3..=39 are gone.
    let ring: String = (40..42).map(event_line).collect();
    fake.write("sys/kernel/amd_sld/events", &ring);
    let outcome = (0..3).map(|_| next_line()).collect::<Result<Vec<_>, _>>();
    child.kill().unwrap();
    child.wait().unwrap();
    let outcome = outcome.expect("amd-sld events -f printed nothing new");
    assert_eq!(
        outcome[0],
        "-- 37 records of cpu 1 (bld) lost (seq 3..39): overwritten before they were read; poll faster (--interval) --"
    );
    assert!(outcome[1].contains("] #40 "), "{}", outcome[1]);
    assert!(outcome[2].contains("] #41 "), "{}", outcome[2]);
}

/// Whether this process runs as root, from /proc (no unsafe `geteuid` in the tests).
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap()
}

/// Root bypasses file modes, so as root the binary runs as `nobody` through setpriv. Read
/// access to the tree is opened up; the parameter stays writable by root only and the
/// record files readable by root only, as the module creates them.
#[test]
fn permission_denied_is_exit_4_and_says_needs_root() {
    let fake = FakeSysfs::loaded();
    let as_root = running_as_root();
    if as_root && !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("SKIP: running as root without /usr/bin/setpriv to drop privileges");
        return;
    }
    let mut directories = vec![fake.root().to_path_buf()];
    while let Some(directory) = directories.pop() {
        fs::set_permissions(&directory, fs::Permissions::from_mode(0o755)).unwrap();
        for entry in fs::read_dir(&directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                directories.push(path);
            }
        }
    }
    for file in ["sys/kernel/amd_sld/events", "sys/kernel/amd_sld/top"] {
        let path = fake.root().join(file);
        fs::set_permissions(path, fs::Permissions::from_mode(0o400)).unwrap();
    }
    if as_root {
        // The checkout (say, under /root) or the temporary directory may be closed to
        // nobody; that is the environment, not a failure of amd-sld.
        let probe = |program: &str, args: &[&str]| {
            Command::new("/usr/bin/setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", program])
                .args(args)
                .output()
                .is_ok_and(|output| output.status.success())
        };
        let counter = fake.root().join("sys/kernel/amd_sld/bus_locks");
        if !probe(BINARY, &["--version"])
            || !probe("/usr/bin/test", &["-r", counter.to_str().unwrap()])
        {
            eprintln!(
                "SKIP: user nobody cannot reach {BINARY} or {}",
                fake.root().display()
            );
            return;
        }
    }
    let unprivileged = |args: &[&str]| -> Output {
        let mut command = if as_root {
            let mut setpriv = Command::new("/usr/bin/setpriv");
            setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups", BINARY]);
            setpriv
        } else {
            Command::new(BINARY)
        };
        command
            .arg("--sysfs-root")
            .arg(fake.root())
            .args(args)
            .output()
            .unwrap()
    };

    let output = unprivileged(&["set", "off"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("needs root"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        fake.read("sys/module/amd_sld/parameters/split_lock_detect"),
        "warn\n"
    );

    let output = unprivileged(&["events"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(stderr(&output).contains("needs root"));

    // Counters are world-readable: status works, and export leaves out only the offenders.
    let output = unprivileged(&["status", "--interval", "0"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = unprivileged(&["export", "--prometheus"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output)
        .ends_with("# amd_sld_offender_bus_locks not exported: reading top needs root\n"));
}
