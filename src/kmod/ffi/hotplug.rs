// SPDX-License-Identifier: GPL-2.0

//! A dynamic CPU hotplug state.

use kernel::bindings;
use kernel::error::{to_result, Result};
use kernel::ffi::{c_int, c_uint};
use kernel::str::CStr;

use super::errno_of;

/// A dynamic CPU hotplug state whose callbacks are `crate::arming::on_cpu_online` and
/// `crate::arming::on_cpu_offline`.
///
/// # Invariants
///
/// `state` is the state number `__cpuhp_setup_state()` returned; removed on drop.
pub(crate) struct CpuHotplug {
    state: c_int,
}

/// # Safety
///
/// Called by the CPU hotplug core only.
unsafe extern "C" fn hotplug_online(cpu: c_uint) -> c_int {
    errno_of(crate::arming::on_cpu_online(cpu))
}

/// # Safety
///
/// Called by the CPU hotplug core only.
unsafe extern "C" fn hotplug_offline(cpu: c_uint) -> c_int {
    crate::arming::on_cpu_offline(cpu);
    0
}

impl CpuHotplug {
    /// Registers the callbacks and runs the online one on every online CPU now; on error,
    /// the kernel runs the offline one on the CPUs already done and nothing stays registered.
    pub(crate) fn register(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is a static C string; the callbacks have the required signature and
        // live as long as the module, which removes the state before it goes away.
        let state = unsafe {
            bindings::__cpuhp_setup_state(
                bindings::cpuhp_state_CPUHP_AP_ONLINE_DYN,
                name.as_char_ptr(),
                true,
                Some(hotplug_online),
                Some(hotplug_offline),
                false,
            )
        };
        to_result(state)?;
        Ok(CpuHotplug { state })
    }
}

impl Drop for CpuHotplug {
    fn drop(&mut self) {
        // SAFETY: by the type invariant, `state` is ours and still set up.
        unsafe { bindings::__cpuhp_remove_state(self.state, true) };
    }
}
