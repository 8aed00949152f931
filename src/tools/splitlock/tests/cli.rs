//! The built `splitlock` binary: what it refuses, and the victim, which is safe anywhere.
//!
//! No test here may make this machine take real split locks. The generator is only ever
//! started with `--rate 1 --duration 0.2`, so that even a broken refusal could not cost more
//! than one split lock; on any machine but QEMU TCG it must refuse before taking that one.

use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_splitlock");

fn splitlock(args: &[&str]) -> Output {
    Command::new(BINARY).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn real_split_locks_are_refused_outside_qemu_tcg() {
    let output = splitlock(&["--rate", "1", "--duration", "0.2"]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    match output.status.code() {
        Some(3) => {
            assert!(
                stderr.contains("refusing to generate real split locks"),
                "{stderr}"
            );
            assert!(stderr.contains("--allow-real-host"), "{stderr}");
            assert_eq!(stdout, "", "nothing ran");
        }
        // Only QEMU's emulator may run them, and the tool must say that is why.
        Some(0) => assert!(stdout.contains("QEMU TCG"), "{stdout}"),
        other => panic!("exit {other:?}: {stderr}"),
    }
}

#[test]
fn the_victim_alone_runs_anywhere() {
    let output = splitlock(&["--victim", "--victim-mib", "8", "--duration", "0.2"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("victim: mean "), "{stdout}");
    assert!(
        !stdout.contains("total: locks="),
        "no generator ran: {stdout}"
    );
}

#[test]
fn usage_errors_and_help() {
    assert_eq!(splitlock(&["--threads", "0"]).status.code(), Some(2));
    assert_eq!(splitlock(&["--duration", "0"]).status.code(), Some(2));
    let help = splitlock(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    assert!(help.contains("3  real split locks refused"), "{help}");
    assert!(help.contains("other tenants"), "{help}");
}
