// SPDX-License-Identifier: GPL-2.0

//! Heap allocations with `kmalloc()`, as `kernel::alloc`'s `KBox` and `KVec`.

use core::ffi::c_void;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use crate::bindings;

extern "C" {
    /// helpers.c: `kmalloc()`, a static inline whose out-of-line name changed in 6.10.
    fn amd_sld_kernel_kmalloc(size: usize, flags: bindings::gfp_t) -> *mut c_void;
    fn kfree(ptr: *const c_void);
}

/// An allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError;

/// Allocation flags, as `kernel::alloc::flags`.
pub mod flags {
    use crate::bindings;

    /// `GFP_KERNEL`: may sleep.
    pub const GFP_KERNEL: bindings::gfp_t = bindings::GFP_KERNEL;
    /// `GFP_ATOMIC`: never sleeps.
    pub const GFP_ATOMIC: bindings::gfp_t = bindings::GFP_ATOMIC;
}

fn allocate<T>(count: usize, flags: bindings::gfp_t) -> Result<NonNull<T>, AllocError> {
    // kmalloc() aligns to at least ARCH_KMALLOC_MINALIGN (8 on x86-64) and to the size's
    // power of two up to a page; nothing here needs more than 8.
    const { assert!(core::mem::align_of::<T>() <= 8) };
    let size = core::mem::size_of::<T>()
        .checked_mul(count)
        .ok_or(AllocError)?
        .max(1);
    // SAFETY: kmalloc() takes any size and flags from the caller's context.
    NonNull::new(unsafe { amd_sld_kernel_kmalloc(size, flags) }.cast()).ok_or(AllocError)
}

/// A `kmalloc()`ed `T`, freed on drop.
///
/// # Invariants
///
/// `0` points to a valid `T` in memory from `kmalloc()` that this box owns.
pub struct KBox<T>(NonNull<T>);

// SAFETY: owns its `T` as `Box` does.
unsafe impl<T: Send> Send for KBox<T> {}
// SAFETY: shares its `T` as `Box` does.
unsafe impl<T: Sync> Sync for KBox<T> {}

impl<T> KBox<T> {
    /// Moves `value` to the heap.
    pub fn new(value: T, flags: bindings::gfp_t) -> Result<KBox<T>, AllocError> {
        let ptr = allocate::<T>(1, flags)?;
        // SAFETY: `ptr` is fresh, aligned and large enough for a `T`.
        unsafe { ptr.as_ptr().write(value) };
        Ok(KBox(ptr))
    }

    /// Gives up ownership; [`KBox::from_raw`] takes it back.
    pub fn into_raw(this: KBox<T>) -> *mut T {
        let ptr = this.0.as_ptr();
        core::mem::forget(this);
        ptr
    }

    /// # Safety
    ///
    /// `ptr` must come from [`KBox::into_raw`] and not have been taken back yet.
    pub unsafe fn from_raw(ptr: *mut T) -> KBox<T> {
        // SAFETY: by the caller's contract, `ptr` is a live box's pointer, hence non-null.
        KBox(unsafe { NonNull::new_unchecked(ptr) })
    }
}

impl<T> Deref for KBox<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: by the type invariant.
        unsafe { self.0.as_ref() }
    }
}

impl<T> DerefMut for KBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: by the type invariant; `&mut self` makes the access unique.
        unsafe { self.0.as_mut() }
    }
}

impl<T> Drop for KBox<T> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the `T` is valid and ours; it is dropped once, then
        // its memory is returned to kmalloc().
        unsafe {
            self.0.as_ptr().drop_in_place();
            kfree(self.0.as_ptr().cast());
        }
    }
}

/// A `kmalloc()`ed array of a length fixed at creation (all amd_sld needs of `KVec`).
///
/// # Invariants
///
/// `ptr` points to `len` valid `T`s in memory from `kmalloc()` that this vector owns.
pub struct KVec<T> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: owns its `T`s as `Vec` does.
unsafe impl<T: Send> Send for KVec<T> {}
// SAFETY: shares its `T`s as `Vec` does.
unsafe impl<T: Sync> Sync for KVec<T> {}

impl<T: Clone> KVec<T> {
    /// `n` clones of `value`.
    pub fn from_elem(value: T, n: usize, flags: bindings::gfp_t) -> Result<KVec<T>, AllocError> {
        let ptr = allocate::<T>(n, flags)?;
        for i in 0..n {
            // SAFETY: `i < n`, inside the fresh allocation for `n` `T`s.
            unsafe { ptr.as_ptr().add(i).write(value.clone()) };
        }
        Ok(KVec { ptr, len: n })
    }
}

impl<T> Deref for KVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: by the type invariant.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for KVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: by the type invariant; `&mut self` makes the access unique.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for KVec<T> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the `T`s are valid and ours; they are dropped once,
        // then the memory is returned to kmalloc().
        unsafe {
            core::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len).drop_in_place();
            kfree(self.ptr.as_ptr().cast());
        }
    }
}
