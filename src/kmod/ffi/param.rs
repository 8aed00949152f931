// SPDX-License-Identifier: GPL-2.0

//! The module parameters' callbacks, and the module's parameter lock.

use kernel::bindings;
use kernel::error::{code, Result};
use kernel::ffi::{c_char, c_int};
use kernel::str::CStr;
use kernel::ThisModule;

use super::errno_of;
use crate::fmtbuf::SliceWriter;

/// Parses a parameter write with `store`.
///
/// # Safety
///
/// `value` is the NUL-terminated string the module parameter core passes to `set()`.
unsafe fn param_set(value: *const c_char, store: fn(&[u8]) -> Result) -> c_int {
    // SAFETY: the parameter core passes a valid NUL-terminated string (possibly empty).
    let bytes = unsafe { CStr::from_char_ptr(value) }.as_bytes();
    errno_of(store(bytes))
}

/// Renders a parameter read with `show`.
///
/// # Safety
///
/// `buffer` is the `PAGE_SIZE` buffer the module parameter core passes to `get()`.
unsafe fn param_get(
    buffer: *mut c_char,
    show: fn(&mut SliceWriter<'_>) -> core::fmt::Result,
) -> c_int {
    // SAFETY: `param_attr_show()` passes a buffer of `PAGE_SIZE` bytes.
    let page = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), bindings::PAGE_SIZE) };
    let mut out = SliceWriter::new(page);
    match show(&mut out) {
        Ok(()) => c_int::try_from(out.len()).unwrap_or(0),
        Err(_) => code::EINVAL.to_errno(),
    }
}

/// # Safety
///
/// Called by the module parameter core only, with `value` a NUL-terminated string.
#[no_mangle]
unsafe extern "C" fn amd_sld_policy_set(
    value: *const c_char,
    _param: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: the caller's contract is `param_set`'s.
    unsafe { param_set(value, crate::control::store) }
}

/// # Safety
///
/// Called by the module parameter core only, with a `PAGE_SIZE` buffer.
#[no_mangle]
unsafe extern "C" fn amd_sld_policy_get(
    buffer: *mut c_char,
    _param: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: the caller's contract is `param_get`'s.
    unsafe { param_get(buffer, crate::control::show) }
}

/// # Safety
///
/// Called by the module parameter core only, with `value` a NUL-terminated string.
#[no_mangle]
unsafe extern "C" fn amd_sld_source_set(
    value: *const c_char,
    _param: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: the caller's contract is `param_set`'s.
    unsafe { param_set(value, crate::control::store_source) }
}

/// # Safety
///
/// Called by the module parameter core only, with a `PAGE_SIZE` buffer.
#[no_mangle]
unsafe extern "C" fn amd_sld_source_get(
    buffer: *mut c_char,
    _param: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: the caller's contract is `param_get`'s.
    unsafe { param_get(buffer, crate::control::show_source) }
}

/// Holds this module's parameter lock, which the kernel also takes around every write of a
/// parameter through sysfs: it serialises amd_sld's start-up, shut-down and policy changes.
///
/// # Invariants
///
/// `kernel_param_lock(module)` is held from `lock()` until drop.
pub(crate) struct ParamLock(*mut bindings::module);

impl ParamLock {
    /// Takes the lock; may sleep.
    pub(crate) fn lock(module: &'static ThisModule) -> Self {
        let module = module.as_ptr();
        // SAFETY: `module` is this module, alive while its code runs; process context.
        unsafe { bindings::kernel_param_lock(module) };
        ParamLock(module)
    }
}

impl Drop for ParamLock {
    fn drop(&mut self) {
        // SAFETY: held by the type invariant.
        unsafe { bindings::kernel_param_unlock(self.0) };
    }
}
