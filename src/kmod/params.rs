// SPDX-License-Identifier: GPL-2.0

//! The two module parameters, `split_lock_detect` and `source`: parsing a write, applying
//! it (all or nothing, arming or disarming every online CPU while running), and showing the
//! value. The kernel calls these with the module's parameter lock held, or at insmod before
//! `init` runs (`Phase::Loading`: the value is only recorded).

use core::fmt::{self, Write};

use kernel::alloc::{flags, KVec};
use kernel::error::{code, Result};

use crate::arming;
use crate::capability::{self, InEffect, Requested};
use crate::control::{self, Phase};
use crate::escape::Escaped;
use crate::ffi::{self, CpusReadLocked};
use crate::ffi::{pr_err, pr_info, pr_warn};
use crate::fmtbuf::SliceWriter;
use crate::hw;
use crate::policy::Policy;

/// Parses and applies a write to the `split_lock_detect` parameter.
///
/// Invalid input changes nothing and is `-EINVAL`. While running, turning detection on arms
/// every online CPU first and, if any CPU refuses, disarms the ones it armed and keeps the
/// old policy: a change is all or nothing.
pub(crate) fn store(input: &[u8]) -> Result {
    let new = Policy::parse(input).map_err(|error| {
        pr_err!(
            "invalid split_lock_detect '{}': {}\n",
            Escaped(input),
            error
        );
        code::EINVAL
    })?;
    by_phase(
        || {
            control::set_policy(new);
            control::set_policy_given();
        },
        || apply(new),
    )
}

/// Takes a valid write as the phase allows: at insmod `record`s it for `init` to act on,
/// while running `apply`s it, at unload refuses it (`-ENODEV`).
fn by_phase(record: impl FnOnce(), apply: impl FnOnce() -> Result) -> Result {
    match control::phase() {
        Phase::Loading => {
            record();
            Ok(())
        }
        Phase::Stopping => Err(code::ENODEV),
        Phase::Running => apply(),
    }
}

fn apply(new: Policy) -> Result {
    let old = control::policy();
    if old == new {
        return Ok(());
    }
    let cpus = CpusReadLocked::lock();
    if new.arms_detection() && !old.arms_detection() {
        arming::arm_online(&cpus)?;
    }
    control::set_policy(new);
    if !new.arms_detection() && old.arms_detection() {
        arming::disarm_online(&cpus);
    }
    pr_info!("split_lock_detect: {} -> {}\n", old, new);
    Ok(())
}

/// The kernel command line, read at load before the parameter lock is taken: reading
/// /proc/cmdline takes its seq_file lock, and a reader of this module's parameters holds
/// a sysfs seq_file lock while it waits for the parameter lock (lockdep:
/// `param_lock -> seq_file lock -> kernfs of->mutex -> param_lock`).
pub(crate) struct BootCommandLine(Result<(KVec<u8>, usize)>);

/// Reads the kernel command line; process context, no lock held.
pub(crate) fn read_boot_command_line() -> BootCommandLine {
    // COMMAND_LINE_SIZE is 2048 on x86; bootconfig can add to the line /proc shows.
    BootCommandLine(
        KVec::from_elem(0u8, 4096, flags::GFP_KERNEL)
            .map_err(|_| code::ENOMEM)
            .and_then(|mut line| {
                let len = ffi::read_boot_command_line(&mut line)?;
                Ok((line, len))
            }),
    )
}

/// At load, with the parameter lock held, before anything is armed: without
/// `split_lock_detect=` at insmod, the policy starts from the kernel's own
/// `split_lock_detect=` boot option, as the kernel would have applied it, rather than from
/// `warn`. Logs where the policy came from.
pub(crate) fn start_from_boot_option(boot: BootCommandLine) {
    if control::policy_given() {
        pr_info!(
            "split_lock_detect={} from the module parameter\n",
            control::policy()
        );
        return;
    }
    let (line, len) = match boot.0 {
        Ok(read) => read,
        Err(error) => {
            pr_warn!(
                "cannot read /proc/cmdline ({:?}): split_lock_detect={}\n",
                error,
                control::policy()
            );
            return;
        }
    };
    let Some(value) = line.get(..len).and_then(Policy::boot_option) else {
        pr_info!("split_lock_detect={} (default)\n", control::policy());
        return;
    };
    match Policy::parse(value) {
        Ok(policy) => {
            control::set_policy(policy);
            pr_info!(
                "split_lock_detect={} from the kernel command line\n",
                policy
            );
        }
        Err(error) => pr_warn!(
            "kernel command line split_lock_detect={} ignored ({}): split_lock_detect={}\n",
            Escaped(value),
            error,
            control::policy()
        ),
    }
}

/// Writes the canonical form of the policy in force, and a newline.
pub(crate) fn show(out: &mut SliceWriter<'_>) -> fmt::Result {
    write!(out, "{}", control::policy())?;
    out.write_char('\n')
}

/// Parses and applies a write to the `source` parameter, all or nothing: while running, the
/// old source is disarmed and the new one armed on every online CPU; if the new one cannot
/// start, the old one is armed again and the write fails.
pub(crate) fn store_source(input: &[u8]) -> Result {
    let requested = Requested::parse(input).map_err(|error| {
        pr_err!("invalid source '{}': {}\n", Escaped(input), error);
        code::EINVAL
    })?;
    by_phase(
        || control::set_requested(requested),
        || switch_source(requested),
    )
}

fn switch_source(requested: Requested) -> Result {
    let new = capability::decide(&hw::facts(), requested)
        .map_err(|refusal| {
            pr_err!("source={}: {}\n", requested, refusal);
            code::ENODEV
        })?
        .source;
    let old = control::source();
    if new != old {
        switch_to(new, requested)?;
        // What is in effect: the guest-only counters may have given way to the trap alone.
        let now = control::source();
        if now != old {
            pr_info!("source: {} -> {}\n", old, now);
        }
    }
    control::set_requested(requested);
    Ok(())
}

/// Puts `new` in effect (for the `requested` source, named in the log), armed on every
/// online CPU if the policy detects: all or nothing, so if it cannot start, the old source
/// is armed again and the error returned. The caller holds the parameter lock.
fn switch_to(new: InEffect, requested: Requested) -> Result {
    let old = control::source();
    let cpus = CpusReadLocked::lock();
    let detecting = control::policy().arms_detection();
    if detecting {
        arming::disarm_online(&cpus);
    }
    control::set_source(new);
    if detecting {
        if let Err(error) = arming::arm_online(&cpus) {
            pr_err!(
                "source={}: cannot start it ({:?}); keeping {}\n",
                requested,
                error,
                old
            );
            control::set_source(old);
            if arming::arm_online(&cpus).is_err() {
                pr_err!("cannot re-arm {} either: detection is off\n", old);
            }
            return Err(error);
        }
    }
    Ok(())
}

/// `kvm_amd` is coming (its load's COMING notification) on a kernel whose KVM runs guests
/// with the host's DEBUGCTL: it must not start running guests under amd_sld's trap. With
/// `source=auto` the PMU takes over first (one line says why) and `kvm_amd` loads; with
/// `source=bld`, or if the PMU cannot start, its load fails with `-EBUSY` and one line says
/// why and what to do. Rules on the source in effect, whatever the policy: with the trap's
/// source in effect, `split_lock_detect=off` would arm it again on the next write. The
/// caller holds the parameter lock (not the other way round: `init` and unload register
/// and unregister the module notifier without it).
pub(crate) fn on_kvm_amd_coming() -> Result {
    let old = control::source();
    let trap_in_effect = old.traps();
    match control::phase() {
        Phase::Running if trap_in_effect && control::requested() == Requested::Auto => {
            if let Err(error) = switch_to(InEffect::Pmu, Requested::Auto) {
                pr_err!(
                    "kvm_amd refused: {}, and the PMU cannot take over from Bus Lock Detect \
                     ({:?}); rmmod amd_sld before loading kvm_amd\n",
                    capability::Why::KvmGuestsUnderTrap,
                    error
                );
                return Err(code::EBUSY);
            }
            pr_info!(
                "source: {} -> pmu (source=auto): {}\n",
                old,
                capability::Why::KvmGuestsUnderTrap
            );
        }
        Phase::Running if trap_in_effect => {
            pr_err!(
                "kvm_amd refused: source=bld arms Bus Lock Detect and this kernel's KVM runs \
                 guests with the host's DEBUGCTL (fixed in 6.12.19 by 433265870ab3), so guests \
                 would take its #DB; echo pmu > /sys/module/amd_sld/parameters/source (or \
                 auto), then load kvm_amd again\n"
            );
            return Err(code::EBUSY);
        }
        Phase::Stopping if trap_in_effect && arming::armed_cpus().next().is_some() => {
            pr_err!(
                "kvm_amd refused: amd_sld is unloading with Bus Lock Detect still armed; load \
                 kvm_amd again once amd_sld is gone\n"
            );
            return Err(code::EBUSY);
        }
        // Loading: `init` has not decided yet and will see kvm_amd; or it failed, and
        // nothing is armed. Otherwise the trap is not in effect.
        _ => {}
    }
    hw::set_kvm_amd_loaded(true);
    Ok(())
}

/// `kvm_amd` finished its init (LIVE). Normally already seen at COMING or at load; if not,
/// its COMING ran before amd_sld's load registered the watch, and its /sys/module directory
/// did not exist yet when the load looked: too late to refuse it, so the trap gives way to
/// the PMU whatever was asked for, or, if the PMU cannot start, one line says that guests
/// may run under the trap. The caller holds the parameter lock.
pub(crate) fn on_kvm_amd_live() {
    if hw::kvm_amd_loaded() {
        return;
    }
    hw::set_kvm_amd_loaded(true);
    let old = control::source();
    if control::phase() != Phase::Running || !old.traps() {
        return;
    }
    match switch_to(InEffect::Pmu, control::requested()) {
        Ok(()) => pr_warn!(
            "source: {} -> pmu (kvm_amd loaded while amd_sld was loading): {}\n",
            old,
            capability::Why::KvmGuestsUnderTrap
        ),
        Err(error) => pr_err!(
            "kvm_amd loaded while amd_sld was loading and the PMU cannot take over ({:?}): \
             guests may run under Bus Lock Detect; rmmod amd_sld or kvm_amd\n",
            error
        ),
    }
}

/// Writes the requested source, and a newline.
pub(crate) fn show_source(out: &mut SliceWriter<'_>) -> fmt::Result {
    writeln!(out, "{}", control::requested())
}
