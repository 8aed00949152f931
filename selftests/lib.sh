# SPDX-License-Identifier: GPL-2.0
#
# Shared by the amd_sld selftests (amd_sld.sh) and the stress and bench suites that
# scripts/vmtest runs (scripts/guest/): paths, assertions and the KTAP case runner.
# Sourced, not run; HERE must name the directory of the helper programs.

HERE=${HERE:-$(cd "$(dirname "$0")" && pwd)}
KO=${AMD_SLD_KO:-/amd_sld/amd_sld.ko}
SYS=/sys/kernel/amd_sld
PARAM=/sys/module/amd_sld/parameters/split_lock_detect
BUSLOCK="$HERE/buslock"
LOCKWAIT="$HERE/lockwait"
MSR="$HERE/msr"
STEPCHECK="$HERE/stepcheck"
CPUID="$HERE/cpuid"
KVMVM="$HERE/kvmvm"
GUESTLOCK="$HERE/guestlock"
# The trap's warn line: the kernel's own, its prefix included (bus_lock.c's pr_fmt).
KERNEL_LINE_RE='x86/split lock detection: #DB: buslock/[0-9]+ took a bus_lock trap at address: 0x[0-9a-f]+'
# The fatal policy's line: amd_sld's own (the kernel logs nothing as it sends SIGBUS).
FATAL_LINE_RE='amd_sld: #DB: buslock/[0-9]+ took a bus_lock trap at address: 0x[0-9a-f]+, sending SIGBUS'

fail() {
	echo "$*"
	exit 1
}

skip() {
	echo "SKIP: $*"
	exit 4
}

expect_eq() { # what actual expected
	[ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
}

counter() {
	cat "$SYS/$1"
}

load() {
	insmod "$KO" "$@" || fail "insmod amd_sld failed ($*)"
}

# Skips the case where the split locks it makes would be real (lockwait -n 0 makes none).
need_split_locks() {
	"$LOCKWAIT" -n 0 > /dev/null 2>&1 ||
		skip "split locks are real on this CPU: set AMD_SLD_ALLOW_REAL_SPLIT_LOCKS=1 on a host that is yours alone"
}

unload() {
	rmmod amd_sld || fail "rmmod amd_sld failed"
}

# Whether the running kernel arms Bus Lock Detect itself (6.13+: bus_lock.c): there the trap
# is the kernel's, and amd_sld's source is the PMU.
kernel_arms_the_trap() {
	uname -r | awk -F'[.-]' '{ exit !($1 > 6 || ($1 == 6 && $2 >= 13)) }'
}

# The sources amd_sld can run here, on the emulated Zen 5: both, or the PMU only where the
# kernel owns the trap.
sources_here() {
	if kernel_arms_the_trap; then echo pmu; else echo bld pmu; fi
}

set_policy() {
	echo "$1" > "$PARAM" || fail "writing '$1' to split_lock_detect failed"
}

debugctl() { # cpu: DEBUGCTL as the CPU holds it
	"$MSR" "$1" 0x1d9 || fail "cannot read DEBUGCTL of CPU $1"
}

# Kernel function-entry probes (kprobe events), counted in kprobe_profile: how often the
# kernel itself ran a function while a case acted.
TRACING=/sys/kernel/tracing

probe_functions() { # function...: start counting calls (skips the case without kprobes)
	[ -e $TRACING/kprobe_events ] || mount -t tracefs nodev $TRACING 2> /dev/null
	[ -e $TRACING/kprobe_events ] || skip "no kprobe events (CONFIG_KPROBE_EVENTS)"
	for function in "$@"; do
		# A kernel older than the function (handle_bus_lock: 5.13) has nothing to count.
		kernel_has_function "$function" || skip "this kernel ($(uname -r)) has no function $function"
	done
	for function in "$@"; do
		echo "p:amd_sld_test/$function $function" >> $TRACING/kprobe_events || fail "cannot probe $function"
	done
	# Enabling an event would also record task names, hooking sched_switch: a static key
	# patched in __schedule while every CPU runs it. Once, under QEMU 7.2's multi-threaded
	# TCG on a busy host, a vCPU ran that patch's int3 after it was gone (Oops: int3 in
	# __schedule, Debian's 6.12). The counts need no names: nothing is patched there.
	[ ! -w $TRACING/options/record-cmd ] || echo 0 > $TRACING/options/record-cmd
	echo 1 > $TRACING/events/amd_sld_test/enable
}

kernel_has_function() { # name: whether the running kernel has it, by /proc/kallsyms
	awk -v f="$1" '$3 == f { found = 1; exit } END { exit !found }' /proc/kallsyms
}

probe_calls() { # function: calls counted so far
	awk -v f="$1" '$1 == f || $1 == "amd_sld_test/" f { print $2 }' $TRACING/kprobe_profile
}

unprobe_functions() { # function...
	echo 0 > $TRACING/events/amd_sld_test/enable
	for function in "$@"; do
		echo "-:amd_sld_test/$function" >> $TRACING/kprobe_events
	done
}

field() { # name line
	echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | tail -n 1
}

online_cpus() {
	cat /sys/devices/system/cpu/online
}

as_nobody() { # command...: run as an unprivileged user (uid 65534)
	su -s /bin/sh nobody -c "$*"
}

# The bus locks charged to all the processes of a top table (default: the module's).
top_bus_locks() { # [file]
	sed 's/.* bus_locks=\([0-9]*\) .*/\1/' "${1:-$SYS/top}" | paste -sd+ | bc
}

# Runs each case (a shell function) in a subshell with the module unloaded and dmesg
# cleared before and after; prints KTAP; returns as kselftest: 0 all passed, 1 a case
# failed, 4 every case skipped. A case fails by exiting non-zero, skips by exiting 4.
# A suite may define case_cleanup, run after each case whatever its result.
run_cases() { # case...
	[ "$(id -u)" = 0 ] || { echo "amd_sld tests need root" >&2; return 4; }
	mountpoint -q /sys/kernel/debug 2> /dev/null || mount -t debugfs none /sys/kernel/debug 2> /dev/null

	echo "KTAP version 1"
	echo "1..$#"
	echo "# kernel: $(uname -r)"
	n=0 pass=0 failed=0 skipped=0
	for case in "$@"; do
		n=$((n + 1))
		[ -e /sys/module/amd_sld ] && rmmod amd_sld 2> /dev/null
		dmesg -c > /dev/null 2>&1
		(set +e; "$case") > /tmp/case.out 2>&1
		rc=$?
		if command -v case_cleanup > /dev/null; then case_cleanup; fi
		[ -e /sys/module/amd_sld ] && rmmod amd_sld 2> /dev/null
		case $rc in
		0)
			sed 's/^/# /' /tmp/case.out
			echo "ok $n $case"
			pass=$((pass + 1))
			;;
		4)
			echo "ok $n $case # SKIP $(sed -n 's/^SKIP: //p' /tmp/case.out | head -n 1)"
			skipped=$((skipped + 1))
			;;
		*)
			sed 's/^/# /' /tmp/case.out
			dmesg | grep amd_sld | tail -n 20 | sed 's/^/# dmesg: /'
			echo "not ok $n $case"
			failed=$((failed + 1))
			;;
		esac
	done
	echo "# Totals: pass:$pass fail:$failed xfail:0 xpass:0 skip:$skipped error:0"
	[ $failed -eq 0 ] || return 1
	[ $pass -eq 0 ] && [ $skipped -gt 0 ] && return 4
	return 0
}
