//! Pure decision logic of amd_sld, shared verbatim by the kernel module and the host tools.
//!
//! Nothing in this crate touches hardware, allocates or depends on the kernel: the kernel
//! module mounts these very files with `#[path]` (see `src/kmod/amd_sld.rs`), so each module
//! must compile both here (`no_std`, tested with `cargo test`) and inside the kernel crate,
//! and refers to its siblings only through `crate::`.
#![no_std]

pub mod capability;
pub mod cpulist;
pub mod dr6;
pub mod escape;
pub mod eventlog;
pub mod fmtbuf;
pub mod mapcache;
pub mod pmu;
pub mod policy;
pub mod ratelimit;
pub mod record;
pub mod x86;
