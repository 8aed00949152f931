// SPDX-License-Identifier: GPL-2.0

//! Per-CPU storage: one `T` per possible CPU, in the kernel's per-CPU areas
//! (`__alloc_percpu()`), allocated at module start and freed at teardown.
//!
//! The storage hangs off a `static` [`PerCpu`] so that the #DB notifier and the PMU's NMI
//! handler reach it without an argument. [`PerCpu::start`] allocates it and returns the
//! [`PerCpuStorage`] that owns it; dropping that frees it. As Binder does with its
//! per-process state, the module keeps one invariant instead of a reference count on the hot
//! path: **the storage is dropped only after every user is gone** (the die notifier
//! unregistered, the PMU counters released, the deferred works drained, the sysfs files
//! removed), and the drop waits for an RCU grace period after unpublishing it, so that a
//! handler that ran with interrupts off or in NMI (both RCU read-side sections) and still
//! held a reference has returned. Before `start` and after the drop, [`PerCpu::this_cpu`]
//! and [`PerCpu::get`] answer `None`.

use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use kernel::error::{code, Result};
use kernel::ffi::{c_uint, c_void};

extern "C" {
    fn amd_sld_alloc_percpu(size: usize, align: usize) -> *mut c_void;
    fn amd_sld_free_percpu(ptr: *mut c_void);
    fn amd_sld_per_cpu_ptr(ptr: *mut c_void, cpu: c_uint) -> *mut c_void;
    fn amd_sld_this_cpu_ptr(ptr: *mut c_void) -> *mut c_void;
    fn amd_sld_cpu_possible(cpu: c_uint) -> bool;
    fn synchronize_rcu();
}

/// A type each CPU's copy of which starts as a constant (atomics, in practice).
pub(crate) trait ConstInit: Sync + Sized + 'static {
    /// The initial value of every CPU's copy.
    const INIT: Self;
}

/// A `T` per possible CPU, once [`start`](Self::start)ed.
///
/// # Invariants
///
/// `ptr` is null, or a per-CPU allocation of a `T` whose every possible CPU's copy is
/// initialised, owned by the one live [`PerCpuStorage`] of this `PerCpu`.
pub(crate) struct PerCpu<T: ConstInit> {
    ptr: AtomicPtr<c_void>,
    _values: PhantomData<T>,
}

/// Owns the storage of a [`PerCpu`]; frees it when dropped.
pub(crate) struct PerCpuStorage<T: ConstInit>(&'static PerCpu<T>);

impl<T: ConstInit> PerCpu<T> {
    /// Nothing allocated yet.
    pub(crate) const fn new() -> Self {
        PerCpu {
            ptr: AtomicPtr::new(ptr::null_mut()),
            _values: PhantomData,
        }
    }

    /// Allocates the storage, every possible CPU's `T` set to `T::INIT`. Process context.
    pub(crate) fn start(&'static self) -> Result<PerCpuStorage<T>> {
        const { assert!(!core::mem::needs_drop::<T>()) };
        let size = core::mem::size_of::<T>().max(1);
        // SAFETY: process context (module start); any size and a power-of-two alignment.
        let raw = unsafe { amd_sld_alloc_percpu(size, core::mem::align_of::<T>()) };
        if raw.is_null() {
            return Err(code::ENOMEM);
        }
        for cpu in possible_cpus() {
            // SAFETY: `cpu` is possible, so its copy exists, sized and aligned for a `T`,
            // and nobody else knows the allocation yet.
            unsafe { amd_sld_per_cpu_ptr(raw, cpu).cast::<T>().write(T::INIT) };
        }
        if self
            .ptr
            .compare_exchange(ptr::null_mut(), raw, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            // SAFETY: `raw` was never published; it is ours to free.
            unsafe { amd_sld_free_percpu(raw) };
            return Err(code::EBUSY);
        }
        Ok(PerCpuStorage(self))
    }

    /// This CPU's `T`, or `None` outside the storage's life. Meant for callers that cannot
    /// migrate (interrupts off, NMI); elsewhere it is some CPU's `T`, fine for atomics.
    /// The reference must not be kept beyond the caller's callback (module invariant).
    pub(crate) fn this_cpu(&self) -> Option<&T> {
        let raw = self.ptr.load(Ordering::Acquire);
        if raw.is_null() {
            return None;
        }
        // SAFETY: by the type invariant `raw` is a live per-CPU allocation of initialised
        // `T`s (the storage is freed only after every user is gone: module doc), and this
        // CPU is possible.
        Some(unsafe { &*amd_sld_this_cpu_ptr(raw).cast::<T>() })
    }

    /// CPU `cpu`'s `T`, if it is a possible CPU and the storage lives.
    pub(crate) fn get(&self, cpu: u32) -> Option<&T> {
        let raw = self.ptr.load(Ordering::Acquire);
        // SAFETY: reads the possible mask, written at boot.
        if raw.is_null() || !unsafe { amd_sld_cpu_possible(cpu) } {
            return None;
        }
        // SAFETY: as in `this_cpu`; `cpu` is possible, so its copy exists.
        Some(unsafe { &*amd_sld_per_cpu_ptr(raw, cpu).cast::<T>() })
    }

    /// Calls `visit` with every possible CPU's number and `T` (nothing outside the
    /// storage's life). For readers: process context.
    pub(crate) fn for_each_cpu(&self, mut visit: impl FnMut(u32, &T)) {
        for cpu in possible_cpus() {
            if let Some(value) = self.get(cpu) {
                visit(cpu, value);
            }
        }
    }
}

impl<T: ConstInit> Drop for PerCpuStorage<T> {
    fn drop(&mut self) {
        let raw = self.0.ptr.swap(ptr::null_mut(), Ordering::AcqRel);
        if raw.is_null() {
            return;
        }
        // SAFETY: process context (module teardown or a failed start).
        unsafe { synchronize_rcu() };
        // SAFETY: `raw` came from `amd_sld_alloc_percpu` and is unpublished; every user is
        // gone (module invariant) and the grace period covers handlers that loaded it.
        unsafe { amd_sld_free_percpu(raw) };
    }
}

/// The possible CPUs' numbers.
fn possible_cpus() -> impl Iterator<Item = u32> {
    // SAFETY: reads the possible mask, written at boot.
    (0..super::nr_cpu_ids()).filter(|&cpu| unsafe { amd_sld_cpu_possible(cpu) })
}
