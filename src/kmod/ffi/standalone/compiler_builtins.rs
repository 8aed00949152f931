// SPDX-License-Identifier: GPL-2.0

//! The `compiler_builtins` crate every `no_std` crate links, empty as the kernel's own
//! (rust/compiler_builtins.rs): the kernel has no 128-bit or floating-point helpers, and
//! amd_sld uses neither, so a call to one fails the link rather than running.

#![allow(internal_features)]
#![feature(compiler_builtins)]
#![compiler_builtins]
#![no_builtins]
#![no_std]
