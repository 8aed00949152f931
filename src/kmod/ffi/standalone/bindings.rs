// SPDX-License-Identifier: GPL-2.0

//! The target kernel's C interface, as `kernel::bindings`: bindgen output of its own
//! headers (`bindings_helper.h`, generated per kernel by `scripts/standalone-build`), and
//! the static inlines that the in-tree crate reaches through `rust/helpers/`, here through
//! `helpers.c`.

#![allow(
    clippy::all,
    clippy::ptr_as_ptr,
    clippy::ref_as_ptr,
    clippy::undocumented_unsafe_blocks,
    unreachable_pub,
    dead_code,
    improper_ctypes,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unsafe_op_in_unsafe_fn,
    unnecessary_transmutes,
    unpredictable_function_pointer_comparisons
)]

// Blocked in bindgen (scripts/standalone/bindgen-parameters), as in-tree: sizes are `usize`.
type __kernel_size_t = usize;
type __kernel_ssize_t = isize;
type __kernel_ptrdiff_t = isize;

include!(env!("AMD_SLD_BINDINGS"));

extern "C" {
    /// helpers.c: `current`.
    #[link_name = "amd_sld_kernel_get_current"]
    pub fn get_current() -> *mut task_struct;
}
