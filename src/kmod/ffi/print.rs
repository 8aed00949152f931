// SPDX-License-Identifier: GPL-2.0

//! The kernel log: `pr_info!`, `pr_warn!` and `pr_err!` for the whole crate.
//!
//! Imported by name (`use crate::ffi::pr_info;`), they shadow the `kernel` prelude's
//! macros of the same names, which from 6.18 on format
//! their arguments through `kernel::fmt::Display` instead of `core::fmt::Display` (and
//! so reject this crate's types). These take `core::fmt` arguments on every kernel and
//! print them through the same `_printk()` call as the `kernel` crate's own.

use kernel::print::{call_printk, format_strings};

/// A kernel log level.
#[derive(Clone, Copy)]
pub(crate) enum Level {
    Info,
    Warning,
    Error,
}

/// The `%s` of a log line's prefix (printk's format is `"%s: %s"`): NUL-terminated.
#[derive(Clone, Copy)]
pub(crate) struct Prefix(&'static [u8]);

impl Prefix {
    /// `text` with its terminating NUL, checked at compile time where `const`.
    pub(crate) const fn new(text: &'static [u8]) -> Prefix {
        assert!(!text.is_empty() && text[text.len() - 1] == 0);
        Prefix(text)
    }
}

/// The module name (what `module!` generates as `__LOG_PREFIX`): amd_sld's own lines.
const LOG_PREFIX: Prefix = Prefix::new(b"amd_sld\0");

/// The `pr_fmt` of the kernel's own bus-lock handling (arch/x86/kernel/cpu/bus_lock.c from
/// 6.13 on, intel.c before): the trap's `warn` line carries it, so that alerts written for
/// the kernel's line match amd_sld's unchanged.
pub(crate) const KERNEL_SLD_PREFIX: Prefix = Prefix::new(b"x86/split lock detection\0");

/// Prints `args` at `level`, prefixed "amd_sld: ".
pub(crate) fn print(level: Level, args: core::fmt::Arguments<'_>) {
    print_as(LOG_PREFIX, level, args);
}

/// Prints `args` at `level`, prefixed `prefix` and ": ".
pub(crate) fn print_as(prefix: Prefix, level: Level, args: core::fmt::Arguments<'_>) {
    let format = match level {
        Level::Info => &format_strings::INFO,
        Level::Warning => &format_strings::WARNING,
        Level::Error => &format_strings::ERR,
    };
    // SAFETY: `format` is one of the kernel crate's fixed format strings, which take a
    // NUL-terminated prefix and a `fmt::Arguments`; a `Prefix` is NUL-terminated.
    unsafe { call_printk(format, prefix.0, args) };
}

/// Prints an info-level message, as the kernel crate's `pr_info!`.
macro_rules! pr_info {
    ($($arg:tt)+) => {
        $crate::ffi::print($crate::ffi::Level::Info, format_args!($($arg)+))
    };
}

/// Prints a warning-level message, as the kernel crate's `pr_warn!`.
macro_rules! pr_warn {
    ($($arg:tt)+) => {
        $crate::ffi::print($crate::ffi::Level::Warning, format_args!($($arg)+))
    };
}

/// Prints an error-level message, as the kernel crate's `pr_err!`.
macro_rules! pr_err {
    ($($arg:tt)+) => {
        $crate::ffi::print($crate::ffi::Level::Error, format_args!($($arg)+))
    };
}

/// Prints a warning-level message with another prefix than "amd_sld: " (a [`Prefix`]).
macro_rules! pr_warn_as {
    ($prefix:expr, $($arg:tt)+) => {
        $crate::ffi::print_as($prefix, $crate::ffi::Level::Warning, format_args!($($arg)+))
    };
}

pub(crate) use {pr_err, pr_info, pr_warn, pr_warn_as};
