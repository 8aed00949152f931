// SPDX-License-Identifier: GPL-2.0

//! Kernel errors (`-errno`), as `kernel::error`.

use core::ffi::c_int;

use crate::bindings;

/// A kernel error: an errno in `1..=MAX_ERRNO`, kept positive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error(c_int);

/// `MAX_ERRNO` of include/linux/err.h.
const MAX_ERRNO: c_int = 4095;

impl Error {
    /// The error of a negative errno; anything else is a caller bug, reported as `EINVAL`
    /// as the `kernel` crate does.
    pub fn from_errno(errno: c_int) -> Error {
        if (-MAX_ERRNO..0).contains(&errno) {
            Error(-errno)
        } else {
            code::EINVAL
        }
    }

    /// The negative errno the kernel expects.
    pub fn to_errno(self) -> c_int {
        -self.0
    }
}

/// `Result` with [`Error`], as `kernel::error::Result`.
pub type Result<T = (), E = Error> = core::result::Result<T, E>;

/// `Ok(())` for zero, the error for a negative errno.
pub fn to_result(status: c_int) -> Result {
    if status < 0 {
        Err(Error::from_errno(status))
    } else {
        Ok(())
    }
}

/// The pointer, or the error an `ERR_PTR()` carries.
pub fn from_err_ptr<T>(ptr: *mut T) -> Result<*mut T> {
    let value = ptr as isize;
    if (-(MAX_ERRNO as isize)..0).contains(&value) {
        Err(Error::from_errno(value as c_int))
    } else {
        Ok(ptr)
    }
}

/// The errors amd_sld returns, as `kernel::error::code`.
pub mod code {
    use super::{bindings, Error};

    /// Error `E2BIG`.
    pub const E2BIG: Error = Error(bindings::E2BIG as _);
    /// Error `EBUSY`.
    pub const EBUSY: Error = Error(bindings::EBUSY as _);
    /// Error `EINVAL`.
    pub const EINVAL: Error = Error(bindings::EINVAL as _);
    /// Error `EIO`.
    pub const EIO: Error = Error(bindings::EIO as _);
    /// Error `ENODEV`.
    pub const ENODEV: Error = Error(bindings::ENODEV as _);
    /// Error `ENOENT`.
    pub const ENOENT: Error = Error(bindings::ENOENT as _);
    /// Error `ENOMEM`.
    pub const ENOMEM: Error = Error(bindings::ENOMEM as _);
}

impl From<crate::alloc::AllocError> for Error {
    fn from(_: crate::alloc::AllocError) -> Error {
        code::ENOMEM
    }
}

// The codes are the kernel's, read from its headers.
const _: () = assert!(bindings::EINVAL == 22 && bindings::ENOMEM == 12);
