// SPDX-License-Identifier: GPL-2.0

//! The kernel log, as `kernel::print`'s `call_printk()`.
//!
//! The in-tree crate prints `fmt::Arguments` with printk's `%pA`, which exists only in
//! kernels built with `CONFIG_RUST`. Here the message is formatted into a buffer on the
//! stack first and printed with `%s`; a longer message is cut, as printk would cut it.

use core::ffi::{c_char, c_int};
use core::fmt::{self, Write};

extern "C" {
    /// helpers.c: `printk(format, prefix, message)`; `printk` is a macro since 5.15.
    fn amd_sld_kernel_printk(
        format: *const c_char,
        prefix: *const c_char,
        message: *const c_char,
    ) -> c_int;
}

/// printk formats of each level: a `%s` prefix (the module name), then the message.
pub mod format_strings {
    /// Format strings' length, as the `kernel` crate's.
    pub const LENGTH: usize = 10;
    /// `KERN_EMERG "%s: %s"`.
    pub const EMERG: [u8; LENGTH] = *b"\x010%s: %s\0\0";
    /// `KERN_ERR "%s: %s"`.
    pub const ERR: [u8; LENGTH] = *b"\x013%s: %s\0\0";
    /// `KERN_WARNING "%s: %s"`.
    pub const WARNING: [u8; LENGTH] = *b"\x014%s: %s\0\0";
    /// `KERN_INFO "%s: %s"`.
    pub const INFO: [u8; LENGTH] = *b"\x016%s: %s\0\0";
}

/// Bytes of one message: printk's own record limit (`PRINTKRN_RECORD_MAX`, 1024) less its
/// prefix, and small enough for any stack amd_sld prints from (NMI included).
const MESSAGE_MAX: usize = 512;

/// A NUL-terminated message being formatted; cut at [`MESSAGE_MAX`] - 1 bytes.
struct Message {
    bytes: [u8; MESSAGE_MAX],
    len: usize,
}

impl Write for Message {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = MESSAGE_MAX - 1 - self.len;
        let take = text.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Prints `args` with `format_string` (one of [`format_strings`]), prefixed `module_name`.
///
/// # Safety
///
/// `module_name` must be NUL-terminated, as for the `kernel` crate's `call_printk()`.
pub unsafe fn call_printk(
    format_string: &[u8; format_strings::LENGTH],
    module_name: &[u8],
    args: fmt::Arguments<'_>,
) {
    let mut message = Message {
        bytes: [0; MESSAGE_MAX],
        len: 0,
    };
    // `Message` never fails; a `Display` that fails leaves what it wrote so far.
    let _ = message.write_fmt(args);
    message.bytes[message.len] = 0;
    // SAFETY: the format is one of ours, taking two NUL-terminated strings; `module_name`
    // is NUL-terminated by the caller's contract and `message` by the line above.
    unsafe {
        amd_sld_kernel_printk(
            format_string.as_ptr().cast(),
            module_name.as_ptr().cast(),
            message.bytes.as_ptr().cast(),
        )
    };
}

/// Prints an emergency message (the panic handler's).
pub(crate) fn emerg(args: fmt::Arguments<'_>) {
    // SAFETY: the prefix is NUL-terminated.
    unsafe { call_printk(&format_strings::EMERG, b"amd_sld\0", args) };
}
