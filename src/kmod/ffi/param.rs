// SPDX-License-Identifier: GPL-2.0

//! The module parameters' callbacks, dispatched to the handlers each parameter names, and
//! the module's parameter lock.

use core::fmt;

use kernel::bindings;
use kernel::error::{code, Result};
use kernel::ffi::{c_char, c_int};
use kernel::ThisModule;

use super::errno_of;
use crate::fmtbuf::SliceWriter;

/// What a module parameter does when written and read: the `arg` of its `kernel_param`.
///
/// glue.c declares each parameter with `module_param_cb()`, the ops `amd_sld_param_ops`
/// (`amd_sld_param_set`/`amd_sld_param_get` below) and, as `arg`, a `static ParamHandlers`
/// that the crate root exports under a C name. The statics are constants, fixed when the
/// module is linked: a parameter given at insmod, which the kernel parses before it runs
/// `init`, reaches its handler like any later write through sysfs.
pub(crate) struct ParamHandlers {
    store: fn(&[u8]) -> Result,
    show: fn(&mut SliceWriter<'_>) -> fmt::Result,
}

impl ParamHandlers {
    /// A parameter whose writes `store` parses and applies, and whose reads `show` renders.
    pub(crate) const fn new(
        store: fn(&[u8]) -> Result,
        show: fn(&mut SliceWriter<'_>) -> fmt::Result,
    ) -> Self {
        ParamHandlers { store, show }
    }
}

/// The handlers of `param`.
///
/// # Safety
///
/// `param` is a `kernel_param` declared in glue.c with `amd_sld_param_ops`, as the module
/// parameter core passes it to `set()` and `get()`.
unsafe fn handlers(param: *const bindings::kernel_param) -> &'static ParamHandlers {
    // SAFETY: by the caller's contract, `param` is live and its `arg` is the address of a
    // `static ParamHandlers` of the crate root (glue.c), which is never written.
    unsafe { &*(*param).__bindgen_anon_1.arg.cast::<ParamHandlers>() }
}

/// `set()` of `amd_sld_param_ops`: a write of `value` to the parameter.
///
/// # Safety
///
/// As for [`handlers`]; `value` is NUL-terminated.
#[no_mangle]
unsafe extern "C" fn amd_sld_param_set(
    value: *const c_char,
    param: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: the parameter core passes a valid NUL-terminated string (possibly empty), and
    // the `kernel_param` that `handlers` requires.
    let (bytes, handlers) = unsafe {
        (
            core::ffi::CStr::from_ptr(value.cast()).to_bytes(),
            handlers(param),
        )
    };
    errno_of((handlers.store)(bytes))
}

/// `get()` of `amd_sld_param_ops`: renders the parameter into `buffer`, one page.
///
/// # Safety
///
/// As for [`handlers`]; `buffer` has `PAGE_SIZE` bytes.
#[no_mangle]
unsafe extern "C" fn amd_sld_param_get(
    buffer: *mut c_char,
    param: *const bindings::kernel_param,
) -> c_int {
    // SAFETY: the caller's contract.
    let handlers = unsafe { handlers(param) };
    // SAFETY: `param_attr_show()` passes a buffer of `PAGE_SIZE` bytes.
    let page = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), bindings::PAGE_SIZE) };
    let mut out = SliceWriter::sysfs_page(page);
    match (handlers.show)(&mut out) {
        Ok(()) => c_int::try_from(out.len()).unwrap_or(0),
        Err(_) => code::EINVAL.to_errno(),
    }
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
