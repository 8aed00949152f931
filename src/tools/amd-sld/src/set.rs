//! `amd-sld set`: change the policy or the source, validated here first so that a typo is
//! explained rather than bounced by the kernel as a bare EINVAL.

use std::io::{self, Write};

use amd_sld_logic::escape::Escaped;
use amd_sld_logic::policy::Policy;
use amd_sld_logic::record::Source;
use rustix::io::Errno;

use crate::failure::Failure;
use crate::sysfs::{Parameter, Sysfs};

/// The `source` parameter's word for "the trap where the CPU has it, else the PMU".
const AUTO_SOURCE: &str = "auto";

/// Every word the `source` parameter accepts: `auto` and the detectors' own names.
fn source_words() -> [&'static str; 3] {
    [AUTO_SOURCE, Source::Bld.as_str(), Source::Pmu.as_str()]
}

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

/// The source word, or a usage error listing the valid ones.
pub(crate) fn validate_source(word: &str) -> Result<&'static str, Failure> {
    source_words()
        .into_iter()
        .find(|valid| *valid == word)
        .ok_or_else(|| {
            Failure::Usage(format!(
                "invalid source \"{}\": expected one of {}",
                Escaped(word.as_bytes()),
                source_words().join(", ")
            ))
        })
}

/// Turns the kernel's answer to a parameter write into what the operator needs to know
/// (docs/ABI/sysfs-kernel-amd_sld lists the errors).
pub(crate) fn explain_write_error(parameter: Parameter, value: &str, err: &io::Error) -> Failure {
    let name = parameter.file_name();
    if err.kind() == io::ErrorKind::PermissionDenied {
        return Failure::PermissionDenied(format!(
            "changing {name} needs root (the kernel said: {err})"
        ));
    }
    let errno = Errno::from_io_error(err);
    match (parameter, errno) {
        (Parameter::Policy, _) if err.kind() == io::ErrorKind::NotFound => Failure::not_loaded(),
        (Parameter::Source, _) if err.kind() == io::ErrorKind::NotFound => Failure::Runtime(
            "this amd_sld module has no source parameter: it predates the PMU source and \
             always uses the Bus Lock Detect trap"
                .to_owned(),
        ),
        (_, Some(Errno::INVAL)) => Failure::Runtime(format!(
            "the kernel rejected {name}={value} (EINVAL) although this tool accepts it: \
             the module and amd-sld disagree; check their versions"
        )),
        (Parameter::Policy, Some(Errno::IO)) => Failure::Runtime(format!(
            "{value} needs Bus Lock Detect armed on every CPU, and a CPU refused (its DEBUGCTL \
             write did not stick; EIO): the previous policy stays in force, see dmesg"
        )),
        (Parameter::Policy, Some(Errno::NODEV)) => Failure::NotLoaded(
            "amd_sld is unloading (ENODEV): the policy cannot change now".to_owned(),
        ),
        (Parameter::Source, Some(Errno::NODEV)) => Failure::Runtime(format!(
            "source {value} cannot start here (ENODEV): {}; the previous source stays",
            match value {
                "pmu" => "the PMU or its ls_locks.bus_lock event is missing (QEMU TCG, most VMs)",
                "bld" => "this CPU has no Bus Lock Detect trap (Zen 5 and later have it)",
                _ => "no detector is available on this machine, or the module is unloading",
            }
        )),
        _ => Failure::Runtime(format!("cannot set {name}={value}: {err}")),
    }
}

/// Validates the change, writes it and prints the parameter before and after.
pub(crate) fn run(sysfs: &Sysfs, change: &Change, out: &mut dyn Write) -> Result<(), Failure> {
    let (parameter, value) = match change {
        Change::Policy(text) => (Parameter::Policy, validate_policy(text)?.to_string()),
        Change::Source(word) => (Parameter::Source, validate_source(word)?.to_owned()),
    };
    sysfs.require_loaded()?;
    let before = sysfs.read_parameter(parameter)?;
    sysfs
        .write_parameter(parameter, &value)
        .map_err(|err| explain_write_error(parameter, &value, &err))?;
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

    fn os_error(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno.raw_os_error())
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
    fn sources_are_the_three_words() {
        for word in ["auto", "bld", "pmu"] {
            assert_eq!(validate_source(word), Ok(word));
        }
        let err = validate_source("PMU").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().ends_with("expected one of auto, bld, pmu"),
            "{err}"
        );
    }

    #[test]
    fn kernel_errors_are_explained() {
        for errno in [Errno::ACCESS, Errno::PERM] {
            let failure = explain_write_error(Parameter::Policy, "off", &os_error(errno));
            assert_eq!(failure.exit_code(), 4);
            assert!(failure.to_string().contains("needs root"), "{failure}");
        }
        let eio = explain_write_error(Parameter::Policy, "warn", &os_error(Errno::IO));
        assert_eq!(eio.exit_code(), 1);
        assert!(eio.to_string().contains("a CPU refused"), "{eio}");
        let unloading = explain_write_error(Parameter::Policy, "warn", &os_error(Errno::NODEV));
        assert_eq!(unloading.exit_code(), 3);
        assert!(unloading.to_string().contains("unloading"));
        let no_pmu = explain_write_error(Parameter::Source, "pmu", &os_error(Errno::NODEV));
        assert_eq!(no_pmu.exit_code(), 1);
        assert!(no_pmu.to_string().contains("ls_locks.bus_lock"), "{no_pmu}");
        let einval = explain_write_error(Parameter::Source, "bld", &os_error(Errno::INVAL));
        assert!(einval.to_string().contains("EINVAL"), "{einval}");
        let gone = explain_write_error(Parameter::Policy, "warn", &os_error(Errno::NOENT));
        assert_eq!(gone.exit_code(), 3);
        let old = explain_write_error(Parameter::Source, "auto", &os_error(Errno::NOENT));
        assert!(old.to_string().contains("no source parameter"), "{old}");
        let other = explain_write_error(Parameter::Policy, "warn", &os_error(Errno::NOSPC));
        assert_eq!(other.exit_code(), 1);
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
