// SPDX-License-Identifier: GPL-2.0

//! Other modules: whether one is loaded, and the module notifier chain, on which a hook
//! hears each module come (and may fail its load) and go.
//!
//! `find_module()` is not exported to modules since 5.12 (nor `module_mutex`), and
//! `/proc/modules`, which lists COMING modules too, cannot be read from the kernel: its
//! `proc_read` is `seq_read`, without `read_iter`, and `kernel_read()` refuses such files
//! with `-EINVAL` since 5.10. So presence is `/sys/module/NAME`, which `load_module()`
//! creates after the COMING notifiers (`mod_sysfs_setup()`), and which also exists for a
//! built-in module with parameters. A module whose COMING notification ran before a hook was
//! registered (registering waits for a running chain call) but whose directory is not there
//! yet when the owner looks is reported to the hook at LIVE, after its init.

use core::ffi::CStr;

use kernel::bindings;
use kernel::error::{code, from_err_ptr, Result};
use kernel::ffi::{c_char, c_int, c_ulong, c_void};
use kernel::ThisModule;

use super::notifier::NotifierSlot;

extern "C" {
    /// glue.c: `mod->name` (struct module's layout is the kernel's, not ours).
    fn amd_sld_module_name(module: *const c_void) -> *const c_char;
}

// enum module_state and the notifier return encoding (linux/module.h, linux/notifier.h);
// pinned by static_asserts in glue.c.
const MODULE_STATE_LIVE: c_ulong = 0;
const MODULE_STATE_COMING: c_ulong = 1;
const MODULE_STATE_GOING: c_ulong = 2;
const NOTIFY_DONE: c_int = 0;
const NOTIFY_OK: c_int = 1;
const NOTIFY_STOP_MASK: c_int = 0x8000;

/// What to do as other modules come and go.
pub(crate) trait ModuleHandler {
    /// The module `name` is about to run its init (`MODULE_STATE_COMING`): called by
    /// `load_module()` (`prepare_coming_module()`) in the loading task's process context,
    /// after `complete_formation()` dropped `module_mutex` and before the module's parameters
    /// are parsed and its sysfs directory exists, with the module notifier chain's rwsem held
    /// for reading (5.10, 6.1 and 6.12 alike). May sleep; must not register or unregister a
    /// module notifier. An error fails that module's load with it: the chain is called with
    /// `blocking_notifier_call_chain_robust()`, which sends GOING to the notifiers called
    /// before this one, and the module's init never runs.
    fn coming(name: &[u8]) -> Result;

    /// The module `name` finished its init (`MODULE_STATE_LIVE`, from `do_init_module()`):
    /// its init already ran. Same context as [`ModuleHandler::coming`].
    fn live(name: &[u8]);

    /// The module `name` is going: being unloaded, or its load failed after a COMING that
    /// this hook let pass. Same context as [`ModuleHandler::coming`].
    fn going(name: &[u8]);
}

/// `notifier_from_errno()`, a static inline.
const fn notifier_from_errno(errno: c_int) -> c_int {
    NOTIFY_STOP_MASK | (NOTIFY_OK - errno)
}

/// # Safety
///
/// Called by the module notifier chain only, whose `data` is the `struct module` coming or
/// going.
unsafe extern "C" fn on_module<H: ModuleHandler>(
    _block: *mut bindings::notifier_block,
    action: c_ulong,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is a live `struct module` for the whole call (its loader or unloader
    // waits for the chain); its `name` is a NUL-terminated array inside it.
    let name = unsafe { CStr::from_ptr(amd_sld_module_name(data).cast()) }.to_bytes();
    match action {
        MODULE_STATE_COMING => match H::coming(name) {
            Ok(()) => NOTIFY_DONE,
            Err(error) => notifier_from_errno(error.to_errno()),
        },
        MODULE_STATE_LIVE => {
            H::live(name);
            NOTIFY_DONE
        }
        MODULE_STATE_GOING => {
            H::going(name);
            NOTIFY_DONE
        }
        _ => NOTIFY_DONE,
    }
}

/// The module's one module notifier block.
static MODULE_NOTIFIER: NotifierSlot = NotifierSlot::new();

/// A place on the module notifier chain.
///
/// # Invariants
///
/// `MODULE_NOTIFIER` is linked into the module notifier chain from `register()` until drop.
pub(crate) struct ModuleWatch(());

impl ModuleWatch {
    /// Starts calling `H` as modules come and go; one watch at a time. Process context; do
    /// not hold a lock that `H` takes (registering waits for running notifier calls).
    pub(crate) fn register<H: ModuleHandler>() -> Result<Self> {
        // SAFETY: `on_module::<H>` has the module notifier chain's callback contract and is
        // module text, which outlives the watch.
        unsafe { MODULE_NOTIFIER.link(on_module::<H>, bindings::register_module_notifier)? };
        Ok(ModuleWatch(()))
    }
}

impl Drop for ModuleWatch {
    /// Unregistering takes the chain's rwsem for writing, so it waits for a running
    /// callback: do not drop a watch while holding a lock that the callback takes.
    fn drop(&mut self) {
        // SAFETY: linked by the type invariant; a blocking chain: no call is running when
        // unregistering returns.
        unsafe { MODULE_NOTIFIER.unlink(bindings::unregister_module_notifier) };
    }
}

/// Whether the module `name` is loaded (past its COMING notifiers) or built in, by
/// `/sys/module/NAME`. Process context, in the `init` of the module `this`: opens it in the
/// caller's root and mount namespace, so first makes sure that `this` module's own
/// directory is visible there (`mod_sysfs_setup()` runs before `do_init_module()`); where
/// it is not (a chroot, a container, an early boot without /sys) the answer is unknown:
/// `ENOENT`.
pub(crate) fn module_present(name: &CStr, this: &ThisModule) -> Result<bool> {
    // SAFETY: `this` is a live module (its init is running); `name` is a NUL-terminated
    // array inside it.
    let own = unsafe { CStr::from_ptr(amd_sld_module_name(this.as_ptr().cast()).cast()) };
    if !sysfs_module_exists(own)? {
        return Err(code::ENOENT);
    }
    sysfs_module_exists(name)
}

/// Whether `/sys/module/NAME` exists: a loaded module past its COMING notifiers, or a
/// built-in one with parameters.
fn sysfs_module_exists(name: &CStr) -> Result<bool> {
    const PREFIX: &[u8] = b"/sys/module/";
    let name = name.to_bytes();
    let mut path = [0u8; 96];
    let end = PREFIX.len() + name.len();
    // Room for the NUL that follows (`path` is zeroed), and a name, not a path.
    if end >= path.len() || name.contains(&b'/') {
        return Err(code::EINVAL);
    }
    path[..PREFIX.len()].copy_from_slice(PREFIX);
    path[PREFIX.len()..end].copy_from_slice(name);
    // SAFETY: `path` is NUL-terminated (above); process context.
    let file = unsafe {
        bindings::filp_open(
            path.as_ptr().cast(),
            (bindings::O_RDONLY | bindings::O_DIRECTORY) as c_int,
            0,
        )
    };
    match from_err_ptr(file) {
        Ok(file) => {
            // SAFETY: opened just above, closed once; no owner id.
            unsafe { bindings::filp_close(file, core::ptr::null_mut()) };
            Ok(true)
        }
        Err(error) if error == code::ENOENT => Ok(false),
        Err(error) => Err(error),
    }
}
