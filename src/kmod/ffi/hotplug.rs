// SPDX-License-Identifier: GPL-2.0

//! A dynamic CPU hotplug state.

use core::ffi::CStr;

use kernel::bindings;
use kernel::error::{to_result, Result};
use kernel::ffi::{c_int, c_uint};

use super::errno_of;

/// What a CPU hotplug state does as each CPU comes and goes.
pub(crate) trait HotplugHandler {
    /// A CPU came online (or, at registration, is online); an error fails the bring-up
    /// (at registration: the registration).
    fn online(cpu: u32) -> Result;
    /// A CPU is going offline (or, at removal, every online CPU).
    fn offline(cpu: u32);
}

/// A dynamic CPU hotplug state whose callbacks are those of a [`HotplugHandler`].
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
unsafe extern "C" fn hotplug_online<H: HotplugHandler>(cpu: c_uint) -> c_int {
    errno_of(H::online(cpu))
}

/// # Safety
///
/// Called by the CPU hotplug core only.
unsafe extern "C" fn hotplug_offline<H: HotplugHandler>(cpu: c_uint) -> c_int {
    H::offline(cpu);
    0
}

impl CpuHotplug {
    /// Registers the callbacks and runs the online one on every online CPU now; on error,
    /// the kernel runs the offline one on the CPUs already done and nothing stays registered.
    pub(crate) fn register<H: HotplugHandler>(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is a static C string; the callbacks have the required signature and
        // live as long as the module, which removes the state before it goes away.
        let state = unsafe {
            bindings::__cpuhp_setup_state(
                bindings::cpuhp_state_CPUHP_AP_ONLINE_DYN,
                name.as_ptr().cast(),
                true,
                Some(hotplug_online::<H>),
                Some(hotplug_offline::<H>),
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
