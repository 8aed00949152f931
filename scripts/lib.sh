# shellcheck shell=bash
# Shared settings of the amd-sld scripts. Sourced, not run.

AMD_SLD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AMD_SLD_CACHE=${AMD_SLD_CACHE:-$HOME/.cache/amd-sld}
KERNEL_TARBALL=${KERNEL_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
# The kernel's Rust toolchain (Debian rustc-web), never rustup's rustc.
KRUSTC=${KRUSTC:-/usr/bin/rustc}
KCLIPPY=${KCLIPPY:-/usr/bin/clippy-driver}
BINDGEN=${BINDGEN:-$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")}
export PATH="$PATH:$HOME/.cargo/bin"

# The emulated CPUs of the test VMs: Debian's QEMU 7.2 taught AMD's Bus Lock Detect and
# core PMU (scripts/qemu/README.md), with the fault cases the tests need.
#   zen5                   Bus Lock Detect and a PMU counting ls_locks.bus_lock
#   zen4                   the PMU only (Zen 2/3/4: no trap)
#   zen5-nopmu             Bus Lock Detect, no PMU (as in most VMs)
#   zen5-debugctl-ignored  enumerates Bus Lock Detect, but DEBUGCTL ignores writes
#   bare                   stock TCG: neither
qemu_cpu() { # machine
	case $1 in
	zen5) echo "EPYC,+bus-lock-detect,+perfctr-core,pmu=on" ;;
	zen4) echo "EPYC,+perfctr-core,pmu=on" ;;
	zen5-nopmu) echo "EPYC,+bus-lock-detect" ;;
	zen5-debugctl-ignored) echo "EPYC,+bus-lock-detect,+perfctr-core,pmu=on,x-debugctl-ignore-writes=on" ;;
	# PerfMonV2 too (scripts/qemu 0004), as real Zen 4/5: what KVM's mediated vPMU (7.0+)
	# needs. Not in TEST_MACHINES: its cases are for a kernel that has one (--kernel sid).
	zen5-perfmonv2) echo "EPYC,+bus-lock-detect,+perfctr-core,pmu=on,x-amd-perfmon-v2=on" ;;
	bare) echo "EPYC" ;;
	*) return 1 ;;
	esac
}
TEST_MACHINES="zen5 zen4 zen5-nopmu zen5-debugctl-ignored bare"
# Debian suites whose stock kernel has no CONFIG_RUST: amd_sld builds the standalone way.
STOCK_SUITES="bullseye bookworm trixie"
# Debian suites whose stock kernel has CONFIG_RUST=y but headers without rust/ (sid's 7.x):
# amd_sld builds the Rust-for-Linux way against them once scripts/prepare-rust-headers has
# rebuilt that metadata (scripts/debian-rust-headers), in the suite's chroot.
RUST_STOCK_SUITES="sid"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# The counts on the last 'vm: N passed, N failed, N skipped' line of a scripts/vmtest log,
# as "passed failed skipped"; nothing if the run ended without that line.
vm_counts() { # log
	sed -n 's/^vm: \([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p' "$1" | tail -n 1
}

# Whether DOC has the lines '<!-- NAME:begin -->' and '<!-- NAME:end -->' of a generated
# section; says so when it has not.
has_section() { # doc name
	grep -qxF "<!-- $2:begin -->" "$1" && grep -qxF "<!-- $2:end -->" "$1" || {
		say "$1 lacks the <!-- $2:begin --> / <!-- $2:end --> markers"
		return 1
	}
}

# Replaces what lies between the markers of section NAME of DOC with the content of FILE.
# Fails, leaving DOC as it was, when DOC lacks either marker.
replace_section() { # doc name file
	local begin="<!-- $2:begin -->" end="<!-- $2:end -->"
	has_section "$1" "$2" || return 1
	awk -v begin="$begin" -v end="$end" -v content="$3" '
		$0 == begin { print; while ((getline line < content) > 0) print line; skip = 1; next }
		$0 == end { skip = 0 }
		!skip' "$1" > "$1.new" && mv "$1.new" "$1"
}
