//! `amd-sld set`: change the policy or the source, validated here first so that a typo is
//! explained rather than bounced by the kernel as a bare EINVAL.

use std::io::{self, Write};

use amd_sld_logic::capability::Requested;
use amd_sld_logic::escape::Escaped;
use amd_sld_logic::policy::Policy;
use rustix::io::Errno;

use crate::failure::Failure;
use crate::sysfs::{Parameter, ParameterWriteError, Sysfs};

/// What to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The `split_lock_detect` policy, as typed.
    Policy(String),
    /// The `source` parameter, as typed.
    Source(String),
}

/// The policy, or a usage error saying what is wrong with it.
pub(crate) fn validate_policy(text: &str) -> Result<Policy, Failure> {
    Policy::parse(text.as_bytes()).map_err(|err| {
        Failure::Usage(format!(
            "invalid policy \"{}\": {err}",
            Escaped(text.as_bytes())
        ))
    })
}

/// The source, or a usage error listing the valid ones.
pub(crate) fn validate_source(word: &str) -> Result<Requested, Failure> {
    Requested::parse(word.as_bytes()).map_err(|err| {
        Failure::Usage(format!(
            "invalid source \"{}\": {err}",
            Escaped(word.as_bytes())
        ))
    })
}

/// Why `source=<requested>` could not start, from the module's documented reasons.
fn source_cannot_start(requested: &str) -> &'static str {
    match requested {
        "pmu" => {
            "the PMU cannot count ls_locks.bus_lock here (QEMU TCG and most VMs have no core PMU)"
        }
        "bld" => {
            "this CPU has no Bus Lock Detect trap (Zen 5 and later have it), or the kernel \
             (6.13 and later) arms it itself"
        }
        _ => "neither the trap nor the PMU is available on this machine",
    }
}

/// Turns a failed parameter write into what the operator needs to know
/// (docs/ABI/sysfs-kernel-amd_sld lists the errors). `module_loaded` is whether the module
/// was still there after the write: an unloading module answers -ENODEV.
pub(crate) fn explain_write_error(
    parameter: Parameter,
    value: &str,
    error: &ParameterWriteError,
    module_loaded: bool,
) -> Failure {
    let name = parameter.file_name();
    let err = match error {
        ParameterWriteError::Missing => {
            return match parameter {
                Parameter::Policy => Failure::not_loaded(),
                Parameter::Source => Failure::Runtime(
                    "this amd_sld module has no source parameter: it predates the PMU source \
                     and always uses the Bus Lock Detect trap"
                        .to_owned(),
                ),
            }
        }
        ParameterWriteError::Refused(err) => err,
    };
    if err.kind() == io::ErrorKind::PermissionDenied {
        return Failure::PermissionDenied(format!(
            "changing {name} needs root (the kernel said: {err})"
        ));
    }
    let errno = Errno::from_io_error(err);
    if errno == Some(Errno::NODEV) && !module_loaded {
        return Failure::NotLoaded(format!(
            "amd_sld is unloading (ENODEV): {name} cannot change now"
        ));
    }
    // Every change is all or nothing: whatever failed, the old value is still in force.
    let reason = match (parameter, errno) {
        (_, Some(Errno::INVAL)) => format!(
            "the kernel rejected {name}={value} (EINVAL) although this tool accepts it: the \
             module and amd-sld disagree; check their versions"
        ),
        (Parameter::Policy, Some(Errno::IO)) => format!(
            "{value} needs detection armed on every CPU, and a CPU refused (its DEBUGCTL write \
             did not stick; EIO)"
        ),
        (Parameter::Source, Some(Errno::NODEV)) => format!(
            "source {value} cannot start (ENODEV): {}",
            source_cannot_start(value)
        ),
        _ => format!("the kernel refused {name}={value}: {err}"),
    };
    Failure::Runtime(format!(
        "{reason}; the previous {name} stays in force (dmesg has amd_sld's reason)"
    ))
}

/// Validates the change, writes it and prints the parameter before and after.
pub(crate) fn run(sysfs: &Sysfs, change: &Change, out: &mut dyn Write) -> Result<(), Failure> {
    let (parameter, value) = match change {
        Change::Policy(text) => (Parameter::Policy, validate_policy(text)?.to_string()),
        Change::Source(word) => (Parameter::Source, validate_source(word)?.to_string()),
    };
    sysfs.require_loaded()?;
    let before = sysfs.read_parameter(parameter)?;
    sysfs
        .write_parameter(parameter, &value)
        .map_err(|err| explain_write_error(parameter, &value, &err, sysfs.module_loaded()))?;
    // Read back: the kernel shows the canonical form of what is now in force.
    let after = sysfs.read_parameter(parameter)?.unwrap_or(value);
    let name = parameter.file_name();
    match before {
        Some(before) => writeln!(
            out,
            "{name}: {} -> {}",
            Escaped(before.as_bytes()),
            Escaped(after.as_bytes())
        ),
        None => writeln!(out, "{name}: {}", Escaped(after.as_bytes())),
    }
    .map_err(Failure::output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sysfs::FakeSysfs;

    fn refused(errno: Errno) -> ParameterWriteError {
        ParameterWriteError::Refused(io::Error::from_raw_os_error(errno.raw_os_error()))
    }

    #[test]
    fn policies_are_validated_with_the_modules_parser() {
        assert_eq!(
            validate_policy("ratelimit:0010").unwrap().to_string(),
            "ratelimit:10"
        );
        for (bad, why) in [
            ("ratelimit:0", "1 to 1000"),
            ("ratelimit:5x", "decimal digits"),
            ("Warn", "lower case"),
            ("", "empty"),
        ] {
            let err = validate_policy(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn sources_are_validated_with_the_modules_parser() {
        for word in ["auto", "bld", "pmu"] {
            assert_eq!(validate_source(word).unwrap().to_string(), word);
        }
        let err = validate_source("PMU").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .ends_with("expected auto, bld or pmu (lower case)"),
            "{err}"
        );
    }

    #[test]
    fn kernel_errors_are_explained() {
        let explain = |parameter, value, errno, loaded| {
            explain_write_error(parameter, value, &refused(errno), loaded)
        };
        for errno in [Errno::ACCESS, Errno::PERM] {
            let failure = explain(Parameter::Policy, "off", errno, true);
            assert_eq!(failure.exit_code(), 4);
            assert!(failure.to_string().contains("needs root"), "{failure}");
        }
        let eio = explain(Parameter::Policy, "warn", Errno::IO, true);
        assert_eq!(eio.exit_code(), 1);
        assert!(eio.to_string().contains("a CPU refused"), "{eio}");
        assert!(
            eio.to_string().contains("previous split_lock_detect stays"),
            "{eio}"
        );
        let unloading = explain(Parameter::Policy, "warn", Errno::NODEV, false);
        assert_eq!(unloading.exit_code(), 3);
        assert!(unloading.to_string().contains("unloading"));
        let no_pmu = explain(Parameter::Source, "pmu", Errno::NODEV, true);
        assert_eq!(no_pmu.exit_code(), 1);
        assert!(no_pmu.to_string().contains("ls_locks.bus_lock"), "{no_pmu}");
        let einval = explain(Parameter::Source, "bld", Errno::INVAL, true);
        assert!(einval.to_string().contains("EINVAL"), "{einval}");
        // The PMU source's counters can fail to start with perf's own errors, ENOENT too:
        // a kernel answer, not a missing file.
        let perf = explain(Parameter::Policy, "warn", Errno::NOENT, true);
        assert_eq!(perf.exit_code(), 1);
        assert!(perf.to_string().contains("the kernel refused"), "{perf}");
        let gone = explain_write_error(
            Parameter::Policy,
            "warn",
            &ParameterWriteError::Missing,
            false,
        );
        assert_eq!(gone.exit_code(), 3);
        let old = explain_write_error(
            Parameter::Source,
            "auto",
            &ParameterWriteError::Missing,
            true,
        );
        assert!(old.to_string().contains("no source parameter"), "{old}");
    }

    #[test]
    fn writes_the_canonical_form_and_reports_the_change() {
        let fake = FakeSysfs::loaded();
        let sysfs = Sysfs::new(fake.root());
        let mut out = Vec::new();
        run(
            &sysfs,
            &Change::Policy("ratelimit:007".to_owned()),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            fake.read("sys/module/amd_sld/parameters/split_lock_detect"),
            "ratelimit:7\n"
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "split_lock_detect: warn -> ratelimit:7\n"
        );

        let mut out = Vec::new();
        run(&sysfs, &Change::Source("pmu".to_owned()), &mut out).unwrap();
        assert_eq!(fake.read("sys/module/amd_sld/parameters/source"), "pmu\n");
        assert_eq!(String::from_utf8(out).unwrap(), "source: auto -> pmu\n");
    }

    #[test]
    fn invalid_input_is_refused_before_anything_else() {
        let fake = FakeSysfs::empty();
        let sysfs = Sysfs::new(fake.root());
        let invalid = run(
            &sysfs,
            &Change::Policy("ratelimit:1001".to_owned()),
            &mut Vec::new(),
        );
        assert_eq!(invalid.unwrap_err().exit_code(), 2);
        let unloaded = run(&sysfs, &Change::Policy("warn".to_owned()), &mut Vec::new());
        assert_eq!(unloaded.unwrap_err().exit_code(), 3);
        assert!(
            !fake.root().join("sys/module").exists(),
            "nothing was created"
        );
    }
}
