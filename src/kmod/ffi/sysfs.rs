// SPDX-License-Identifier: GPL-2.0

//! /sys/kernel/amd_sld.

use core::ffi::CStr;
use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use kernel::bindings;
use kernel::error::{code, to_result, Result};
use kernel::ffi::{c_char, c_int};

// glue.c: `sysfs_create_group()` of a static group with these `attrs`. (In C: bindgen's
// view of `struct attribute_group` moves `attrs` into an anonymous union in later kernels.)
extern "C" {
    fn amd_sld_sysfs_create_group(
        kobj: *mut bindings::kobject,
        attrs: *mut *mut bindings::attribute,
    ) -> c_int;
}

use super::KernelOwned;
use crate::fmtbuf::SliceWriter;

/// One read-only file of a [`SysfsDir`]: its name, its mode and what it shows.
pub(crate) struct StatFile {
    name: &'static CStr,
    mode: u16,
    render: fn(&mut SliceWriter<'_>) -> fmt::Result,
}

impl StatFile {
    /// A file `name` with permissions `mode` whose contents `render` writes into the page
    /// that sysfs passes to `show()`.
    pub(crate) const fn new(
        name: &'static CStr,
        mode: u16,
        render: fn(&mut SliceWriter<'_>) -> fmt::Result,
    ) -> Self {
        StatFile { name, mode, render }
    }
}

/// Files a [`SysfsDir`] can hold.
const MAX_FILES: usize = 16;

/// The table of the live [`SysfsDir`], published before its files exist.
static FILES: AtomicPtr<StatFile> = AtomicPtr::new(ptr::null_mut());
static FILES_LEN: AtomicUsize = AtomicUsize::new(0);

/// Whether a [`SysfsDir`] owns the attributes below.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// A read-only sysfs attribute whose `show()` renders file `I` of the table; its name and
/// mode are filled in by [`SysfsDir::create`].
// Lockdep kernels add fields to `struct attribute` that the update fills; others do not.
#[allow(clippy::needless_update)]
const fn stat_attribute<const I: usize>() -> KernelOwned<bindings::kobj_attribute> {
    KernelOwned::new(bindings::kobj_attribute {
        attr: bindings::attribute {
            name: ptr::null(),
            mode: 0,
            // SAFETY: the remaining fields (lockdep keys) are valid when zeroed, as for
            // every statically allocated attribute.
            ..unsafe { core::mem::zeroed() }
        },
        show: Some(show_stat::<I>),
        store: None,
    })
}

/// The table published by [`SysfsDir::create`].
fn files() -> &'static [StatFile] {
    let table = FILES.load(Ordering::Acquire);
    if table.is_null() {
        return &[];
    }
    let len = FILES_LEN.load(Ordering::Relaxed);
    // SAFETY: `table` and `len` were stored together from a `&'static [StatFile]` by
    // `SysfsDir::create`, the length first, before the pointer was published.
    unsafe { core::slice::from_raw_parts(table, len) }
}

/// # Safety
///
/// Called by sysfs only, with a `PAGE_SIZE` buffer.
unsafe extern "C" fn show_stat<const I: usize>(
    _kobj: *mut bindings::kobject,
    _attr: *mut bindings::kobj_attribute,
    buffer: *mut c_char,
) -> isize {
    let Some(file) = files().get(I) else {
        return code::EINVAL.to_errno() as isize;
    };
    // SAFETY: sysfs passes `show()` a buffer of `PAGE_SIZE` bytes.
    let page = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), bindings::PAGE_SIZE) };
    let mut out = SliceWriter::sysfs_page(page);
    match (file.render)(&mut out) {
        Ok(()) => isize::try_from(out.len()).unwrap_or(0),
        Err(_) => code::E2BIG.to_errno() as isize,
    }
}

/// The attributes, and the NULL-terminated list of those in use that the group takes:
/// `kobj_attribute` starts with its `attribute`, so a pointer to one is a pointer to the
/// other. The array types fail to compile if an index is missing.
macro_rules! stat_attributes {
    ($($index:literal)*) => {
        static STAT_ATTRIBUTES: [KernelOwned<bindings::kobj_attribute>; MAX_FILES] =
            [$(stat_attribute::<$index>(),)*];
    };
}

stat_attributes!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);

static STAT_ATTRIBUTE_LIST: KernelOwned<[*mut bindings::attribute; MAX_FILES + 1]> =
    KernelOwned::new([ptr::null_mut(); MAX_FILES + 1]);

/// A directory in `/sys/kernel` with one read-only file per [`StatFile`] of a table.
///
/// # Invariants
///
/// `kobj` is a kobject we created and hold the only reference to. This directory is the
/// only owner of the attributes (`TAKEN`), which it filled in before creating the files.
pub(crate) struct SysfsDir {
    kobj: NonNull<bindings::kobject>,
}

// SAFETY: the kobject is only ever released, which the kernel allows from any thread.
unsafe impl Send for SysfsDir {}
// SAFETY: `SysfsDir` has no methods taking `&self`.
unsafe impl Sync for SysfsDir {}

impl SysfsDir {
    /// Creates `/sys/kernel/<name>` and a file for each of `files`, in order. One
    /// directory at a time (`-EBUSY` while another lives), of at most 16 files.
    pub(crate) fn create(name: &'static CStr, files: &'static [StatFile]) -> Result<Self> {
        if files.len() > MAX_FILES {
            return Err(code::EINVAL);
        }
        if TAKEN
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(code::EBUSY);
        }
        let list = STAT_ATTRIBUTE_LIST.get();
        for (index, attribute) in STAT_ATTRIBUTES.iter().enumerate() {
            let attribute = attribute.get();
            // SAFETY: no files exist and we own the attributes (`TAKEN`): nothing else reads
            // or writes them. `index < MAX_FILES`, inside the list of `MAX_FILES + 1`.
            unsafe {
                if let Some(file) = files.get(index) {
                    (*attribute).attr.name = file.name.as_ptr().cast();
                    (*attribute).attr.mode = file.mode;
                    (*list)[index] = attribute.cast();
                } else {
                    (*list)[index] = ptr::null_mut();
                }
            }
        }
        FILES_LEN.store(files.len(), Ordering::Relaxed);
        FILES.store(files.as_ptr().cast_mut(), Ordering::Release);
        // SAFETY: `name` is a static C string; `kernel_kobj` is /sys/kernel, alive forever.
        let kobj = unsafe {
            bindings::kobject_create_and_add(name.as_ptr().cast(), bindings::kernel_kobj)
        };
        let Some(kobj) = NonNull::new(kobj) else {
            TAKEN.store(false, Ordering::Release);
            return Err(code::ENOMEM);
        };
        let dir = SysfsDir { kobj };
        // SAFETY: `kobj` is live; the NULL-terminated list and its attributes are statics.
        to_result(unsafe { amd_sld_sysfs_create_group(dir.kobj.as_ptr(), list.cast()) })?;
        Ok(dir)
    }
}

impl Drop for SysfsDir {
    fn drop(&mut self) {
        // SAFETY: we hold the only reference (type invariant). Dropping it removes the
        // directory and waits for running `show()` calls to finish.
        unsafe { bindings::kobject_put(self.kobj.as_ptr()) };
        TAKEN.store(false, Ordering::Release);
    }
}
