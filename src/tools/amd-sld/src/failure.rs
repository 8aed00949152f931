//! Why a command failed, and the exit code that tells a script so.

use std::fmt;
use std::io;

/// Exit code: the command did what was asked.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit code: an I/O error or an answer from the kernel the command could not use.
pub(crate) const EXIT_RUNTIME: u8 = 1;
/// Exit code: invalid command line or value (clap uses 2 for its own usage errors too).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: the amd_sld module is not loaded.
pub(crate) const EXIT_NOT_LOADED: u8 = 3;
/// Exit code: the kernel said no to this user (the file is root-only).
pub(crate) const EXIT_PERMISSION: u8 = 4;

/// The exit codes and what they mean, for `--help`.
pub(crate) fn exit_codes_help() -> String {
    let codes = [
        (EXIT_OK, "success"),
        (
            EXIT_RUNTIME,
            "runtime error (I/O, or an answer from the kernel that cannot be used)",
        ),
        (EXIT_USAGE, "usage error or invalid value"),
        (EXIT_NOT_LOADED, "the amd_sld module is not loaded"),
        (EXIT_PERMISSION, "permission denied: needs root"),
    ];
    let mut help = String::from("Exit codes:\n");
    for (code, meaning) in codes {
        help.push_str(&format!("  {code}  {meaning}\n"));
    }
    help
}

/// A failed command: what to tell the operator, and the exit code.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// An I/O error or an unusable kernel answer.
    Runtime(String),
    /// Invalid input from the command line.
    Usage(String),
    /// The module is not loaded, or went away while we were using it.
    NotLoaded(String),
    /// The file is root-only (events, top) or root-writable (the parameters).
    PermissionDenied(String),
    /// Our standard output was closed (`amd-sld events -f | head`): nothing left to say.
    OutputClosed,
}

impl Failure {
    /// The module is not loaded: the message every command gives.
    pub(crate) fn not_loaded() -> Failure {
        Failure::NotLoaded(
            "amd_sld is not loaded (no /sys/module/amd_sld): load it with `modprobe amd_sld`"
                .to_owned(),
        )
    }

    /// A failure to write our own standard output.
    pub(crate) fn output(err: io::Error) -> Failure {
        if err.kind() == io::ErrorKind::BrokenPipe {
            Failure::OutputClosed
        } else {
            Failure::Runtime(format!("cannot write the output: {err}"))
        }
    }

    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Runtime(_) | Failure::OutputClosed => EXIT_RUNTIME,
            Failure::Usage(_) => EXIT_USAGE,
            Failure::NotLoaded(_) => EXIT_NOT_LOADED,
            Failure::PermissionDenied(_) => EXIT_PERMISSION,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Runtime(message)
            | Failure::Usage(message)
            | Failure::NotLoaded(message)
            | Failure::PermissionDenied(message) => f.write_str(message),
            Failure::OutputClosed => f.write_str("standard output closed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_documented_code() {
        assert_eq!(Failure::Runtime(String::new()).exit_code(), 1);
        assert_eq!(Failure::Usage(String::new()).exit_code(), 2);
        assert_eq!(Failure::not_loaded().exit_code(), 3);
        assert_eq!(Failure::PermissionDenied(String::new()).exit_code(), 4);
        let help = exit_codes_help();
        for code in 0..=4 {
            assert!(help.contains(&format!("  {code}  ")), "{help}");
        }
    }

    #[test]
    fn a_closed_pipe_is_not_reported_as_an_error_message() {
        let closed = Failure::output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(closed, Failure::OutputClosed);
        let full = Failure::output(io::Error::from_raw_os_error(28));
        assert!(matches!(full, Failure::Runtime(_)));
    }
}
