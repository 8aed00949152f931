//! Opting in to the simulated Bus Lock Detect of the amd_sld test build (`make SIM=1`).
//!
//! The test build turns a user single-step into a bus-lock trap for the process whose TGID
//! is written to its debugfs file (selftests/README.md); 0 opts out.

use std::fs;
use std::io;
use std::path::Path;

/// The test build's opt-in file.
pub(crate) const SIM_TGID: &str = "/sys/kernel/debug/amd_sld/sim_tgid";

/// Opts the process `pid` in.
pub(crate) fn opt_in(path: &Path, pid: u32) -> Result<(), String> {
    fs::write(path, format!("{pid}\n")).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => format!(
            "--sim needs the amd_sld test build (make SIM=1) loaded, and debugfs mounted on \
             /sys/kernel/debug: {} does not exist",
            path.display()
        ),
        io::ErrorKind::PermissionDenied => {
            format!("--sim needs root to opt in through {}", path.display())
        }
        _ => format!("cannot opt in through {}: {err}", path.display()),
    })
}

/// Opts out again if `pid` is still the one opted in, so that a later process reusing the
/// PID is not simulated by surprise. Best effort: the run's result does not depend on it.
pub(crate) fn opt_out(path: &Path, pid: u32) {
    let ours = fs::read_to_string(path).is_ok_and(|text| text.trim() == pid.to_string());
    if ours {
        let _ = fs::write(path, "0\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("splitlock-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_test_build_is_explained() {
        let dir = scratch("missing");
        let err = opt_in(&dir.join("amd_sld/sim_tgid"), 42).unwrap_err();
        assert!(
            err.contains("needs the amd_sld test build (make SIM=1) loaded"),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn opts_in_and_out_only_itself() {
        let dir = scratch("optin");
        let file = dir.join("sim_tgid");
        fs::write(&file, "0\n").unwrap();
        opt_in(&file, 4242).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "4242\n");
        opt_out(&file, 4242);
        assert_eq!(fs::read_to_string(&file).unwrap(), "0\n");
        fs::write(&file, "777\n").unwrap();
        opt_out(&file, 4242);
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "777\n",
            "someone else's"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
