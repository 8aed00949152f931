// SPDX-License-Identifier: GPL-2.0

//! The kernel's boot command line.
//!
//! `saved_command_line` and `boot_command_line` are not exported to modules on x86 (6.12
//! exports `saved_command_line` on sparc only), so the line is read the way userspace does,
//! from `/proc/cmdline` (fs/proc/cmdline.c shows `saved_command_line`).

use kernel::bindings;
use kernel::error::{from_err_ptr, Result};
use kernel::ffi::c_int;

/// Reads the boot command line into `buffer`; returns the bytes read (a line longer than
/// `buffer` is cut). Process context (module init): opens `/proc/cmdline` in the caller's
/// mount namespace, so an error where /proc is not mounted.
pub(crate) fn read_boot_command_line(buffer: &mut [u8]) -> Result<usize> {
    // SAFETY: a static NUL-terminated path; process context.
    let file = from_err_ptr(unsafe {
        bindings::filp_open(
            c"/proc/cmdline".as_ptr().cast(),
            bindings::O_RDONLY as c_int,
            0,
        )
    })?;
    let mut pos: bindings::loff_t = 0;
    // SAFETY: `file` is open; `buffer` is writable for its length; `pos` is ours.
    let read =
        unsafe { bindings::kernel_read(file, buffer.as_mut_ptr().cast(), buffer.len(), &mut pos) };
    // SAFETY: `file` was opened above and is closed once; no owner id (not a task's file).
    unsafe { bindings::filp_close(file, core::ptr::null_mut()) };
    usize::try_from(read).map_err(|_| kernel::error::Error::from_errno(read as c_int))
}
