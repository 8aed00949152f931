// SPDX-License-Identifier: GPL-2.0

//! amd_sld: split-lock and bus-lock detection for AMD Zen 5 on Linux 6.12 LTS.
//!
//! Linux 6.12 parses `split_lock_detect=` on every vendor and handles bus-lock #DB in
//! `exc_debug_user()`, but arms DEBUGCTL[2] only on Intel. This module arms it on AMD,
//! takes the trap from the die notifier chain before the kernel's half-wired
//! `handle_bus_lock()` sees it, and applies the same policies, switchable at run time.
//! Where the kernel arms the trap itself (6.13+), it stays off the die chain and counts
//! and samples bus locks with the PMU instead, beside the kernel's trap.
//! See docs/design.md for the mechanisms and their trade-offs.

use core::fmt::Write;

use kernel::error::code;
use kernel::prelude::*;

use crate::capability::{InEffect, Refusal, Requested};
use crate::ffi::{pr_err, pr_info, pr_warn};

// Pure decision logic, shared verbatim with the host crate `amd-sld-logic` (src/logic).
#[path = "../logic/src/capability.rs"]
pub mod capability;
#[path = "../logic/src/cpulist.rs"]
pub mod cpulist;
#[path = "../logic/src/dr6.rs"]
pub mod dr6;
#[path = "../logic/src/escape.rs"]
pub mod escape;
#[path = "../logic/src/eventlog.rs"]
pub mod eventlog;
#[path = "../logic/src/fmtbuf.rs"]
pub mod fmtbuf;
#[path = "../logic/src/mapcache.rs"]
pub mod mapcache;
#[path = "../logic/src/pmu.rs"]
pub mod pmu;
#[path = "../logic/src/policy.rs"]
pub mod policy;
#[path = "../logic/src/ratelimit.rs"]
pub mod ratelimit;
#[path = "../logic/src/record.rs"]
pub mod record;
#[path = "../logic/src/x86.rs"]
pub mod x86;

// Kernel-only code.
mod arming;
mod control;
mod ffi;
mod hw;
mod params;
mod report;
mod sample;
mod stats;
mod throttle;
mod trap;

module! {
    type: AmdSld,
    name: "amd_sld",
    description: "Split-lock / bus-lock detection for AMD Zen: Bus Lock Detect #DB and the ls_locks.bus_lock PMU event",
    license: "GPL",
}

/// Everything the module set up, torn down in field order: leave the reboot chain, disarm
/// every CPU, stop watching kvm_amd (only once nothing is armed), stop taking #DB, wait for
/// throttled tasks, then remove the files.
struct Running {
    _reboot: ffi::RebootHook,
    _hotplug: ffi::CpuHotplug,
    _kvm_watch: Option<ffi::ModuleWatch>,
    _trap_hook: Option<ffi::DebugTrapHook>,
    _throttle_drain: ThrottleDrain,
    _sysfs: ffi::SysfsDir,
}

/// Dropped after the trap hook is gone: waits until no throttled task sleeps in, or is
/// about to return through, this module's code. Enters [`control::Phase::Stopping`] first
/// (already done at unload; not yet when a failed load unwinds), so that a throttled task
/// stops waiting for its slot instead of sleeping out a booking of up to a second per
/// sample while the failing `init` holds the parameter lock.
struct ThrottleDrain;

impl Drop for ThrottleDrain {
    fn drop(&mut self) {
        control::stop();
        ffi::wait_for_deferred_work();
    }
}

/// The per-CPU storage of the counters and the records: allocated first, freed last, once
/// nothing that could touch it is left (`ffi::PerCpuStorage`: the notifier, the counters,
/// the deferred works and the files are gone with [`Running`]).
struct Storage {
    _stats: ffi::PerCpuStorage<stats::Counts>,
    _records: ffi::PerCpuStorage<report::CpuRecords>,
}

impl Storage {
    fn start() -> Result<Self> {
        Ok(Storage {
            _stats: stats::PER_CPU.start()?,
            _records: report::PER_CPU.start()?,
        })
    }
}

struct AmdSld {
    module: &'static ThisModule,
    running: Option<Running>,
    storage: Option<Storage>,
}

impl kernel::Module for AmdSld {
    fn init(module: &'static ThisModule) -> Result<Self> {
        // First, so that a failed load drops it last, after everything that could use it.
        let storage = Storage::start()?;
        // Before the parameter lock, which its callback takes (and so is dropped after it
        // on an error, declared before it): see `watch_kvm_amd`.
        let kvm_watch = watch_kvm_amd()?;
        // Read before the parameter lock: see `params::BootCommandLine`.
        let boot_command_line = params::read_boot_command_line();
        // Held until `init` returns, also while an error drops what was set up: nothing
        // that runs then may wait for this lock (the files' `show()`s do not take it).
        let _param_lock = ffi::ParamLock::lock(module);
        let decision = control::choose_source().map_err(refuse)?;
        let source = decision.source;
        if control::requested() == Requested::Auto {
            match source {
                InEffect::Bld => pr_info!("source=auto: Bus Lock Detect: {}\n", decision.why),
                InEffect::BldAndGuestPmu => pr_info!(
                    "source=auto: Bus Lock Detect for the host, PMU for KVM guests: {}\n",
                    decision.why
                ),
                InEffect::Pmu => {
                    pr_info!("source=auto: pmu, not Bus Lock Detect: {}\n", decision.why)
                }
            }
        }
        params::start_from_boot_option(boot_command_line);
        let sysfs = ffi::SysfsDir::create(c"amd_sld", &FILES)?;
        let throttle_drain = ThrottleDrain;
        // Where the kernel arms Bus Lock Detect itself (6.13+), the #DB is its own: amd_sld
        // never takes the trap there (source=bld is refused), so it stays off the die chain.
        let trap_hook = if ffi::KERNEL_ARMS_AMD_BUS_LOCK {
            None
        } else {
            Some(ffi::DebugTrapHook::register::<Trap>()?)
        };
        let hotplug = ffi::CpuHotplug::register::<Arming>(c"amd_sld:online").map_err(|error| {
            if source == InEffect::Pmu {
                refuse(Refusal::PmuUnavailable {
                    errno: error.to_errno(),
                    why: decision.why,
                })
            } else {
                error
            }
        })?;
        let reboot = ffi::RebootHook::register::<Shutdown>()?;
        control::start();
        pr_info!(
            "loaded: split_lock_detect={}, source={}, bus-lock detection armed on CPUs {}\n",
            control::policy(),
            control::source(),
            CpuList(arming::armed_cpus)
        );
        Ok(AmdSld {
            module,
            storage: Some(storage),
            running: Some(Running {
                _reboot: reboot,
                _hotplug: hotplug,
                _kvm_watch: kvm_watch,
                _trap_hook: trap_hook,
                _throttle_drain: throttle_drain,
                _sysfs: sysfs,
            }),
        })
    }
}

/// The `split_lock_detect` parameter, declared in glue.c. A constant: the kernel calls it
/// for `insmod amd_sld split_lock_detect=...` before `init` runs (see `ffi::ParamHandlers`).
#[export_name = "amd_sld_policy_param"]
static POLICY_PARAM: ffi::ParamHandlers = ffi::ParamHandlers::new(params::store, params::show);

/// The `source` parameter, declared in glue.c; a constant, as `POLICY_PARAM`.
#[export_name = "amd_sld_source_param"]
static SOURCE_PARAM: ffi::ParamHandlers =
    ffi::ParamHandlers::new(params::store_source, params::show_source);

/// The files of `/sys/kernel/amd_sld/` (docs/ABI/sysfs-kernel-amd_sld), in this order.
/// Counters are world-readable; the records name processes, root only.
static FILES: [ffi::StatFile; 13] = [
    ffi::StatFile::new(c"bus_locks", 0o444, |out| {
        writeln!(out, "{}", arming::bus_locks())
    }),
    ffi::StatFile::new(c"warned", 0o444, |out| stats::WARNED.show(out)),
    ffi::StatFile::new(c"killed", 0o444, |out| stats::KILLED.show(out)),
    ffi::StatFile::new(c"throttled", 0o444, |out| stats::THROTTLED.show(out)),
    ffi::StatFile::new(c"throttled_ms", 0o444, |out| stats::THROTTLED_MS.show(out)),
    ffi::StatFile::new(c"armed_cpus", 0o444, arming::show_armed_cpus),
    ffi::StatFile::new(c"dropped", 0o444, |out| {
        writeln!(out, "{}", report::dropped())
    }),
    ffi::StatFile::new(c"events", 0o400, report::show_events),
    ffi::StatFile::new(c"top", 0o400, report::show_top),
    ffi::StatFile::new(c"guest_bus_locks", 0o444, |out| {
        writeln!(out, "{}", arming::guest_bus_locks())
    }),
    ffi::StatFile::new(c"source", 0o444, |out| {
        writeln!(out, "{}", control::source())
    }),
    ffi::StatFile::new(c"uncounted_cpus", 0o444, arming::show_uncounted_cpus),
    ffi::StatFile::new(
        c"guest_uncounted_cpus",
        0o444,
        arming::show_guest_uncounted_cpus,
    ),
];

/// The die notifier: every user-mode #DB goes to the trap policy.
struct Trap;

impl ffi::DieNotifier for Trap {
    fn user_debug_trap(trap: &mut ffi::DebugTrap<'_>) {
        trap::on_user_debug_trap(trap);
    }
}

/// The CPU hotplug state: each CPU is armed as it comes online, disarmed as it goes.
struct Arming;

impl ffi::HotplugHandler for Arming {
    fn online(cpu: u32) -> Result {
        arming::on_cpu_online(cpu)
    }

    fn offline(cpu: u32) {
        arming::on_cpu_offline(cpu);
    }
}

/// Before a reboot, halt, power-off or kexec: DEBUGCTL[2] survives a kexec into a kernel
/// that knows nothing of it, so every CPU is disarmed now, for good (`Phase::Stopping`:
/// parameter writes are refused and a CPU coming online is not armed).
struct Shutdown;

impl ffi::RebootHandler for Shutdown {
    fn on_reboot() {
        let _param_lock = ffi::ParamLock::lock(&THIS_MODULE);
        if control::phase() != control::Phase::Running {
            return;
        }
        control::stop();
        let cpus = ffi::CpusReadLocked::lock();
        arming::disarm_online(&cpus);
        pr_info!(
            "reboot: {} on CPUs {}\n",
            released(),
            CpuList(arming::restored_cpus)
        );
    }
}

/// On a kernel whose KVM runs guests with the host's DEBUGCTL, watches `kvm_amd` come and
/// go (`KvmWatch`), then looks whether it is already there: registered first, so that a
/// `kvm_amd` the look misses is seen by the watch, at COMING if it is still to come, else
/// at LIVE (its COMING ran before the registration and its /sys/module directory did not
/// exist yet when we looked: see `params::on_kvm_amd_live`).
/// Registered and unregistered without the parameter lock, which the watch's callback takes
/// (registering and unregistering wait for a running callback). `None` where KVM keeps the
/// host's DEBUGCTL out of guests: there `kvm_amd` changes nothing.
fn watch_kvm_amd() -> Result<Option<ffi::ModuleWatch>> {
    if ffi::KVM_KEEPS_HOST_DEBUGCTL_OUT_OF_GUESTS {
        return Ok(None);
    }
    let watch = ffi::ModuleWatch::register::<KvmWatch>()?;
    let found = ffi::module_present(hw::KVM_AMD, &THIS_MODULE).unwrap_or_else(|error| {
        pr_warn!(
            "cannot tell whether kvm_amd is loaded (/sys/module not visible to insmod, or error {}): taking it as loaded\n",
            error.to_errno()
        );
        true
    });
    hw::note_kvm_amd_found(found);
    Ok(Some(watch))
}

/// The module notifier, registered only where this kernel's KVM runs guests with the host's
/// DEBUGCTL: keeps `kvm_amd` from starting guests under the armed trap.
struct KvmWatch;

impl ffi::ModuleHandler for KvmWatch {
    fn coming(name: &[u8]) -> Result {
        if name != hw::KVM_AMD.to_bytes() {
            return Ok(());
        }
        let _param_lock = ffi::ParamLock::lock(&THIS_MODULE);
        params::on_kvm_amd_coming()
    }

    fn live(name: &[u8]) {
        if name == hw::KVM_AMD.to_bytes() {
            let _param_lock = ffi::ParamLock::lock(&THIS_MODULE);
            params::on_kvm_amd_live();
        }
    }

    fn going(name: &[u8]) {
        if name == hw::KVM_AMD.to_bytes() {
            hw::set_kvm_amd_loaded(false);
        }
    }
}

/// What disarming did, for the log.
fn released() -> &'static str {
    match control::source() {
        InEffect::Bld => "DEBUGCTL restored",
        InEffect::Pmu => "PMU counters released",
        InEffect::BldAndGuestPmu => "guest PMU counters released, DEBUGCTL restored",
    }
}

/// Logs why amd_sld will not run and returns the matching error: `-ENODEV` where the
/// machine lacks what is needed, `-EBUSY` where someone else owns it.
fn refuse(refusal: Refusal) -> Error {
    pr_err!("not loading: {}\n", refusal);
    if refusal.is_missing_feature() {
        code::ENODEV
    } else {
        code::EBUSY
    }
}

impl Drop for AmdSld {
    fn drop(&mut self) {
        {
            let _param_lock = ffi::ParamLock::lock(self.module);
            control::stop();
        }
        drop(self.running.take());
        pr_info!(
            "unloaded: {} bus locks (warned {}, killed {}, throttled {} for {} ms); {} on CPUs {}\n",
            stats::BUS_LOCKS.get(),
            stats::WARNED.get(),
            stats::KILLED.get(),
            stats::THROTTLED.get(),
            stats::THROTTLED_MS.get(),
            released(),
            CpuList(arming::restored_cpus)
        );
        // Last: the counters above were read from it.
        drop(self.storage.take());
    }
}

/// Displays a set of CPUs as a cpulist.
struct CpuList<I: Iterator<Item = u32>>(fn() -> I);

impl<I: Iterator<Item = u32>> core::fmt::Display for CpuList<I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        cpulist::write(f, (self.0)())
    }
}
