//! The module's files in sysfs (docs/ABI/sysfs-kernel-amd_sld), under a root that tests
//! point at a fake tree.
//!
//! A file that is missing is "not available", never an error: older module builds lack the
//! newer files (guest_bus_locks, dropped, source, events, top, the source parameter), and
//! every file disappears while the module unloads.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use amd_sld_logic::escape::Escaped;
use rustix::io::Errno;

use crate::failure::Failure;

/// Present while the module is loaded.
const MODULE_DIR: &str = "sys/module/amd_sld";
/// The module's parameters.
const PARAMETERS_DIR: &str = "sys/module/amd_sld/parameters";
/// Counters, state and records.
const STATS_DIR: &str = "sys/kernel/amd_sld";

/// A module parameter that root may change at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parameter {
    /// `split_lock_detect`: the policy.
    Policy,
    /// `source`: the detector asked for (auto, bld, pmu).
    Source,
}

impl Parameter {
    /// The parameter's file name.
    pub(crate) const fn file_name(self) -> &'static str {
        match self {
            Parameter::Policy => "split_lock_detect",
            Parameter::Source => "source",
        }
    }
}

/// The sysfs tree, as seen from `root` ("/" on a real host).
#[derive(Clone, Debug)]
pub(crate) struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// The root every path is taken under ("/" on a real host).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the module is loaded: /sys/module/amd_sld exists.
    pub(crate) fn module_loaded(&self) -> bool {
        self.root.join(MODULE_DIR).is_dir()
    }

    /// Fails with the standard message unless the module is loaded.
    pub(crate) fn require_loaded(&self) -> Result<(), Failure> {
        if self.module_loaded() {
            Ok(())
        } else {
            Err(Failure::not_loaded())
        }
    }

    /// The path of a file of /sys/kernel/amd_sld.
    pub(crate) fn stat_path(&self, name: &str) -> PathBuf {
        self.root.join(STATS_DIR).join(name)
    }

    /// The path of a module parameter.
    pub(crate) fn parameter_path(&self, parameter: Parameter) -> PathBuf {
        self.root.join(PARAMETERS_DIR).join(parameter.file_name())
    }

    /// A file of /sys/kernel/amd_sld, or `None` where this module version has none.
    pub(crate) fn read_stat(&self, name: &str) -> Result<Option<String>, Failure> {
        read_optional(&self.stat_path(name))
    }

    /// A counter of /sys/kernel/amd_sld, or `None` where this module version has none.
    pub(crate) fn read_counter(&self, name: &str) -> Result<Option<u64>, Failure> {
        let path = self.stat_path(name);
        match read_optional(&path)? {
            None => Ok(None),
            Some(text) => parse_counter(&text).map(Some).ok_or_else(|| {
                Failure::Runtime(format!(
                    "{}: expected a decimal number, found \"{}\"",
                    path.display(),
                    Escaped(text.as_bytes())
                ))
            }),
        }
    }

    /// A parameter's value without its newline, or `None` where the module has no such
    /// parameter.
    pub(crate) fn read_parameter(&self, parameter: Parameter) -> Result<Option<String>, Failure> {
        Ok(read_optional(&self.parameter_path(parameter))?.map(|text| one_line(&text).to_owned()))
    }

    /// Writes `value` to a parameter in one `write()`, as `echo value > file` does. The file
    /// must exist: creating one would only hide a missing module from the caller.
    pub(crate) fn write_parameter(
        &self,
        parameter: Parameter,
        value: &str,
    ) -> Result<(), ParameterWriteError> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.parameter_path(parameter))
            .map_err(|err| {
                if err.kind() == io::ErrorKind::NotFound {
                    ParameterWriteError::Missing
                } else {
                    ParameterWriteError::Refused(err)
                }
            })?;
        file.write_all(format!("{value}\n").as_bytes())
            .map_err(ParameterWriteError::Refused)
    }
}

/// Why a parameter write failed.
#[derive(Debug)]
pub(crate) enum ParameterWriteError {
    /// There is no such parameter file: the module is gone, or predates the parameter.
    Missing,
    /// Opening or writing failed: the kernel's answer (permissions, or the module's errno).
    Refused(io::Error),
}

/// A sysfs value without the newline the kernel ends it with.
pub(crate) fn one_line(text: &str) -> &str {
    text.strip_suffix('\n').unwrap_or(text)
}

/// A counter file's value: a decimal u64 and a newline.
fn parse_counter(text: &str) -> Option<u64> {
    let digits = one_line(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads a whole sysfs file. Missing, or vanishing under an unloading module (ENODEV), is
/// `None`; a root-only file read by another user is [`Failure::PermissionDenied`].
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, Failure> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(err) if is_gone(&err) => Ok(None),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => Err(
            Failure::PermissionDenied(format!("reading {} needs root", path.display())),
        ),
        Err(err) => Err(Failure::Runtime(format!(
            "cannot read {}: {err}",
            path.display()
        ))),
    }
}

/// The file is not there, or the module behind it is going away.
pub(crate) fn is_gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || Errno::from_io_error(err) == Some(Errno::NODEV)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_sysfs::FakeSysfs;

    #[test]
    fn counters_parse_strictly() {
        assert_eq!(parse_counter("0\n"), Some(0));
        assert_eq!(parse_counter("18446744073709551615\n"), Some(u64::MAX));
        for bad in [
            "",
            "\n",
            "-1\n",
            "1 \n",
            "+1\n",
            "18446744073709551616\n",
            "0x10\n",
        ] {
            assert_eq!(parse_counter(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn missing_files_are_not_available_and_bad_values_are_errors() {
        let fake = FakeSysfs::loaded();
        let sysfs = Sysfs::new(fake.root());
        assert_eq!(sysfs.read_counter("bus_locks"), Ok(Some(0)));
        fake.remove("sys/kernel/amd_sld/dropped");
        assert_eq!(sysfs.read_counter("dropped"), Ok(None));
        fake.remove("sys/module/amd_sld/parameters/source");
        assert_eq!(sysfs.read_parameter(Parameter::Source), Ok(None));
        fake.write("sys/kernel/amd_sld/killed", "many\n");
        let err = sysfs.read_counter("killed").unwrap_err();
        assert!(err.to_string().contains("found \"many\\x0a\""), "{err}");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn module_presence_is_the_module_directory() {
        let fake = FakeSysfs::empty();
        let sysfs = Sysfs::new(fake.root());
        assert!(!sysfs.module_loaded());
        assert_eq!(sysfs.require_loaded().unwrap_err().exit_code(), 3);
        let fake = FakeSysfs::loaded();
        assert!(Sysfs::new(fake.root()).module_loaded());
    }

    #[test]
    fn writing_never_creates_a_parameter() {
        let fake = FakeSysfs::loaded();
        let sysfs = Sysfs::new(fake.root());
        sysfs.write_parameter(Parameter::Policy, "off").unwrap();
        assert_eq!(
            fake.read("sys/module/amd_sld/parameters/split_lock_detect"),
            "off\n"
        );
        fake.remove("sys/module/amd_sld/parameters/source");
        let err = sysfs.write_parameter(Parameter::Source, "pmu").unwrap_err();
        assert!(matches!(err, ParameterWriteError::Missing), "{err:?}");
        assert!(!sysfs.parameter_path(Parameter::Source).exists());
    }
}
