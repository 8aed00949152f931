//! Every `unsafe` of splitlock: CPUID, the split locked instruction and the signal handler.
//!
//! The rest of the crate is safe code on the types exported here. A real split lock needs a
//! [`Permit`] (only `safety::decide` makes one), so that the instruction cannot run on a path
//! that skipped the decision.

use std::arch::asm;
use std::cell::UnsafeCell;
use std::io;
use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use libc::c_int;

use crate::safety::{self, CpuidFacts, Permit};

/// Registers EAX, EBX, ECX, EDX of a CPUID leaf, subleaf 0.
fn cpuid(leaf: u32) -> [u32; 4] {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: CPUID exists on every x86-64 CPU and only writes the four registers. LLVM
    // reserves RBX, so it is saved in a scratch register around the instruction and the
    // leaf's EBX swapped out of it, as core::arch's __cpuid does.
    unsafe {
        asm!(
            "mov {saved:r}, rbx",
            "cpuid",
            "xchg {saved:r}, rbx",
            saved = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") 0u32 => ecx,
            out("edx") edx,
            options(nostack, nomem, preserves_flags),
        );
    }
    [eax, ebx, ecx, edx]
}

/// The CPUID values `safety::decide` needs, read from this CPU.
pub(crate) fn cpuid_facts() -> CpuidFacts {
    let [_, _, leaf_1_ecx, _] = cpuid(1);
    // The hypervisor leaf means nothing on bare metal: read it only under a hypervisor.
    let hypervisor_leaf = safety::hypervisor_present(leaf_1_ecx).then(|| {
        let [_, ebx, ecx, edx] = cpuid(safety::CPUID_HYPERVISOR_LEAF);
        [ebx, ecx, edx]
    });
    CpuidFacts {
        leaf_1_ecx,
        hypervisor_leaf,
    }
}

/// The cache-line size of every x86-64 CPU this is meant for (AMD Zen and Intel).
pub(crate) const CACHE_LINE: usize = 64;
/// Where the split operand starts: 2 of its 4 bytes in each line.
const SPLIT_OFFSET: usize = CACHE_LINE - 2;

/// Two cache lines that hold one thread's operand, straddling the boundary between them.
/// Each generator thread owns one, so no other code ever touches the bytes.
#[repr(C, align(64))]
pub(crate) struct LockTarget {
    bytes: UnsafeCell<[u8; 2 * CACHE_LINE]>,
}

// The alignment in repr() must be the cache line, or the "split" operand would not split.
const _: () = assert!(mem::align_of::<LockTarget>() == CACHE_LINE);

impl LockTarget {
    pub(crate) fn new() -> LockTarget {
        LockTarget {
            bytes: UnsafeCell::new([0; 2 * CACHE_LINE]),
        }
    }

    fn operand(&self, offset: usize) -> *mut u32 {
        self.bytes
            .get()
            .cast::<u8>()
            .wrapping_add(offset)
            .cast::<u32>()
    }

    /// One real split lock: `lock add` on 4 bytes that straddle a cache-line boundary. On
    /// real hardware this locks the memory bus and stalls every core, hence the permit.
    pub(crate) fn split_locked_add(&self, _permit: &Permit) {
        let operand = self.operand(SPLIT_OFFSET);
        // SAFETY: `operand` points at 4 bytes inside `self.bytes` (offsets 62..66 of 128),
        // which only this thread accesses (LockTarget is not Sync), and only through asm.
        // The misalignment is the point and is legal for LOCK ADD.
        unsafe {
            asm!(
                "lock add dword ptr [{operand}], 1",
                operand = in(reg) operand,
                options(nostack),
            );
        }
    }
}

/// Installs `handler` for `signal`.
fn install(signal: c_int, handler: extern "C" fn(c_int)) -> io::Result<()> {
    // SAFETY: sigaction is plain data; all-zero is a valid empty value (no flags), completed
    // below.
    let mut action: libc::sigaction = unsafe { mem::zeroed() };
    action.sa_sigaction = handler as usize;
    // SAFETY: `action.sa_mask` is a valid sigset_t owned by us; the handler is an extern "C"
    // function of the one-argument signature that flags without SA_SIGINFO announce;
    // sigaction only reads `action` and accepts a null old-action pointer.
    let result = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, ptr::null_mut())
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Most generator threads whose SIGBUS can be told apart.
pub(crate) const MAX_THREADS: usize = 256;

// Array-repeat initialisers only: each array element is its own atomic.
#[allow(clippy::declare_interior_mutable_const)]
const NO_TID: AtomicI32 = AtomicI32::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const NO_SIGNALS: AtomicU64 = AtomicU64::new(0);

/// The thread ID that claimed each slot (0: free). A signal handler cannot reach a thread's
/// locals, so a SIGBUS is attributed by the receiving thread's ID.
static SLOT_TIDS: [AtomicI32; MAX_THREADS] = [NO_TID; MAX_THREADS];
/// SIGBUS received by each slot's thread.
static SLOT_SIGBUS: [AtomicU64; MAX_THREADS] = [NO_SIGNALS; MAX_THREADS];

/// The calling thread's ID. A raw system call: async-signal-safe.
fn current_tid() -> i32 {
    // SAFETY: gettid takes no arguments, cannot fail and touches no memory.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    tid as i32
}

/// Counts a SIGBUS (policy fatal) against the receiving thread's slot; returning lets the
/// thread go on after its locked add and see the count. Async-signal-safe: a system call
/// and atomics.
extern "C" fn on_sigbus(_signal: c_int) {
    let tid = current_tid();
    if let Some(slot) = SLOT_TIDS
        .iter()
        .position(|claimed| claimed.load(Ordering::Relaxed) == tid)
    {
        SLOT_SIGBUS[slot].fetch_add(1, Ordering::Relaxed);
    }
}

/// Installs the SIGBUS handler, for `--catch-sigbus`.
pub(crate) fn install_sigbus_handler() -> io::Result<()> {
    install(libc::SIGBUS, on_sigbus)
}

/// Attributes SIGBUS received from now on by the calling thread to `slot`, which starts at 0.
/// Each slot is claimed by one thread at a time; `slot < MAX_THREADS`.
pub(crate) fn claim_sigbus_slot(slot: usize) {
    SLOT_SIGBUS[slot].store(0, Ordering::Relaxed);
    SLOT_TIDS[slot].store(current_tid(), Ordering::Relaxed);
}

/// SIGBUS received by the thread of `slot` since it claimed it.
pub(crate) fn sigbus_count(slot: usize) -> u64 {
    SLOT_SIGBUS[slot].load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_reads_this_cpu() {
        // Leaf 0's EBX-EDX-ECX is the vendor: "AuthenticAMD", "GenuineIntel", ...
        let [max_leaf, ebx, ecx, edx] = cpuid(0);
        assert!(max_leaf >= 1);
        let vendor: Vec<u8> = [ebx, edx, ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert!(vendor.iter().all(u8::is_ascii_graphic), "{vendor:?}");
        let facts = cpuid_facts();
        assert_eq!(
            facts.hypervisor_leaf.is_some(),
            safety::hypervisor_present(facts.leaf_1_ecx)
        );
    }

    #[test]
    fn the_operand_is_split_as_intended() {
        let target = LockTarget::new();
        let base = target.bytes.get() as usize;
        assert_eq!(base % CACHE_LINE, 0);
        let split = target.operand(SPLIT_OFFSET) as usize;
        assert_eq!(
            split / CACHE_LINE + 1,
            (split + 3) / CACHE_LINE,
            "straddles a line"
        );
    }

    #[test]
    fn sigbus_is_counted_for_the_thread_that_receives_it() {
        install_sigbus_handler().unwrap();
        let slot = MAX_THREADS - 1;
        claim_sigbus_slot(slot);
        // SAFETY: raise() sends SIGBUS to this thread, whose handler only counts.
        let result = unsafe { libc::raise(libc::SIGBUS) };
        assert_eq!(result, 0);
        assert_eq!(sigbus_count(slot), 1);
        assert_eq!(sigbus_count(slot - 1), 0);
    }
}
