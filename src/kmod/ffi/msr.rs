// SPDX-License-Identifier: GPL-2.0

//! Model-specific registers, read and written on the CPU they belong to.

use core::ptr;

use kernel::bindings;
use kernel::error::{code, to_result, Error, Result};
use kernel::ffi::{c_int, c_void};

// Forwarders to kernel static inlines, in glue.c.
extern "C" {
    fn amd_sld_rdmsr_safe(msr: u32, value: *mut u64) -> c_int;
    fn amd_sld_wrmsr_safe(msr: u32, value: u64) -> c_int;
}

/// The outcome of a read-modify-write of an MSR on one CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MsrUpdate {
    /// The value found.
    pub(crate) before: u64,
    /// The value read back after the write.
    pub(crate) after: u64,
}

struct MsrCall {
    msr: u32,
    update: fn(u64) -> u64,
    result: core::result::Result<MsrUpdate, c_int>,
}

/// Runs on the target CPU with interrupts off, so that nothing on that CPU (a context
/// switch toggling DEBUGCTL.BTF, say) can slip in between the read and the write.
///
/// # Safety
///
/// `info` must point to an `MsrCall` that nothing else accesses during the call.
unsafe extern "C" fn msr_update_here(info: *mut c_void) {
    // SAFETY: `msr_update_on` passes its exclusive `MsrCall` and waits for us to finish.
    let call = unsafe { &mut *info.cast::<MsrCall>() };
    let mut before = 0;
    // SAFETY: the `_safe` MSR accessors catch the #GP of a missing MSR and return an error.
    let status = unsafe { amd_sld_rdmsr_safe(call.msr, &mut before) };
    if status != 0 {
        call.result = Err(status);
        return;
    }
    let wanted = (call.update)(before);
    if wanted != before {
        // SAFETY: as above.
        let status = unsafe { amd_sld_wrmsr_safe(call.msr, wanted) };
        if status != 0 {
            call.result = Err(status);
            return;
        }
    }
    let mut after = 0;
    // SAFETY: as above.
    let status = unsafe { amd_sld_rdmsr_safe(call.msr, &mut after) };
    call.result = if status == 0 {
        Ok(MsrUpdate { before, after })
    } else {
        Err(status)
    };
}

/// Reads an MSR on `cpu`, writes `update(value)` back if that differs, and reads it again,
/// all on that CPU with interrupts off. A missing MSR is an error, not a crash.
pub(crate) fn msr_update_on(cpu: u32, msr: u32, update: fn(u64) -> u64) -> Result<MsrUpdate> {
    let mut call = MsrCall {
        msr,
        update,
        result: Err(code::EIO.to_errno()),
    };
    let cpu = c_int::try_from(cpu).map_err(|_| code::EINVAL)?;
    // SAFETY: `wait` is 1, so `call` outlives the remote function; `msr_update_here` has the
    // `smp_call_func_t` signature; callers run in process context, as the function requires.
    let status = unsafe {
        bindings::smp_call_function_single(
            cpu,
            Some(msr_update_here),
            ptr::addr_of_mut!(call).cast(),
            1,
        )
    };
    to_result(status)?;
    call.result.map_err(Error::from_errno)
}
