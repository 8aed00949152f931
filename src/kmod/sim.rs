// SPDX-License-Identifier: GPL-2.0

//! Simulated Bus Lock Detect hardware, compiled only into the test build (SIM=1).
//!
//! It replaces the hardware edge and nothing else (the contract is in selftests/README.md):
//! CPUID reports Bus Lock Detect; DEBUGCTL is a per-CPU shadow in debugfs; and a real
//! user-mode single-step #DB taken by the thread group written to `sim_tgid` (or by any
//! process of the process group that thread group leads) becomes a
//! bus-lock trap (DR6.DR_STEP turns into DR_BUS_LOCK) if that CPU's shadow has bit 2 set,
//! or vanishes if not, as a bus lock on an unarmed CPU would. Everything after that, from
//! the notifier to the policy, the signal, the sleep and the counters, runs for real.

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kernel::bindings;
use kernel::c_str;
use kernel::error::{code, Result};
use kernel::str::CStr;

use crate::dr6::{self, Simulated};
use crate::ffi::{CounterSpec, DebugTrap, DebugfsDir, MsrUpdate};
use crate::fmtbuf::SliceWriter;
use crate::pmu;
use crate::sample::Sample;
use crate::x86::DEBUGCTL_BUS_LOCK_DETECT;

const MAX_CPUS: usize = bindings::CONFIG_NR_CPUS as usize;

/// The thread group, or the process group it leads, whose single-steps stand for bus
/// locks; 0 for none.
static SIM_TGID: AtomicU32 = AtomicU32::new(0);
/// When non-zero, DEBUGCTL writes are ignored, as by a CPU that does not implement bit 2.
static SIM_IGNORE_WRITES: AtomicU32 = AtomicU32::new(0);
/// The user address whose writes the simulated PMU event counts: test programs map their
/// locked operand there (`buslock -P`). Page-aligned plus a cache line, in no default
/// mapping of a small static program.
static SIM_PMU_ADDR: AtomicU64 = AtomicU64::new(0x5a1d_0000 + 64);
/// When non-zero, PMU samples of the opted-in thread group count as guest mode, as those of
/// a vCPU thread running its guest would.
static SIM_GUEST: AtomicU32 = AtomicU32::new(0);
/// Simulated DEBUGCTL, one per CPU.
static SHADOW: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Read-modify-write of the simulated DEBUGCTL of `cpu`.
pub(crate) fn update_debugctl(cpu: u32, update: fn(u64) -> u64) -> Result<MsrUpdate> {
    let shadow = SHADOW.get(cpu as usize).ok_or(code::EIO)?;
    let before = shadow.load(Ordering::Acquire);
    if SIM_IGNORE_WRITES.load(Ordering::Relaxed) == 0 {
        shadow.store(update(before), Ordering::Release);
    }
    Ok(MsrUpdate {
        before,
        after: shadow.load(Ordering::Acquire),
    })
}

/// What the hardware would have reported for this #DB.
pub(crate) fn rewrite(trap: &mut DebugTrap<'_>) {
    if !opted_in() {
        return;
    }
    let armed = SHADOW
        .get(crate::ffi::this_cpu() as usize)
        .is_some_and(|shadow| shadow.load(Ordering::Relaxed) & DEBUGCTL_BUS_LOCK_DETECT != 0);
    if dr6::simulate_bus_lock(trap.dr6(), armed) != Simulated::NotSimulated {
        trap.forget_single_step();
    }
}

/// The stand-in for `ls_locks.bus_lock`: a per-CPU write breakpoint on [`SIM_PMU_ADDR`], a
/// real perf event whose counting, sampling period, overflow and hotplug are perf's own.
pub(crate) fn pmu_counter_spec() -> CounterSpec {
    CounterSpec {
        type_: pmu::PERF_TYPE_BREAKPOINT,
        config: 0,
        bp_type: pmu::HW_BREAKPOINT_W,
        bp_addr: SIM_PMU_ADDR.load(Ordering::Relaxed),
        bp_len: pmu::HW_BREAKPOINT_LEN_4,
        sample_freq: pmu::SAMPLE_FREQ_HZ,
    }
}

/// What the hardware would have reported about the task: guest mode, if asked for.
pub(crate) fn pmu_sample(sample: &mut Sample) {
    if SIM_GUEST.load(Ordering::Relaxed) != 0 && opted_in() {
        sample.guest = true;
        sample.ip = 0;
    }
}

fn opted_in() -> bool {
    let Ok(opted_in) = i32::try_from(SIM_TGID.load(Ordering::Relaxed)) else {
        return false;
    };
    opted_in != 0
        && (crate::ffi::current_ids().1 == opted_in || crate::ffi::current_pgid() == opted_in)
}

/// The debugfs knobs: `sim_tgid`, `sim_ignore_writes`, `sim_pmu_addr`, `sim_guest` and
/// `debugctl_cpuN`.
pub(crate) fn debugfs() -> DebugfsDir {
    let dir = DebugfsDir::create(c_str!("amd_sld"));
    dir.u32_file(c_str!("sim_tgid"), &SIM_TGID);
    dir.u32_file(c_str!("sim_ignore_writes"), &SIM_IGNORE_WRITES);
    dir.u32_file(c_str!("sim_guest"), &SIM_GUEST);
    dir.x64_file(c_str!("sim_pmu_addr"), &SIM_PMU_ADDR, 0o400);
    for (cpu, shadow) in SHADOW
        .iter()
        .enumerate()
        .take(crate::ffi::nr_cpu_ids() as usize)
    {
        let mut name = [0u8; 24];
        let mut out = SliceWriter::new(&mut name);
        if write!(out, "debugctl_cpu{cpu}").is_err() {
            continue;
        }
        let len = out.len();
        if let Ok(name) = CStr::from_bytes_with_nul(&name[..=len]) {
            dir.x64_file(name, shadow, 0o600);
        }
    }
    dir
}
