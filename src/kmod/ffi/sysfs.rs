// SPDX-License-Identifier: GPL-2.0

//! /sys/kernel/amd_sld.

use core::ptr::{self, NonNull};

use kernel::bindings;
use kernel::error::{code, to_result, Result};
use kernel::ffi::c_char;
use kernel::str::CStr;

use super::KernelOwned;
use crate::fmtbuf::SliceWriter;

/// A read-only sysfs attribute whose `show()` renders `crate::stats::Stat::ALL[I]`.
// Lockdep kernels add fields to `struct attribute` that the update fills; others do not.
#[allow(clippy::needless_update)]
const fn stat_attribute<const I: usize>() -> KernelOwned<bindings::kobj_attribute> {
    KernelOwned::new(bindings::kobj_attribute {
        attr: bindings::attribute {
            name: crate::stats::Stat::ALL[I].name().as_char_ptr(),
            mode: crate::stats::Stat::ALL[I].mode(),
            // SAFETY: the remaining fields (lockdep keys) are valid when zeroed, as for
            // every statically allocated attribute.
            ..unsafe { core::mem::zeroed() }
        },
        show: Some(show_stat::<I>),
        store: None,
    })
}

/// # Safety
///
/// Called by sysfs only, with a `PAGE_SIZE` buffer.
unsafe extern "C" fn show_stat<const I: usize>(
    _kobj: *mut bindings::kobject,
    _attr: *mut bindings::kobj_attribute,
    buffer: *mut c_char,
) -> isize {
    // SAFETY: sysfs passes `show()` a buffer of `PAGE_SIZE` bytes.
    let page = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), bindings::PAGE_SIZE) };
    let mut out = SliceWriter::new(page);
    match crate::stats::Stat::ALL[I].render(&mut out) {
        Ok(()) => isize::try_from(out.len()).unwrap_or(0),
        Err(_) => code::E2BIG.to_errno() as isize,
    }
}

/// The attributes of every `crate::stats::Stat`, and the NULL-terminated list of them that
/// the group takes: `kobj_attribute` starts with its `attribute`, so a pointer to one is a
/// pointer to the other. The array types fail to compile if an index is missing.
macro_rules! stat_attributes {
    ($($index:literal)*) => {
        static STAT_ATTRIBUTES: [KernelOwned<bindings::kobj_attribute>; crate::stats::Stat::ALL.len()] =
            [$(stat_attribute::<$index>(),)*];
        static STAT_ATTRIBUTE_LIST: KernelOwned<[*mut bindings::attribute; crate::stats::Stat::ALL.len() + 1]> =
            KernelOwned::new([$(STAT_ATTRIBUTES[$index].get().cast(),)* ptr::null_mut()]);
    };
}

stat_attributes!(0 1 2 3 4 5 6 7 8 9 10);

static STAT_GROUP: KernelOwned<bindings::attribute_group> =
    KernelOwned::new(bindings::attribute_group {
        attrs: STAT_ATTRIBUTE_LIST.get().cast(),
        // SAFETY: a group with no name, no visibility callbacks and no binary attributes is
        // the all-zero value apart from `attrs`.
        ..unsafe { core::mem::zeroed() }
    });

/// The directory `/sys/kernel/amd_sld` with one file per `crate::stats::Stat`.
///
/// # Invariants
///
/// `kobj` is a kobject we created and hold the only reference to.
pub(crate) struct SysfsDir {
    kobj: NonNull<bindings::kobject>,
}

// SAFETY: the kobject is only ever released, which the kernel allows from any thread.
unsafe impl Send for SysfsDir {}
// SAFETY: `SysfsDir` has no methods taking `&self`.
unsafe impl Sync for SysfsDir {}

impl SysfsDir {
    /// Creates the directory and its files.
    pub(crate) fn create(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is a static C string; `kernel_kobj` is /sys/kernel, alive forever.
        let kobj =
            unsafe { bindings::kobject_create_and_add(name.as_char_ptr(), bindings::kernel_kobj) };
        let kobj = NonNull::new(kobj).ok_or(code::ENOMEM)?;
        let dir = SysfsDir { kobj };
        // SAFETY: `kobj` is live; the group and its attributes are statics.
        to_result(unsafe { bindings::sysfs_create_group(dir.kobj.as_ptr(), STAT_GROUP.get()) })?;
        Ok(dir)
    }
}

impl Drop for SysfsDir {
    fn drop(&mut self) {
        // SAFETY: we hold the only reference (type invariant). Dropping it removes the
        // directory and waits for running `show()` calls to finish.
        unsafe { bindings::kobject_put(self.kobj.as_ptr()) };
    }
}
