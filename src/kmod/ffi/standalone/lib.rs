// SPDX-License-Identifier: GPL-2.0

//! The subset of the Rust-for-Linux `kernel` crate that amd_sld uses, for kernels built
//! without `CONFIG_RUST` (Debian 11, 12 and 13: 5.10, 6.1, 6.12).
//!
//! amd_sld's `ffi/` layer is written against the `kernel` crate. On a kernel without Rust
//! support there is no such crate to link against, so this one stands in for it under the
//! same name, with the same paths and signatures, over bindgen output of the target
//! kernel's own headers (`bindings`) and the C helpers of `helpers.c` (what the kernel's
//! `rust/helpers/` provide in-tree). The domain code above `ffi/` compiles unchanged.
//!
//! Built by `scripts/standalone-build`, linked into a C Kbuild module (`Kbuild`).

#![no_std]

pub mod alloc;
pub mod bindings;
pub mod error;
pub mod print;

/// C types, as the `kernel` crate names them; also what bindgen's output refers to.
#[allow(non_camel_case_types)]
pub mod ffi {
    pub use core::ffi::{
        c_int, c_longlong, c_schar, c_short, c_uchar, c_uint, c_ulonglong, c_ushort, c_void,
    };

    /// `char`, unsigned as the `kernel` crate has it on every architecture (the kernel
    /// builds with `-funsigned-char` since 6.2); amd_sld never passes one by value.
    pub type c_char = u8;
    /// `long`, pointer-sized in the kernel, as the `kernel` crate maps it.
    pub type c_long = isize;
    /// `unsigned long`, pointer-sized in the kernel, as the `kernel` crate maps it.
    pub type c_ulong = usize;
}

/// What `use kernel::prelude::*` brings into the crate root.
pub mod prelude {
    pub use crate::error::{Error, Result};
    pub use crate::{module, Module, ThisModule};
}

/// This module's `struct module`, as `THIS_MODULE` in C.
pub struct ThisModule(*mut bindings::module);

// SAFETY: the kernel owns `struct module` and serialises changes to it; this type only hands
// the pointer to kernel functions that take their own locks.
unsafe impl Sync for ThisModule {}

impl ThisModule {
    /// # Safety
    ///
    /// `ptr` must be this module's `__this_module`, which lives as long as the module.
    pub const unsafe fn from_ptr(ptr: *mut bindings::module) -> ThisModule {
        ThisModule(ptr)
    }

    /// The `struct module` pointer, for kernel calls.
    pub const fn as_ptr(&self) -> *mut bindings::module {
        self.0
    }
}

/// A loadable module: built by `init` at `insmod`, dropped at `rmmod`.
pub trait Module: Sized + Sync + Send {
    /// Sets the module up; an error fails the load with its errno.
    fn init(module: &'static ThisModule) -> error::Result<Self>;
}

/// Holds the module instance between `init_module` and `cleanup_module`, which the kernel
/// calls once each and never concurrently.
#[doc(hidden)]
pub struct ModuleSlot<T>(core::cell::UnsafeCell<Option<T>>);

// SAFETY: written only by `init_module` and `cleanup_module`, which the module loader
// serialises (the first happens before the second, or the second never runs).
unsafe impl<T> Sync for ModuleSlot<T> {}

impl<T: Module> ModuleSlot<T> {
    #[doc(hidden)]
    pub const fn new() -> Self {
        ModuleSlot(core::cell::UnsafeCell::new(None))
    }

    #[doc(hidden)]
    pub fn init(&self, module: &'static ThisModule) -> ffi::c_int {
        match T::init(module) {
            Ok(instance) => {
                // SAFETY: `init_module` runs once, before anything else touches the slot.
                unsafe { *self.0.get() = Some(instance) };
                0
            }
            Err(error) => error.to_errno(),
        }
    }

    #[doc(hidden)]
    pub fn exit(&self) {
        // SAFETY: `cleanup_module` runs once, after a successful `init_module`.
        drop(unsafe { (*self.0.get()).take() });
    }
}

/// Copies a string into a fixed array at compile time, for `.modinfo`.
#[doc(hidden)]
pub const fn modinfo<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Declares the module, as the `kernel` crate's `module!`: the entry points the kernel
/// calls, `THIS_MODULE`, and the `.modinfo` strings `modinfo` shows.
#[macro_export]
macro_rules! module {
    (type: $type:ty, name: $name:literal, description: $description:literal, license: $license:literal $(,)?) => {
        extern "C" {
            static mut __this_module: $crate::bindings::module;
        }

        // SAFETY: `__this_module` is this module's own, emitted by modpost; it outlives
        // every use.
        static THIS_MODULE: $crate::ThisModule =
            unsafe { $crate::ThisModule::from_ptr(core::ptr::addr_of_mut!(__this_module)) };

        static __MODULE_INSTANCE: $crate::ModuleSlot<$type> = $crate::ModuleSlot::new();

        /// Called by the module loader, once.
        #[no_mangle]
        #[link_section = ".init.text"]
        pub extern "C" fn init_module() -> $crate::ffi::c_int {
            __MODULE_INSTANCE.init(&THIS_MODULE)
        }

        /// Called by the module loader at unload, once, after a successful `init_module`.
        #[no_mangle]
        #[link_section = ".exit.text"]
        pub extern "C" fn cleanup_module() {
            __MODULE_INSTANCE.exit()
        }

        // `used(compiler)`: a plain `#[used]` marks the section SHF_GNU_RETAIN, and the
        // linker would then keep it apart from C's `.modinfo`, where modpost looks.
        // Address-taken, as C's module_init() makes them: with IBT, objtool checks that an
        // ENDBR function is a real indirect call target.
        #[doc(hidden)]
        #[used(compiler)]
        #[link_section = ".init.data"]
        static __UNIQUE_ID___addressable_init_module: extern "C" fn() -> $crate::ffi::c_int =
            init_module;
        #[doc(hidden)]
        #[used(compiler)]
        #[link_section = ".exit.data"]
        static __UNIQUE_ID___addressable_cleanup_module: extern "C" fn() = cleanup_module;

        const _: () = {
            const LICENSE: &str = concat!("license=", $license, "\0");
            const DESCRIPTION: &str = concat!("description=", $description, "\0");
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static MODINFO_LICENSE: [u8; LICENSE.len()] = $crate::modinfo(LICENSE);
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static MODINFO_DESCRIPTION: [u8; DESCRIPTION.len()] = $crate::modinfo(DESCRIPTION);
        };
    };
}

/// A Rust panic is a bug in amd_sld: report it and stop the task with an oops, as `BUG()`.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    print::emerg(format_args!("{info}\n"));
    // SAFETY: `ud2` raises #UD, which the kernel turns into an oops of this task.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}
